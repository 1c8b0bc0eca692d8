//! `generate-data-key` and `generate-data-key-without-plaintext`: a data key from the HSM's
//! RNG, returned encrypted under the key (and, for the first, also in plaintext, once).
//! Cedar: `GenerateDataKey` / `GenerateDataKeyWithoutPlaintext` on the key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::resolve::{key_row, resolve_key};
use super::sealing::seal_with_primary;
use super::validate::validate_key_id;
use super::{Base64, OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};

const MAX_BYTES: usize = 1024;

/// The request both operations take.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataKeyRequest {
    pub key_id: String,
    /// `AES_256` or `AES_128`; default `AES_256` when `number_of_bytes` is not given.
    pub key_spec: Option<String>,
    pub number_of_bytes: Option<usize>,
    #[serde(default, deserialize_with = "crate::crypto::context::bounded")]
    pub encryption_context: EncryptionContext,
    /// As `encrypt`'s (see `checks::check_pinned_primary`). Not on the wire.
    #[serde(skip)]
    pub pinned_version: Option<u32>,
}

impl DataKeyRequest {
    fn length(&self) -> Result<usize> {
        match (&self.key_spec, self.number_of_bytes) {
            (Some(_), Some(_)) => Err(Error::validation(
                "give key_spec or number_of_bytes, not both",
            )),
            (None, Some(n)) if (1..=MAX_BYTES).contains(&n) => Ok(n),
            (None, Some(_)) => Err(Error::validation(format!(
                "number_of_bytes must be 1 to {MAX_BYTES}"
            ))),
            (Some(s), None) if s == "AES_256" => Ok(32),
            (Some(s), None) if s == "AES_128" => Ok(16),
            (Some(_), None) => Err(Error::validation("key_spec must be AES_256 or AES_128")),
            (None, None) => Ok(32),
        }
    }

    fn check(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        self.length().map(|_| ())
    }

    async fn generate(
        &self,
        ctx: &OpContext<'_>,
        resource: &ResourceRef,
    ) -> Result<(String, u32, Vec<u8>, Base64)> {
        let key = key_row(resource)?;
        super::checks::check_pinned_primary(key, self.pinned_version)?;
        let plaintext = ctx.state.keyring.random(self.length()?).await?;
        let (v, blob) =
            seal_with_primary(ctx, key, &self.encryption_context, plaintext.clone()).await?;
        Ok((key.id.clone(), v, blob, Base64(plaintext)))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct GenerateDataKey(pub DataKeyRequest);

#[derive(Debug, Serialize, JsonSchema)]
pub struct GenerateDataKeyOutput {
    pub key_id: String,
    pub key_version: u32,
    pub ciphertext_blob: Base64,
    pub plaintext: Base64,
}

impl Operation for GenerateDataKey {
    const NAME: &'static str = "generate-data-key";
    const ACTION: &'static str = "GenerateDataKey";
    const KEY_USE: bool = true;
    type Output = GenerateDataKeyOutput;

    fn validate(&self) -> Result<()> {
        self.0.check()
    }
    fn encryption_context(&self) -> Option<&EncryptionContext> {
        Some(&self.0.encryption_context)
    }
    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.0.key_id).await
    }
    async fn execute(
        self,
        ctx: &OpContext<'_>,
        resource: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let (key_id, key_version, blob, plaintext) = self.0.generate(ctx, &resource).await?;
        Ok(GenerateDataKeyOutput {
            key_id,
            key_version,
            ciphertext_blob: Base64::new(blob),
            plaintext,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct GenerateDataKeyWithoutPlaintext(pub DataKeyRequest);

#[derive(Debug, Serialize, JsonSchema)]
pub struct GenerateDataKeyWithoutPlaintextOutput {
    pub key_id: String,
    pub key_version: u32,
    pub ciphertext_blob: Base64,
}

impl Operation for GenerateDataKeyWithoutPlaintext {
    const NAME: &'static str = "generate-data-key-without-plaintext";
    const ACTION: &'static str = "GenerateDataKeyWithoutPlaintext";
    const KEY_USE: bool = true;
    type Output = GenerateDataKeyWithoutPlaintextOutput;

    fn validate(&self) -> Result<()> {
        self.0.check()
    }
    fn encryption_context(&self) -> Option<&EncryptionContext> {
        Some(&self.0.encryption_context)
    }
    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.0.key_id).await
    }
    async fn execute(
        self,
        ctx: &OpContext<'_>,
        resource: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let (key_id, key_version, blob, _plaintext) = self.0.generate(ctx, &resource).await?;
        Ok(GenerateDataKeyWithoutPlaintextOutput {
            key_id,
            key_version,
            ciphertext_blob: Base64::new(blob),
        })
    }
}
