-- Key lifecycle: deletion windows, the minimum decryption version, per-version state details
-- and usage counters, aliases, the rotation scheduler's bookkeeping and its lease.
--
-- Key states: enabled, disabled, pending-deletion, destroyed.
-- Version states: enabled, disabled, compromised (revoked; decrypt only through rewrap),
-- destroyed (crypto-shredded: HSM object and every wrapped copy deleted).

ALTER TABLE keys ADD COLUMN deletion_date INTEGER;        -- Unix seconds; set while pending-deletion
ALTER TABLE keys ADD COLUMN min_decryption_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE keys ADD COLUMN destroyed_at INTEGER;

ALTER TABLE key_versions ADD COLUMN state_reason TEXT;    -- e.g. why a version was revoked
ALTER TABLE key_versions ADD COLUMN state_changed_at TEXT;
ALTER TABLE key_versions ADD COLUMN created_unix INTEGER; -- creation on the service clock
ALTER TABLE key_versions ADD COLUMN encryptions INTEGER NOT NULL DEFAULT 0;
ALTER TABLE key_versions ADD COLUMN decryptions INTEGER NOT NULL DEFAULT 0;
ALTER TABLE key_versions ADD COLUMN signatures INTEGER NOT NULL DEFAULT 0;

CREATE TABLE aliases (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,             -- "alias/..."
    key_id     TEXT NOT NULL REFERENCES keys(id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE INDEX aliases_by_key ON aliases (key_id);

ALTER TABLE rotation_schedules ADD COLUMN last_checked_at INTEGER;
ALTER TABLE rotation_schedules ADD COLUMN next_rotation INTEGER;
ALTER TABLE rotation_schedules ADD COLUMN last_error TEXT;

-- Leases: one node at a time runs a scheduler pass.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
