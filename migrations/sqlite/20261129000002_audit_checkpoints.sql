-- Signed checkpoints of the audit log: the chain head (record seq and hash) at a time, signed
-- by the HSM's audit key (ECDSA P-256). Also appended to <data-dir>/audit-checkpoints.jsonl.
CREATE TABLE audit_checkpoints (
    seq             INTEGER PRIMARY KEY NOT NULL,  -- the record that was the head
    head_hash       TEXT NOT NULL,
    time            TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,                 -- SHA-256 of the public key (SPKI DER)
    signature       TEXT NOT NULL                  -- base64 DER ECDSA over the signed message
);
