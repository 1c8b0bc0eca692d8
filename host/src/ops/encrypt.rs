//! `encrypt`: up to 4096 bytes under a key's primary version, with an optional encryption
//! context bound as AAD. Cedar: `Encrypt` on the key (the context is visible to policies).
//! Symmetric keys (`AES_256_GCM`, `AES_128_GCM`, `CHACHA20_POLY1305`; `SYMMETRIC_DEFAULT`)
//! produce a keyplane ciphertext; RSA `encrypt-decrypt` keys
//! produce an RSAES-OAEP ciphertext (see [`super::rsa_oaep`]). Other keys are refused with
//! `InvalidKeyUsage`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::resolve::{key_row, resolve_key};
use super::rsa_oaep::{self, SYMMETRIC_DEFAULT};
use super::sealing::seal_with_primary;
use super::validate::validate_key_id;
use super::{Base64, OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};

/// Largest plaintext `encrypt` accepts (as AWS KMS). An empty one is encrypted too, as Vault
/// Transit encrypts it (its clients send `""` for an empty value); the AWS front keeps AWS's
/// minimum of one byte.
pub const MAX_PLAINTEXT: usize = 4096;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Encrypt {
    pub key_id: String,
    pub plaintext: Base64,
    #[serde(default, deserialize_with = "crate::crypto::context::bounded")]
    pub encryption_context: EncryptionContext,
    /// `SYMMETRIC_DEFAULT` (default) or, for RSA keys, `RSAES_OAEP_SHA_256`/`_SHA_1`.
    pub encryption_algorithm: Option<String>,
    /// Set by a front whose clients may name the version to protect with (Transit's
    /// `key_version`): refused unless it is the primary version (see
    /// `checks::check_pinned_primary`). Not on the wire.
    #[serde(skip)]
    pub pinned_version: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EncryptOutput {
    pub key_id: String,
    pub key_version: u32,
    pub ciphertext_blob: Base64,
    pub encryption_algorithm: &'static str,
}

impl Operation for Encrypt {
    const NAME: &'static str = "encrypt";
    const ACTION: &'static str = "Encrypt";
    const KEY_USE: bool = true;
    type Output = EncryptOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if self.plaintext.len() > MAX_PLAINTEXT {
            return Err(Error::validation(format!(
                "plaintext must be at most {MAX_PLAINTEXT} bytes (got {})",
                self.plaintext.len()
            )));
        }
        if rsa_oaep::is_oaep(self.encryption_algorithm.as_deref())?
            && !self.encryption_context.is_empty()
        {
            return Err(Error::validation(
                "RSAES_OAEP encryption takes no encryption_context",
            ));
        }
        Ok(())
    }

    fn encryption_context(&self) -> Option<&EncryptionContext> {
        Some(&self.encryption_context)
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
        super::checks::check_pinned_primary(key, self.pinned_version)?;
        let algorithm = self.encryption_algorithm.as_deref();
        if key.spec.rsa_bits().is_some() {
            let (v, ct, alg) = rsa_oaep::encrypt(ctx, key, algorithm, self.plaintext.0).await?;
            return Ok(EncryptOutput {
                key_id: key.id.clone(),
                key_version: v as u32,
                ciphertext_blob: Base64::new(ct),
                encryption_algorithm: alg,
            });
        }
        rsa_oaep::refuse_oaep_for_symmetric(key, algorithm, "encrypt")?;
        let (key_version, blob) =
            seal_with_primary(ctx, key, &self.encryption_context, self.plaintext.0).await?;
        Ok(EncryptOutput {
            key_id: key.id.clone(),
            key_version,
            ciphertext_blob: Base64::new(blob),
            encryption_algorithm: SYMMETRIC_DEFAULT,
        })
    }
}
