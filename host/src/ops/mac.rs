//! `generate-mac` and `verify-mac`: HMAC (SHA-256/384/512, by the key's spec) computed in the
//! HSM with a `generate-verify-mac` key. `generate-mac` uses the primary version and says
//! which; `verify-mac` takes `key_version` (default: the primary), computes the MAC in the token
//! and compares it in constant time in the host (`Keyring::verify_mac`). Cedar: `GenerateMac` /
//! `VerifyMac` on the key.
//! Each MAC generated counts in the version's `signatures`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::{check_usage, usable_version, version_to_open, VersionUse};
use super::resolve::{key_row, resolve_key};
use super::validate::{validate_key_id, validate_message};
use super::{Base64, OpContext, Operation, WriteScope};
use crate::algorithms::{Hash, KeySpec, KeyUsage, MacAlgorithm};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::keys::KeyRow;
use crate::usage::UseKind;

/// Largest MAC `verify-mac` takes (AWS's model: 6 KiB). One longer than any MAC made (64
/// bytes, HMAC-SHA-512) does not match, answered so without the HSM: an invalid MAC, not an
/// invalid request.
const MAX_MAC: usize = 6144;
const LONGEST_MAC_MADE: usize = 64;

/// Check the key and that `mac_algorithm` is its spec's; returns the hash.
fn mac_hash(key: &KeyRow, algorithm: &str, operation: &str) -> Result<Hash> {
    let spec = check_usage(key, KeyUsage::GenerateVerifyMac, operation)?;
    let algorithm = MacAlgorithm::parse(algorithm)?;
    let hash = spec.hmac_hash().ok_or(Error::Internal)?;
    if algorithm.0 != hash {
        // As for a signing algorithm the key cannot do (`check_signing`).
        return Err(Error::InvalidKeyUsage(format!(
            "mac_algorithm {} is not available for key_spec {}; allowed: {}",
            algorithm.as_str(),
            spec.as_str(),
            MacAlgorithm(hash).as_str()
        )));
    }
    debug_assert!(spec != KeySpec::Aes256Gcm);
    Ok(hash)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateMac {
    pub key_id: String,
    pub message: Base64,
    pub mac_algorithm: String,
    /// Set by a front whose clients may name the version to protect with (Transit's
    /// `key_version`): refused unless it is the primary version (see
    /// `checks::check_pinned_primary`). Not on the wire.
    #[serde(skip)]
    pub pinned_version: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GenerateMacOutput {
    pub key_id: String,
    pub key_version: i64,
    pub mac_algorithm: String,
    pub mac: Base64,
}

impl Operation for GenerateMac {
    const NAME: &'static str = "generate-mac";
    const ACTION: &'static str = "GenerateMac";
    const KEY_USE: bool = true;
    type Output = GenerateMacOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        validate_message("message", self.message.len())?;
        MacAlgorithm::parse(&self.mac_algorithm)?;
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
        let hash = mac_hash(key, &self.mac_algorithm, "generate-mac")?;
        super::checks::check_pinned_primary(key, self.pinned_version)?;
        let version = usable_version(ctx, key, key.primary_version, VersionUse::Protect).await?;
        let mac = ctx
            .state
            .keyring
            .mac(&version, hash, &self.message.0)
            .await?;
        ctx.state
            .usage
            .record(&key.id, version.version, UseKind::Sign);
        Ok(GenerateMacOutput {
            key_id: key.id.clone(),
            key_version: version.version,
            mac_algorithm: self.mac_algorithm,
            mac: Base64::new(mac),
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyMac {
    pub key_id: String,
    pub message: Base64,
    pub mac_algorithm: String,
    pub mac: Base64,
    /// The version that made the MAC; default: the primary version.
    pub key_version: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VerifyMacOutput {
    pub key_id: String,
    pub key_version: i64,
    pub mac_algorithm: String,
    pub mac_valid: bool,
}

impl Operation for VerifyMac {
    const NAME: &'static str = "verify-mac";
    const ACTION: &'static str = "VerifyMac";
    const KEY_USE: bool = true;
    type Output = VerifyMacOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        validate_message("message", self.message.len())?;
        MacAlgorithm::parse(&self.mac_algorithm)?;
        if self.mac.is_empty() || self.mac.len() > MAX_MAC {
            return Err(Error::validation(format!(
                "mac must be 1 to {MAX_MAC} bytes"
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
        let hash = mac_hash(key, &self.mac_algorithm, "verify-mac")?;
        let version = version_to_open(ctx, key, self.key_version).await?;
        let valid = self.mac.len() <= LONGEST_MAC_MADE
            && ctx
                .state
                .keyring
                .verify_mac(&version, hash, &self.message.0, &self.mac.0)
                .await?;
        Ok(VerifyMacOutput {
            key_id: key.id.clone(),
            key_version: version.version,
            mac_algorithm: self.mac_algorithm,
            mac_valid: valid,
        })
    }
}
