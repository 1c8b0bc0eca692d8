-- keyplane foundation schema: tenants, principals, keys and their versions, the audit log.
-- Secrets never appear here in plaintext: tenant KEKs and envelope key material are stored
-- wrapped by HSM-resident keys, bearer tokens only as an HMAC keyed by a root-wrapped key.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    created_at  TEXT NOT NULL,
    kek_wrapped BLOB NOT NULL
);

CREATE TABLE principals (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('user', 'service')),
    role       TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    operator   INTEGER NOT NULL DEFAULT 0,
    token_hash BLOB NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE keys (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    spec            TEXT NOT NULL,
    usage           TEXT NOT NULL,
    protection      TEXT NOT NULL CHECK (protection IN ('hsm', 'envelope')),
    state           TEXT NOT NULL,
    description     TEXT NOT NULL,
    tags            TEXT NOT NULL,  -- JSON object of string -> string
    primary_version INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    created_by      TEXT NOT NULL
);
CREATE INDEX keys_by_tenant ON keys (tenant_id, id);

-- Principals allowed to use a key (the Cedar `Key.users` attribute).
CREATE TABLE key_grants (
    key_id       TEXT NOT NULL REFERENCES keys(id),
    principal_id TEXT NOT NULL REFERENCES principals(id),
    PRIMARY KEY (key_id, principal_id)
);

CREATE TABLE key_versions (
    key_id           TEXT NOT NULL REFERENCES keys(id),
    version          INTEGER NOT NULL,
    state            TEXT NOT NULL,
    hsm_object_id    BLOB,   -- CKA_ID of the token object (protection = hsm)
    wrapped_material BLOB,   -- IV ‖ AES-GCM(tenant KEK) of the material (protection = envelope)
    created_at       TEXT NOT NULL,
    PRIMARY KEY (key_id, version)
);

CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY NOT NULL,
    time       TEXT NOT NULL,
    request_id TEXT NOT NULL,
    principal  TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    action     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    decision   TEXT NOT NULL,
    policies   TEXT NOT NULL,   -- JSON array of determining policy ids
    outcome    TEXT NOT NULL,   -- "ok" or an error code
    source     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
