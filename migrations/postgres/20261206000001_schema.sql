-- keyplane schema for PostgreSQL (15 or later): the schema that the SQLite migrations
-- (migrations/sqlite/, 20261128000001_foundation.sql to 20261205000007_plugin_components.sql)
-- produce once all of them are applied, as one migration for a fresh database. Table and
-- column names, column order, keys, foreign keys, CHECK constraints, defaults, indexes and
-- seeded rows are those of SQLite; a new SQLite migration needs its PostgreSQL twin here.
--
-- Type mapping (the Rust row structs are shared by both backends):
--   INTEGER -> BIGINT (read as i64), except the columns Rust reads as bool, which are BOOLEAN:
--     principals.operator, keys.exportable, keys.deletion_protection,
--     keys.require_encryption_context (their SQLite `IN (0, 1)` checks are dropped; DEFAULT 0
--     becomes DEFAULT FALSE);
--   BLOB -> BYTEA; TEXT stays TEXT (times are RFC 3339 text, JSON is text, as in SQLite).
-- No column is an identity column: every INTEGER PRIMARY KEY of the SQLite schema
-- (audit_log.seq, audit_checkpoints.seq, audit_segments.first_seq, wal_restarts.id) is given
-- its value by the code that inserts the row, so each is a plain BIGINT PRIMARY KEY.
-- The SQLite schema has no triggers, so there are none here.
-- Comments on columns are those of the SQLite migrations, which explain them further.

-- Foundation: tenants, principals, keys and their versions, the audit log. Secrets never
-- appear here in plaintext: tenant KEKs and envelope key material are stored wrapped by
-- HSM-resident keys, bearer tokens only as an HMAC keyed by a root-wrapped key.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value BYTEA NOT NULL
);

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    created_at  TEXT NOT NULL,
    kek_wrapped BYTEA NOT NULL,
    account_id  TEXT                      -- 12-digit AWS account id
);
CREATE UNIQUE INDEX tenants_account_id ON tenants (account_id);

