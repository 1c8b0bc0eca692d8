-- Bring your own key and key export.
--
-- keys.origin: 'keyplane' (material made by the HSM) or 'external' (imported; the key waits in
-- state 'pending-import' until import-key-material). keys.exportable: fixed at creation; only
-- such keys can be exported, and only wrapped. An imported key's material may expire
-- (material_expires_at, Unix seconds): the scheduler then deletes it and the key returns to
-- pending-import until the same material is imported again, which material_check (a key check
-- value: the AES-GCM tag of an empty message under a fixed nonce and label) verifies.

ALTER TABLE keys ADD COLUMN origin TEXT NOT NULL DEFAULT 'keyplane';
ALTER TABLE keys ADD COLUMN exportable INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN material_expires_at INTEGER;
ALTER TABLE keys ADD COLUMN material_check BLOB;

-- Import tokens: one RSA wrapping key pair per token, its private half a non-extractable
-- token object in the HSM (CKA_ID = hsm_object_id), destroyed when the token is used or expires.
CREATE TABLE import_tokens (
    id                 TEXT PRIMARY KEY NOT NULL,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    key_id             TEXT NOT NULL REFERENCES keys(id),
    wrapping_algorithm TEXT NOT NULL,
    wrapping_key_spec  TEXT NOT NULL,
    hsm_object_id      BLOB NOT NULL,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL
);
CREATE INDEX import_tokens_by_key ON import_tokens (key_id);
CREATE INDEX import_tokens_by_expiry ON import_tokens (expires_at);
