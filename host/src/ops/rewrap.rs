//! `rewrap`: re-encrypt a ciphertext under the primary version of its key, or of another key
//! the caller may encrypt with, without the plaintext leaving keyplane. The only way to
//! decrypt under a compromised (revoked) version; versions below the key's minimum
//! decryption version stay closed, as for `decrypt`. Cedar: `Rewrap` on the source key (with
//! the source encryption context), and `RewrapTo` on the destination (with the destination
//! context) whenever the destination differs: another key, or a new encryption context
//! (checked in the same request; a refusal is audited as a `deny`). `RewrapTo` is an action
//! of its own so that a grant can allow re-encryption to a key without allowing encryption
//! under it (AWS's `ReEncryptTo`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::checks::VersionUse;
use super::resolve::{key_id_of, key_row, resolve_key};
use super::sealing::{open_ciphertext, seal_with_primary};
use super::validate::validate_key_id;
use super::{Base64, OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::crypto::ciphertext::Ciphertext;
use crate::crypto::context::{self, EncryptionContext};
use crate::error::{Error, Result};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rewrap {
    pub ciphertext_blob: Base64,
    #[serde(default, deserialize_with = "crate::crypto::context::bounded")]
    pub source_encryption_context: EncryptionContext,
    /// The key the ciphertext must have been made under (refused with `IncorrectKey`
    /// otherwise); default: whichever its header names.
    pub source_key_id: Option<String>,
    /// Default: the source key (its primary version).
    pub destination_key_id: Option<String>,
    /// Default: the source encryption context.
    #[serde(default, deserialize_with = "crate::crypto::context::bounded_opt")]
    pub destination_encryption_context: Option<EncryptionContext>,
    /// As `encrypt`'s, for the destination key. Not on the wire.
    #[serde(skip)]
    pub pinned_version: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RewrapOutput {
    pub key_id: String,
    pub key_version: u32,
    pub source_key_id: String,
    pub source_key_version: u32,
    pub ciphertext_blob: Base64,
}

impl Rewrap {
    fn parsed(&self) -> Result<Ciphertext> {
        Ciphertext::parse(&self.ciphertext_blob.0)
    }
}

impl Rewrap {
    /// The encryption context the plaintext is sealed under again (default: the source's).
    fn destination_context(&self) -> EncryptionContext {
        self.destination_encryption_context
            .clone()
            .unwrap_or_else(|| self.source_encryption_context.clone())
    }

    /// The destination, authorized as `RewrapTo` for the caller whenever the request names
    /// one (another key, returned; or the source key itself, `None`) or another encryption
    /// context. AWS authorizes `ReEncryptTo` even when the destination is the source key: a
    /// grant of `ReEncryptFrom` alone must not re-encrypt under it (which also moves what an
    /// old version sealed to the primary one).
    async fn authorize_destination(
        &self,
        ctx: &OpContext<'_>,
        source: &ResourceRef,
    ) -> Result<Option<ResourceRef>> {
        let dest_ec = self.destination_context();
        let source_id = &key_row(source)?.id;
        let dest_resource = match &self.destination_key_id {
            Some(d) if key_id_of(ctx, d).await? != *source_id => Some(resolve_key(ctx, d).await?),
            _ => None,
        };
        if self.destination_key_id.is_some() || dest_ec != self.source_encryption_context {
            ctx.authorize(
                "RewrapTo",
                dest_resource.as_ref().unwrap_or(source),
                &dest_ec,
            )?;
        }
        Ok(dest_resource)
    }
}

impl Operation for Rewrap {
    const NAME: &'static str = "rewrap";
    const ACTION: &'static str = "Rewrap";
    const KEY_USE: bool = true;
    type Output = RewrapOutput;

    fn validate(&self) -> Result<()> {
        self.parsed()?;
        if let Some(k) = &self.source_key_id {
            validate_key_id(k)?;
        }
        if let Some(k) = &self.destination_key_id {
            validate_key_id(k)?;
        }
        if let Some(ec) = &self.destination_encryption_context {
            context::validate(ec)?;
        }
        Ok(())
    }

    fn encryption_context(&self) -> Option<&EncryptionContext> {
        Some(&self.source_encryption_context)
    }

    fn audit_resource(&self, resource: &ResourceRef) -> String {
        match &self.destination_key_id {
            Some(d) => format!("{} -> {d}", resource.display()),
            None => resource.display(),
        }
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        let named = self.parsed()?.key_id;
        if let Some(k) = &self.source_key_id {
            if key_id_of(ctx, k).await? != named {
                return Err(Error::IncorrectKey(
                    "the ciphertext was not encrypted under source_key_id".into(),
                ));
            }
        }
        resolve_key(ctx, &named).await
    }

    async fn authorize_dry_run(&self, ctx: &OpContext<'_>, resource: &ResourceRef) -> Result<()> {
        self.authorize_destination(ctx, resource).await.map(drop)
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        resource: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let source = key_row(&resource)?;
        let ct = self.parsed()?;
        let dest_ec = self.destination_context();
        let dest_resource = self.authorize_destination(ctx, &resource).await?;
        let dest = match &dest_resource {
            Some(r) => key_row(r)?,
            None => source,
        };
        super::checks::check_pinned_primary(dest, self.pinned_version)?;
        let plaintext: Zeroizing<Vec<u8>> = open_ciphertext(
            ctx,
            source,
            &ct,
            &self.source_encryption_context,
            VersionUse::Rewrap,
        )
        .await?;
        let (key_version, blob) = seal_with_primary(ctx, dest, &dest_ec, plaintext).await?;
        Ok(RewrapOutput {
            key_id: dest.id.clone(),
            key_version,
            source_key_id: source.id.clone(),
            source_key_version: ct.key_version,
            ciphertext_blob: Base64::new(blob),
        })
    }
}
