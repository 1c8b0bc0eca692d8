-- Data safety: no key is ever lost.
--
-- key_versions.blob_name: the name of a version's blob in its storage backend. Each creation
-- attempt writes its own name (keys/<key>/<version>/<uuid v7>), so an attempt that loses a race
-- deletes only its own blob. NULL for versions written before this column existed: their blob
-- is keys/<key>/<version>.
ALTER TABLE key_versions ADD COLUMN blob_name TEXT;

-- The configuration of every storage-backend plugin a tenant has used, not only the current
-- one: a blob is always reached with the (sealed) configuration of the backend it was written
-- to, after the tenant has moved its new versions elsewhere.
CREATE TABLE storage_backend_configs (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    plugin_name TEXT NOT NULL,
    config      TEXT NOT NULL,  -- JSON object of string -> string, secrets sealed
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, plugin_name),
    FOREIGN KEY (tenant_id, plugin_name) REFERENCES plugins (tenant_id, name)
);
INSERT INTO storage_backend_configs (tenant_id, plugin_name, config, updated_at)
    SELECT tenant_id, plugin_name, config, updated_at FROM storage_backends;
-- Plugins that hold blobs but are no longer a tenant's backend: their configuration was not
-- kept before this table existed (they were reached with an empty one); keep that, so their
-- blobs stay reachable (and collectable), and so the tenant can give them one again.
INSERT INTO storage_backend_configs (tenant_id, plugin_name, config, updated_at)
    SELECT DISTINCT k.tenant_id, v.blob_store, '{}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM key_versions v JOIN keys k ON k.id = v.key_id
    JOIN plugins p ON p.tenant_id = k.tenant_id AND p.name = v.blob_store
    WHERE v.blob_store IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM storage_backend_configs c
                    WHERE c.tenant_id = k.tenant_id AND c.plugin_name = v.blob_store);

-- Key states added: 'destroying' (committed before crypto-shredding starts: no cancel, no use;
-- the scheduler finishes it) and 'expiring' (imported material past its valid_to, being
-- deleted; then 'pending-import'). state_before_expiry: the state an external key returns to
-- when its material is imported again ('disabled' stays disabled).
ALTER TABLE keys ADD COLUMN state_before_expiry TEXT;

-- Two-person deletion: a second admin approves the deletion of one key, requested by one
-- principal, for a short window; schedule-key-deletion consumes the approval (used_at).
CREATE TABLE deletion_approvals (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    key_id       TEXT NOT NULL REFERENCES keys(id),
    requester_id TEXT NOT NULL REFERENCES principals(id),
    approver_id  TEXT NOT NULL REFERENCES principals(id),
    created_at   INTEGER NOT NULL,  -- service clock, Unix seconds
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER
);
CREATE INDEX deletion_approvals_by_key ON deletion_approvals (key_id, requester_id);
