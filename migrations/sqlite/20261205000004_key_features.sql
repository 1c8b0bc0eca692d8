-- What AWS KMS clients expect of a key beyond its material: automatic rotation by period,
-- a stored key policy, grants.

-- Automatic rotation every rotation_period_days (NULL: off); next_rotation_at (Unix seconds)
-- is when the scheduler rotates next. key_versions.rotation says how a version came to be:
-- 'automatic' (a schedule), 'on-demand' (rotate-key), NULL (the key's first version).
ALTER TABLE keys ADD COLUMN rotation_period_days INTEGER;
ALTER TABLE keys ADD COLUMN next_rotation_at INTEGER;
ALTER TABLE key_versions ADD COLUMN rotation TEXT
    CHECK (rotation IS NULL OR rotation IN ('automatic', 'on-demand'));
CREATE INDEX keys_next_rotation ON keys (next_rotation_at) WHERE next_rotation_at IS NOT NULL;

-- A key policy document per key and name (AWS has one name, "default"). Stored and returned;
-- Cedar, not the document, authorizes (docs/aws-kms.md). A key without a row has the default
-- document.
CREATE TABLE key_policies (
    key_id     TEXT NOT NULL REFERENCES keys(id),
    name       TEXT NOT NULL,
    document   TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (key_id, name)
);

-- Grants: a grantee principal may perform the listed operations (Cedar action names) on the
-- key, within the encryption-context constraint if any. Cedar sees the operations a
-- request's grants allow as context.granted.
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
