-- The security world (host/src/hsm/world.rs): an `hsm` key version's secret or private key,
-- wrapped by the root key (CKM_AES_KEY_WRAP_PAD) inside the token that made it, with a key
-- pair's public key, so that every node sharing the database (each with its own token holding
-- the same root key) can unwrap it inside its own HSM into a session object and use the
-- version. Format: "kpw1" ‖ kind ‖ usage ‖ u16 public length ‖ public (DER
-- SubjectPublicKeyInfo) ‖ wrapped key.
-- NULL: envelope versions, versions made before this (usable only on the node whose token
-- holds them), ED25519 versions (the token cannot wrap them), destroyed versions and versions
-- whose imported material was deleted (set to NULL in the transaction that records it).
ALTER TABLE key_versions ADD COLUMN hsm_wrapped BLOB;
