//! `derive-shared-secret`: key agreement of a `key-agreement` key's primary version with a
//! peer's public key (PEM or base64 DER SubjectPublicKeyInfo), no KDF:
//! - `ECDH` (`CKM_ECDH1_DERIVE`) for ECC_NIST_P256/P384, the peer's key a valid point on the
//!   same curve; the secret is the x coordinate;
//! - `DH` (`CKM_DH_PKCS_DERIVE`) for FFDHE_2048/3072, the peer's key of the same RFC 7919
//!   group with a public value in range (see [`crate::algorithms::ffdhe`]); the secret is
//!   `g^xy mod p` at the prime's full length (leading zeros kept, as RFC 7919 and TLS 1.3 do).
//!
//! Returns the raw shared secret (base64): by design it leaves the HSM, exactly as AWS KMS
//! `DeriveSharedSecret` does — the caller feeds it to its own KDF. `key_agreement_algorithm`
//! defaults to the key's; naming the other is refused. Cedar: `DeriveSharedSecret` on the key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::{check_usage, usable_version, VersionUse};
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::{Base64, OpContext, Operation, WriteScope};
use crate::algorithms::ffdhe;
use crate::algorithms::public_key::{der_input, peer_point};
use crate::algorithms::KeyUsage;
use crate::authz::ResourceRef;
use crate::error::{Error, Result};

/// Largest peer key text accepted (a P-384 SPKI PEM is under 300 bytes, an FFDHE-3072 one
/// (X9.42, with q) under 1,300).
const MAX_PEER_KEY: usize = 4096;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeriveSharedSecret {
    pub key_id: String,
    /// PEM, or base64 of the DER SubjectPublicKeyInfo.
    pub peer_public_key: String,
    /// `ECDH` (NIST curve keys) or `DH` (FFDHE keys); default: the key's.
    #[serde(default)]
    pub key_agreement_algorithm: Option<String>,
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
        if self
            .key_agreement_algorithm
            .as_deref()
            .is_some_and(|a| a != "ECDH" && a != "DH")
        {
            return Err(Error::validation(
                "key_agreement_algorithm must be ECDH or DH",
            ));
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
        let algorithm = spec.key_agreement_algorithm().ok_or(Error::Internal)?;
        if let Some(asked) = self.key_agreement_algorithm.as_deref() {
            if asked != algorithm {
                return Err(Error::InvalidKeyUsage(format!(
                    "key {} is a {spec} key: its key agreement algorithm is {algorithm}, not {asked}",
                    key.id
                )));
            }
        }
        let secret = match spec.dh_group() {
            Some(group) => {
                let der = der_input(
                    "peer_public_key",
                    &self.peer_public_key,
                    "PUBLIC KEY",
                    "SubjectPublicKeyInfo",
                )?;
                let y = ffdhe::peer_value(group, "peer_public_key", &der)?;
                let version =
                    usable_version(ctx, key, key.primary_version, VersionUse::Protect).await?;
                (
                    version.version,
                    ctx.state.keyring.dh(&version, group, y).await?,
                )
            }
            None => {
                let point = peer_point(spec, &self.peer_public_key)?;
                let version =
                    usable_version(ctx, key, key.primary_version, VersionUse::Protect).await?;
                (
                    version.version,
                    ctx.state.keyring.ecdh(&version, spec, point).await?,
                )
            }
        };
        Ok(DeriveSharedSecretOutput {
            key_id: key.id.clone(),
            key_version: secret.0,
            key_agreement_algorithm: algorithm,
            shared_secret: Base64(secret.1),
        })
    }
}
