//! `decrypt`: a keyplane ciphertext back to plaintext. The key and version come from the
//! ciphertext header (`key_id`, when given, must match). Cedar: `Decrypt` on that key.

use serde::{Deserialize, Serialize};

use super::common::{
    key_id_of, key_row, open_ciphertext, resolve_key, validate_key_id, VersionUse, ALIAS_PREFIX,
};
use super::{Base64, OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::crypto::ciphertext::Ciphertext;
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decrypt {
    pub ciphertext_blob: Base64,
    #[serde(default)]
    pub encryption_context: EncryptionContext,
    pub key_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DecryptOutput {
    pub key_id: String,
    pub key_version: u32,
    pub plaintext: Base64,
}

impl Decrypt {
    fn parsed(&self) -> Result<Ciphertext> {
        Ciphertext::parse(&self.ciphertext_blob.0)
    }
}

impl Operation for Decrypt {
    const NAME: &'static str = "decrypt";
    const ACTION: &'static str = "Decrypt";
    const KEY_USE: bool = true;
    type Output = DecryptOutput;

    fn validate(&self) -> Result<()> {
        let ct = self.parsed()?;
        if let Some(k) = &self.key_id {
            validate_key_id(k)?;
            if !k.starts_with(ALIAS_PREFIX) && *k != ct.key_id {
                return Err(Error::validation(
                    "the ciphertext was not encrypted under key_id",
                ));
            }
        }
        Ok(())
    }

    fn encryption_context(&self) -> Option<&EncryptionContext> {
        Some(&self.encryption_context)
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        let named = self.parsed()?.key_id;
        if let Some(k) = &self.key_id {
            if key_id_of(ctx, k).await? != named {
                return Err(Error::validation(
                    "the ciphertext was not encrypted under key_id",
                ));
            }
        }
        resolve_key(ctx, &named).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        resource: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&resource)?;
        let ct = self.parsed()?;
        let plaintext =
            open_ciphertext(ctx, key, &ct, &self.encryption_context, VersionUse::Open).await?;
        Ok(DecryptOutput {
            key_id: key.id.clone(),
            key_version: ct.key_version,
            plaintext: Base64(plaintext),
        })
    }
}
