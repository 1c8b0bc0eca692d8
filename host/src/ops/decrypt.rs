//! `decrypt`: a keyplane ciphertext back to plaintext. The key and version come from the
//! ciphertext header (`key_id`, when given, must match). Cedar: `Decrypt` on that key.

use serde::{Deserialize, Serialize};

use super::common::{
    aad, check_usable_for_encryption, key_row, resolve_key, usable_version, validate_key_id,
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
            if *k != ct.key_id {
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
        resolve_key(ctx, &self.parsed()?.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        resource: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&resource)?;
        let protection = check_usable_for_encryption(key)?;
        let ct = self.parsed()?;
        let version = usable_version(ctx, key, ct.key_version as i64)
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::DecryptionFailed,
                e => e,
            })?;
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&ct.nonce);
        let aad = aad(&ct.header(), &self.encryption_context);
        let plaintext = ctx
            .state
            .keyring
            .open(&key.tenant_id, protection, &version, nonce, aad, ct.sealed)
            .await?;
        Ok(DecryptOutput {
            key_id: key.id.clone(),
            key_version: ct.key_version,
            plaintext: Base64(plaintext),
        })
    }
}
