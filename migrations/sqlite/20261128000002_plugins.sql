-- Tenant plugins: uploaded components (bytes live content-addressed in <data-dir>/plugins/),
-- per-key rotation schedules, and the tenant-scoped key-value table behind the `kv` capability.

CREATE TABLE plugins (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    world      TEXT NOT NULL CHECK (world IN ('rotation-schedule', 'storage-backend')),
    size       INTEGER NOT NULL,
    imports    TEXT NOT NULL,   -- JSON array of imported interface names
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE rotation_schedules (
    key_id      TEXT PRIMARY KEY NOT NULL REFERENCES keys(id),
    tenant_id   TEXT NOT NULL,
    plugin_name TEXT NOT NULL,
    config      TEXT NOT NULL,  -- JSON object of string -> string
    updated_at  TEXT NOT NULL,
    FOREIGN KEY (tenant_id, plugin_name) REFERENCES plugins (tenant_id, name)
);

CREATE TABLE plugin_kv (
    tenant_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
