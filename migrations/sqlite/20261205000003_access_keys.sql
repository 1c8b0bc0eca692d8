-- AWS-style identities.
--
-- tenants.account_id: the tenant's 12-digit account id, as AWS ARNs name it
-- (arn:aws:kms:<region>:<account>:key/<id>). Settable at create-tenant, otherwise random;
-- tenants made before this column existed get a random one here.
ALTER TABLE tenants ADD COLUMN account_id TEXT;
UPDATE tenants SET account_id = printf('%012d', abs(random() % 1000000000000))
    WHERE account_id IS NULL;
CREATE UNIQUE INDEX tenants_account_id ON tenants (account_id);

-- Access keys for AWS Signature Version 4. Checking a signature needs the secret itself (not a
-- hash of it), so it is stored sealed by the HSM's root key (AES-GCM inside the token, the
-- access key id as AAD) and opened only to derive a signing key.
CREATE TABLE access_keys (
    id            TEXT PRIMARY KEY NOT NULL,   -- AKIA + 16 characters of base32
    principal_id  TEXT NOT NULL REFERENCES principals(id),
    secret_sealed BLOB NOT NULL,
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL
);
CREATE INDEX access_keys_principal ON access_keys (principal_id);
