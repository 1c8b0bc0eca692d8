-- When the lifecycle scheduler last failed to act on a key (a destruction, a rotation, an
-- expiry of imported material): each pass takes its due keys never-failed first, then by
-- oldest failure, so keys that fail on every pass (a tenant's broken storage plugin) cannot
-- fill every pass's page and starve every other tenant's due keys.
ALTER TABLE keys ADD COLUMN scheduler_failed_at BIGINT;
-- The scheduler's queries by state (due deletions, interrupted destructions and expiries).
CREATE INDEX keys_by_state ON keys (state, deletion_date);
-- Each node's sweep of its HSM session objects asks which object ids rows still name.
CREATE INDEX key_versions_by_object ON key_versions (hsm_object_id);
