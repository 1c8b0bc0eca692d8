//! `derive-shared-secret`: ECDH (`CKM_ECDH1_DERIVE`, no KDF) of a `key-agreement` key's
//! primary version (ECC_NIST_P256/P384) with a peer's public key (PEM or base64 DER
//! SubjectPublicKeyInfo on the same curve, checked to be a valid point on it). Returns the
//! raw shared secret (the x coordinate, base64): by design it leaves the HSM, exactly as AWS
//! KMS `DeriveSharedSecret` does — the caller feeds it to its own KDF. Cedar:
//! `DeriveSharedSecret` on the key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::{check_usage, usable_version, VersionUse};
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::{Base64, OpContext, Operation, WriteScope};
use crate::algorithms::public_key::peer_point;
use crate::algorithms::KeyUsage;
use crate::authz::ResourceRef;
use crate::error::{Error, Result};

/// Largest peer key text accepted (a P-384 SPKI PEM is under 300 bytes).
const MAX_PEER_KEY: usize = 4096;

fn ecdh() -> String {
    "ECDH".into()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeriveSharedSecret {
    pub key_id: String,
    /// PEM, or base64 of the DER SubjectPublicKeyInfo.
    pub peer_public_key: String,
    /// `ECDH` (the only one).
    #[serde(default = "ecdh")]
    pub key_agreement_algorithm: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeriveSharedSecretOutput {
    pub key_id: String,
    pub key_version: i64,
    pub key_agreement_algorithm: &'static str,
    pub shared_secret: Base64,
}

impl Operation for DeriveSharedSecret {
    const NAME: &'static str = "derive-shared-secret";
    const ACTION: &'static str = "DeriveSharedSecret";
    const KEY_USE: bool = true;
    type Output = DeriveSharedSecretOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if self.key_agreement_algorithm != "ECDH" {
            return Err(Error::validation("key_agreement_algorithm must be ECDH"));
        }
        if self.peer_public_key.is_empty() || self.peer_public_key.len() > MAX_PEER_KEY {
            return Err(Error::validation(format!(
                "peer_public_key must be 1 to {MAX_PEER_KEY} characters"
            )));
        }
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        resource: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&resource)?;
        let spec = check_usage(key, KeyUsage::KeyAgreement, "derive-shared-secret")?;
        let point = peer_point(spec, &self.peer_public_key)?;
        let version = usable_version(ctx, key, key.primary_version, VersionUse::Protect).await?;
        let secret = ctx.state.keyring.ecdh(&version, spec, point).await?;
        Ok(DeriveSharedSecretOutput {
            key_id: key.id.clone(),
            key_version: version.version,
            key_agreement_algorithm: "ECDH",
            shared_secret: Base64(secret),
        })
    }
}
