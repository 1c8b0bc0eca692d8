//! `sign` and `verify`: signatures with `sign-verify` keys (ECC_NIST_P256/P384, ED25519,
//! RSA_*), over a message (`message_type` `RAW`, hashed on the host) or a precomputed digest
//! (`DIGEST`). `sign` uses the primary version and says which (`key_version`); `verify`
//! takes `key_version` (default: the primary) so signatures made before a rotation still
//! verify. Signatures are the standard encodings (DER ECDSA-Sig-Value, raw Ed25519, RSA
//! octet strings) and verify with openssl and the public key from `get-public-key`.
//! Cedar: `Sign` / `Verify` on the key. Each signature counts in the version's `signatures`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::{check_usage, usable_version, version_to_open, VersionUse};
use super::resolve::{key_row, resolve_key};
use super::validate::{validate_key_id, validate_message};
use super::{Base64, OpContext, Operation, WriteScope};
use crate::algorithms::{check_signing, KeyUsage, SigningAlgorithm};
use crate::authz::ResourceRef;
use crate::crypto::asym::MessageType;
use crate::error::{Error, Result};
use crate::usage::UseKind;

fn raw() -> String {
    "RAW".into()
}

/// Largest signature `verify` takes (AWS's model: 6 KiB). A longer one than any key makes
/// (an RSA-4096 signature is 512 bytes, a DER ECDSA P-384 one at most 104) is not a valid
/// signature, answered as one that does not match, without the HSM: an invalid
/// signature, not an invalid request, and no module is asked to judge a length it may
/// report as a fault.
const MAX_SIGNATURE: usize = 6144;
const LONGEST_SIGNATURE_MADE: usize = 1024;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sign {
    pub key_id: String,
    pub message: Base64,
    /// `RAW` (default) or `DIGEST`.
    #[serde(default = "raw")]
    pub message_type: String,
    pub signing_algorithm: String,
    /// Set by a front whose clients may name the version to protect with (Transit's
    /// `key_version`): refused unless it is the primary version (see
    /// `checks::check_pinned_primary`). Not on the wire.
    #[serde(skip)]
    pub pinned_version: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SignOutput {
    pub key_id: String,
    pub key_version: i64,
    pub signing_algorithm: &'static str,
    pub signature: Base64,
}

fn check_request(message: &Base64, message_type: &str, algorithm: &str) -> Result<()> {
    validate_message("message", message.len())?;
    MessageType::parse(message_type)?;
    SigningAlgorithm::parse(algorithm)?;
    Ok(())
}

impl Operation for Sign {
    const NAME: &'static str = "sign";
    const ACTION: &'static str = "Sign";
    const KEY_USE: bool = true;
    type Output = SignOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        check_request(&self.message, &self.message_type, &self.signing_algorithm)
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
        let spec = check_usage(key, KeyUsage::SignVerify, "sign")?;
        let algorithm = SigningAlgorithm::parse(&self.signing_algorithm)?;
        check_signing(spec, algorithm)?;
        let message_type = MessageType::parse(&self.message_type)?;
        super::checks::check_pinned_primary(key, self.pinned_version)?;
        let version = usable_version(ctx, key, key.primary_version, VersionUse::Protect).await?;
        let signature = ctx
            .state
            .keyring
            .sign(&version, spec, algorithm, message_type, &self.message.0)
            .await?;
        ctx.state
            .usage
            .record(&key.id, version.version, UseKind::Sign);
        Ok(SignOutput {
            key_id: key.id.clone(),
            key_version: version.version,
            signing_algorithm: algorithm.as_str(),
            signature: Base64::new(signature),
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub key_id: String,
    pub message: Base64,
    #[serde(default = "raw")]
    pub message_type: String,
    pub signing_algorithm: String,
    pub signature: Base64,
    /// The version that signed (as `sign` answered); default: the primary version.
    pub key_version: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VerifyOutput {
    pub key_id: String,
    pub key_version: i64,
    pub signing_algorithm: &'static str,
    pub signature_valid: bool,
}

impl Operation for Verify {
    const NAME: &'static str = "verify";
    const ACTION: &'static str = "Verify";
    const KEY_USE: bool = true;
    type Output = VerifyOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        check_request(&self.message, &self.message_type, &self.signing_algorithm)?;
        if self.signature.is_empty() || self.signature.len() > MAX_SIGNATURE {
            return Err(Error::validation(format!(
                "signature must be 1 to {MAX_SIGNATURE} bytes"
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
        let spec = check_usage(key, KeyUsage::SignVerify, "verify")?;
        let algorithm = SigningAlgorithm::parse(&self.signing_algorithm)?;
        check_signing(spec, algorithm)?;
        let message_type = MessageType::parse(&self.message_type)?;
        let version = version_to_open(ctx, key, self.key_version).await?;
        let valid = self.signature.len() <= LONGEST_SIGNATURE_MADE
            && ctx
                .state
                .keyring
                .verify(
                    &version,
                    spec,
                    algorithm,
                    message_type,
                    &self.message.0,
                    &self.signature.0,
                )
                .await?;
        Ok(VerifyOutput {
            key_id: key.id.clone(),
            key_version: version.version,
            signing_algorithm: algorithm.as_str(),
            signature_valid: valid,
        })
    }
}
