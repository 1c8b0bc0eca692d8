-- Tenant storage backends: where a tenant's wrapped key blobs live. Without a row the blobs
-- stay inline in key_versions.wrapped_material. A version remembers the plugin that holds its
-- blob (blob_store), so changing the tenant's backend later never strands existing versions.

CREATE TABLE storage_backends (
    tenant_id   TEXT PRIMARY KEY NOT NULL REFERENCES tenants(id),
    plugin_name TEXT NOT NULL,
    config      TEXT NOT NULL,  -- JSON object of string -> string
    updated_at  TEXT NOT NULL,
    FOREIGN KEY (tenant_id, plugin_name) REFERENCES plugins (tenant_id, name)
);

ALTER TABLE key_versions ADD COLUMN blob_store TEXT;  -- plugin name; NULL = inline
