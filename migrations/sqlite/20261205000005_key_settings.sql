-- Two settings a key keeps for life or until changed, which Vault Transit users rely on and
-- every front can use:
-- deletion_protection: schedule-key-deletion is refused while it is set (Transit keys are
--   created with it, as Transit's deletion_allowed=false; set-deletion-protection changes it).
-- require_encryption_context: fixed at creation; every encrypt, decrypt, data key and rewrap
--   under the key must carry a non-empty encryption context (Transit's derived keys: the
--   context is bound to each ciphertext as AAD).
ALTER TABLE keys ADD COLUMN deletion_protection INTEGER NOT NULL DEFAULT 0
    CHECK (deletion_protection IN (0, 1));
ALTER TABLE keys ADD COLUMN require_encryption_context INTEGER NOT NULL DEFAULT 0
    CHECK (require_encryption_context IN (0, 1));