CREATE TABLE principals (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('user', 'service')),
    role       TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    operator   BOOLEAN NOT NULL DEFAULT FALSE,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE keys (
    id                         TEXT PRIMARY KEY NOT NULL,
    tenant_id                  TEXT NOT NULL REFERENCES tenants(id),
    spec                       TEXT NOT NULL,
    usage                      TEXT NOT NULL,
    protection                 TEXT NOT NULL CHECK (protection IN ('hsm', 'envelope')),
    state                      TEXT NOT NULL,
    description                TEXT NOT NULL,
    tags                       TEXT NOT NULL,  -- JSON object of string -> string
    primary_version            BIGINT NOT NULL,
    created_at                 TEXT NOT NULL,
    created_by                 TEXT NOT NULL,
    deletion_date              BIGINT,         -- Unix seconds; set while pending-deletion
    min_decryption_version     BIGINT NOT NULL DEFAULT 1,
    destroyed_at               BIGINT,
    origin                     TEXT NOT NULL DEFAULT 'keyplane',  -- or 'external' (imported)
    exportable                 BOOLEAN NOT NULL DEFAULT FALSE,
    material_expires_at        BIGINT,         -- Unix seconds (imported material)
    material_check             BYTEA,          -- key check value of the imported material
    state_before_expiry        TEXT,
    rotation_period_days       BIGINT,         -- automatic rotation period (NULL: off)
    next_rotation_at           BIGINT,         -- Unix seconds
    deletion_protection        BOOLEAN NOT NULL DEFAULT FALSE,
    require_encryption_context BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX keys_by_tenant ON keys (tenant_id, id);
CREATE INDEX keys_next_rotation ON keys (next_rotation_at) WHERE next_rotation_at IS NOT NULL;

-- Principals allowed to use a key (the Cedar `Key.users` attribute).
CREATE TABLE key_grants (
    key_id       TEXT NOT NULL REFERENCES keys(id),
    principal_id TEXT NOT NULL REFERENCES principals(id),
    PRIMARY KEY (key_id, principal_id)
);

CREATE TABLE key_versions (
    key_id           TEXT NOT NULL REFERENCES keys(id),
    version          BIGINT NOT NULL,
    state            TEXT NOT NULL,
    hsm_object_id    BYTEA,   -- CKA_ID of the token object (protection = hsm)
    wrapped_material BYTEA,   -- IV ‖ AES-GCM(tenant KEK) of the material (protection = envelope)
    created_at       TEXT NOT NULL,
    blob_store       TEXT,    -- storage-backend plugin name; NULL = inline
    state_reason     TEXT,    -- e.g. why a version was revoked
    state_changed_at TEXT,
    created_unix     BIGINT,  -- creation on the service clock
    encryptions      BIGINT NOT NULL DEFAULT 0,
    decryptions      BIGINT NOT NULL DEFAULT 0,
    signatures       BIGINT NOT NULL DEFAULT 0,
    blob_name        TEXT,    -- the blob's name in its backend; NULL = keys/<key>/<version>
    rotation         TEXT
        CHECK (rotation IS NULL OR rotation IN ('automatic', 'on-demand')),
    PRIMARY KEY (key_id, version)
);

CREATE TABLE audit_log (
    seq         BIGINT PRIMARY KEY NOT NULL,
    time        TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    principal   TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    decision    TEXT NOT NULL,
    policies    TEXT NOT NULL,   -- JSON array of determining policy ids
    outcome     TEXT NOT NULL,   -- "ok" or an error code
    source      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    policy_hash TEXT,            -- SHA-256 (hex) of the policy set that decided
    trace_id    TEXT,            -- W3C trace id
    user_agent  TEXT,
    front       TEXT             -- "native", "aws-kms", ...
);

-- Signed checkpoints of the audit log: the chain head (record seq and hash) at a time, signed
-- by the HSM's audit key (ECDSA P-256).
CREATE TABLE audit_checkpoints (
    seq             BIGINT PRIMARY KEY NOT NULL,  -- the record that was the head
    head_hash       TEXT NOT NULL,
    time            TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,                -- SHA-256 of the public key (SPKI DER)
    signature       TEXT NOT NULL                 -- base64 DER ECDSA over the signed message
);

-- Archived segments of the audit log (see host/src/audit/archive.rs).
CREATE TABLE audit_segments (
    first_seq   BIGINT PRIMARY KEY NOT NULL,
    last_seq    BIGINT NOT NULL UNIQUE,        -- a record with a signed checkpoint
    records     BIGINT NOT NULL,
    head_hash   TEXT NOT NULL,                 -- hash of the record at last_seq
    first_time  TEXT NOT NULL,                 -- time of the first and the last record
    last_time   TEXT NOT NULL,
    file_name   TEXT NOT NULL UNIQUE,          -- inside the archive directory
    file_sha256 TEXT NOT NULL,                 -- hex SHA-256 of the file's bytes
    archived_at TEXT NOT NULL,
    pruned_at   TEXT                           -- set when its records began to leave audit_log
);

-- Tenant plugins, per-key rotation schedules, the tenant-scoped key-value table behind the
-- `kv` capability, storage backends.

CREATE TABLE plugins (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    world        TEXT NOT NULL CHECK (world IN ('rotation-schedule', 'storage-backend')),
    size         BIGINT NOT NULL,
    imports      TEXT NOT NULL,   -- JSON array of imported interface names
    created_at   TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    capabilities TEXT NOT NULL DEFAULT '[]',  -- JSON array, e.g. ["filesystem"]
    PRIMARY KEY (tenant_id, name)
);
CREATE INDEX plugins_sha256 ON plugins (sha256);

-- Uploaded WebAssembly components, content-addressed: the bytes a plugin row's sha256 names.
CREATE TABLE plugin_components (
    sha256     TEXT PRIMARY KEY NOT NULL,   -- lowercase hex SHA-256 of bytes
    bytes      BYTEA NOT NULL,
    size       BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE rotation_schedules (
    key_id          TEXT PRIMARY KEY NOT NULL REFERENCES keys(id),
    tenant_id       TEXT NOT NULL,
    plugin_name     TEXT NOT NULL,
    config          TEXT NOT NULL,  -- JSON object of string -> string
    updated_at      TEXT NOT NULL,
    last_checked_at BIGINT,
    next_rotation   BIGINT,
    last_error      TEXT,
    FOREIGN KEY (tenant_id, plugin_name) REFERENCES plugins (tenant_id, name)
);

CREATE TABLE plugin_kv (
    tenant_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE storage_backends (
    tenant_id   TEXT PRIMARY KEY NOT NULL REFERENCES tenants(id),
    plugin_name TEXT NOT NULL,
    config      TEXT NOT NULL,  -- JSON object of string -> string
    updated_at  TEXT NOT NULL,
    FOREIGN KEY (tenant_id, plugin_name) REFERENCES plugins (tenant_id, name)
);

-- The configuration of every storage-backend plugin a tenant has used, not only the current one.
CREATE TABLE storage_backend_configs (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    plugin_name TEXT NOT NULL,
    config      TEXT NOT NULL,  -- JSON object of string -> string, secrets sealed
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, plugin_name),
    FOREIGN KEY (tenant_id, plugin_name) REFERENCES plugins (tenant_id, name)
);

-- Key lifecycle, import and export, two-person deletion, AWS-style features.

CREATE TABLE aliases (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,             -- "alias/..."
    key_id     TEXT NOT NULL REFERENCES keys(id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE INDEX aliases_by_key ON aliases (key_id);

-- Leases: one node at a time runs a scheduler pass.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Import tokens: one RSA wrapping key pair per token, its private half a non-extractable
-- token object in the HSM (CKA_ID = hsm_object_id).
CREATE TABLE import_tokens (
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    key_id             TEXT NOT NULL REFERENCES keys(id),
    wrapping_algorithm TEXT NOT NULL,
    wrapping_key_spec  TEXT NOT NULL,
    hsm_object_id      BYTEA NOT NULL,
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL
);
CREATE INDEX import_tokens_by_key ON import_tokens (key_id);
CREATE INDEX import_tokens_by_expiry ON import_tokens (expires_at);

-- Two-person deletion: a second admin approves the deletion of one key.
CREATE TABLE deletion_approvals (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    key_id       TEXT NOT NULL REFERENCES keys(id),
    requester_id TEXT NOT NULL REFERENCES principals(id),
    approver_id  TEXT NOT NULL REFERENCES principals(id),
    created_at   BIGINT NOT NULL,  -- service clock, Unix seconds
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);
CREATE INDEX deletion_approvals_by_key ON deletion_approvals (key_id, requester_id);

-- Access keys for AWS Signature Version 4, the secret sealed by the HSM's root key.
CREATE TABLE access_keys (
    id            TEXT PRIMARY KEY NOT NULL,   -- AKIA + 16 characters of base32
    principal_id  TEXT NOT NULL REFERENCES principals(id),
    secret_sealed BYTEA NOT NULL,
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL
);
CREATE INDEX access_keys_principal ON access_keys (principal_id);

-- A key policy document per key and name (AWS has one name, "default").
CREATE TABLE key_policies (
    key_id     TEXT NOT NULL REFERENCES keys(id),
    name       TEXT NOT NULL,
    document   TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (key_id, name)
);

-- Grants: a grantee principal may perform the listed operations on the key.
CREATE TABLE grants (
    id                 TEXT PRIMARY KEY NOT NULL,
    key_id             TEXT NOT NULL REFERENCES keys(id),
    name               TEXT,
    grantee            TEXT NOT NULL REFERENCES principals(id),
    retiring_principal TEXT REFERENCES principals(id),
    operations         TEXT NOT NULL,  -- JSON array of Cedar action names
    context_subset     TEXT,           -- JSON object: the request's context must contain it
    context_equals     TEXT,           -- JSON object: the request's context must be it
    created_at         TEXT NOT NULL,
    created_by         TEXT NOT NULL
);
CREATE INDEX grants_key ON grants (key_id);
CREATE INDEX grants_retiring ON grants (retiring_principal);

-- The one row the SQLite WAL checkpoint task rewrites (and counts) after it has started the
-- WAL over. Kept so both backends have the same tables and the code reading `count` finds its
-- row; PostgreSQL has no such WAL restart, so here the count stays at whatever the code sets.
CREATE TABLE wal_restarts (
    id    BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    count BIGINT NOT NULL
);
INSERT INTO wal_restarts (id, count) VALUES (1, 0);
