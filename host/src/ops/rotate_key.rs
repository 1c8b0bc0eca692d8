//! `rotate-key` (a new primary version with new material from the HSM; older versions keep
//! decrypting) and `list-key-versions` (every version with its state and usage).
//! Cedar: `RotateKey` / `ListKeyVersions` on the key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::views::VersionInfo;
use super::{versions, OpContext, Operation, WriteScope};
use crate::algorithms::KeyUsage;
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::keys;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    pub key_id: String,
    /// Refuse a key that is not a symmetric encryption key (see
    /// [`refuse_unless_symmetric_encryption`]). Set by a front, not on the wire.
    #[serde(skip)]
    pub only_symmetric_encryption: bool,
}

/// For a front whose clients name no version when they verify a signature, check a MAC or
/// decrypt under an RSA key (AWS KMS: only symmetric ciphertexts say which version made
/// them): rotating any other key would leave what they made before unusable to them, so
/// such a key is refused (AWS rotates only symmetric encryption keys). The native API and
/// Transit name versions, and rotate every key.
pub fn refuse_unless_symmetric_encryption(key: &keys::KeyRow, refuse: bool) -> Result<()> {
    let symmetric = key.usage == KeyUsage::EncryptDecrypt && key.spec.is_symmetric_encryption();
    if refuse && !symmetric {
        return Err(Error::Unsupported(format!(
            "rotation of key {}: it is a {} {} key, and only symmetric encryption keys rotate here (their ciphertexts say which version made them)",
            key.id, key.spec, key.usage
        )));
    }
    Ok(())
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RotateKeyOutput {
    pub key_id: String,
    pub primary_version: i64,
    pub previous_version: i64,
}

impl Operation for RotateKey {
    const NAME: &'static str = "rotate-key";
    const ACTION: &'static str = "RotateKey";
    type Output = RotateKeyOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        refuse_unless_symmetric_encryption(key, self.only_symmetric_encryption)?;
        let primary_version =
            versions::rotate(ctx.state, scope, key, keys::ROTATION_ON_DEMAND).await?;
        Ok(RotateKeyOutput {
            key_id: key.id.clone(),
            primary_version,
            previous_version: key.primary_version,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListKeyVersions {
    pub key_id: String,
    /// Versions after this one only (a page token: the last version of the previous page).
    pub after_version: Option<i64>,
    /// At most this many (1 to 1000; default: all).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListKeyVersionsOutput {
    pub key_id: String,
    pub primary_version: i64,
    pub min_decryption_version: i64,
    pub versions: Vec<VersionInfo>,
    /// More versions follow: ask again with `after_version` = the last one listed.
    pub truncated: bool,
}

impl Operation for ListKeyVersions {
    const NAME: &'static str = "list-key-versions";
    const ACTION: &'static str = "ListKeyVersions";
    type Output = ListKeyVersionsOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if self.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
            return Err(Error::validation("limit must be 1 to 1000"));
        }
        if self.after_version.is_some_and(|v| v < 0) {
            return Err(Error::InvalidMarker(
                "after_version is not a version this operation returned".into(),
            ));
        }
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        let versions = keys::versions(&ctx.state.db, &key.id).await?;
        let after = self.after_version.unwrap_or(0);
        let limit = self.limit.unwrap_or(i64::MAX) as usize;
        let listed: Vec<VersionInfo> = versions
            .iter()
            .filter(|v| v.version > after)
            .take(limit)
            .map(|v| VersionInfo::new(v, ctx.state.usage.pending(&key.id, v.version)))
            .collect();
        let last = listed.last().map_or(after, |v| v.version);
        Ok(ListKeyVersionsOutput {
            key_id: key.id.clone(),
            primary_version: key.primary_version,
            min_decryption_version: key.min_decryption_version,
            truncated: versions.iter().any(|v| v.version > last),
            versions: listed,
        })
    }
}
