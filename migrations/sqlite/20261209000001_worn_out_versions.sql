-- Versions that have sealed 2^31 messages or more (crypto::RANDOM_NONCE_ROTATE_AT): the
-- lifecycle scheduler rotates their keys before random 96-bit nonces run out. A partial index,
-- so it holds only those versions and the usage counters' updates of every other version
-- cost nothing more; the scheduler's query names the same literal bound so that both
-- SQLite's and PostgreSQL's planners use it.
CREATE INDEX key_versions_worn_out ON key_versions (key_id) WHERE encryptions >= 2147483648;
