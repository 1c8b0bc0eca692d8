//! `decrypt`: a keyplane ciphertext back to plaintext. The key and version come from the
//! ciphertext header (`key_id`, when given, must match). Cedar: `Decrypt` on that key.
//! With `encryption_algorithm` `RSAES_OAEP_*` the blob is an RSA OAEP ciphertext instead:
//! `key_id` is required and `key_version` picks the version (see [`super::rsa_oaep`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::VersionUse;
use super::resolve::{key_id_of, key_row, resolve_key};
use super::rsa_oaep::{self, MAX_RSA_CIPHERTEXT};
use super::sealing::open_ciphertext;
use super::validate::validate_key_id;
use super::{Base64, OpContext, Operation, WriteScope};
use crate::algorithms::OaepAlgorithm;
use crate::authz::ResourceRef;
use crate::crypto::ciphertext::Ciphertext;
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decrypt {
    pub ciphertext_blob: Base64,
    #[serde(default, deserialize_with = "crate::crypto::context::bounded")]
    pub encryption_context: EncryptionContext,
    pub key_id: Option<String>,
    /// `SYMMETRIC_DEFAULT` (default: a keyplane ciphertext) or `RSAES_OAEP_SHA_256`/`_SHA_1`.
    pub encryption_algorithm: Option<String>,
    /// RSA OAEP only: the version that encrypted (default: the primary).
    pub key_version: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DecryptOutput {
    pub key_id: String,
    pub key_version: u32,
    pub plaintext: Base64,
    pub encryption_algorithm: &'static str,
}

impl Decrypt {
    fn parsed(&self) -> Result<Ciphertext> {
        Ciphertext::parse(&self.ciphertext_blob.0)
    }

    fn oaep(&self) -> Result<bool> {
        rsa_oaep::is_oaep(self.encryption_algorithm.as_deref())
    }

    fn oaep_key_id(&self) -> Result<&str> {
        self.key_id
            .as_deref()
            .ok_or_else(|| Error::validation("RSAES_OAEP decryption needs key_id"))
    }
}

impl Operation for Decrypt {
    const NAME: &'static str = "decrypt";
    const ACTION: &'static str = "Decrypt";
    const KEY_USE: bool = true;
    type Output = DecryptOutput;

    fn validate(&self) -> Result<()> {
        if self.oaep()? {
            validate_key_id(self.oaep_key_id()?)?;
            if self.ciphertext_blob.is_empty() || self.ciphertext_blob.len() > MAX_RSA_CIPHERTEXT {
                return Err(Error::validation(format!(
                    "an RSA ciphertext is 1 to {MAX_RSA_CIPHERTEXT} bytes"
                )));
            }
            if !self.encryption_context.is_empty() {
                return Err(Error::validation(
                    "RSAES_OAEP decryption takes no encryption_context",
                ));
            }
            return Ok(());
        }
        if self.key_version.is_some() {
            return Err(Error::validation(
                "key_version is for RSAES_OAEP ciphertexts; a keyplane ciphertext names its version",
            ));
        }
        self.parsed()?;
        if let Some(k) = &self.key_id {
            // Whether it names the ciphertext's key is decided in `resolve`, where the keys
            // are looked up: a key_id naming a key the caller may not see is refused as one
            // that does not exist, and audited as a deny.
            validate_key_id(k)?;
        }
        Ok(())
    }

    fn encryption_context(&self) -> Option<&EncryptionContext> {
        Some(&self.encryption_context)
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        if self.oaep()? {
            return resolve_key(ctx, self.oaep_key_id()?).await;
        }
        let named = self.parsed()?.key_id;
        if let Some(k) = &self.key_id {
            let given = key_id_of(ctx, k).await?;
            if given != named {
                // Saying which key is not the other would reveal keys the caller may not
                // see: either one it may not describe (another tenant's) is refused as a key
                // that does not exist, and audited as a deny.
                for id in [&named, &given] {
                    let key = resolve_key(ctx, id).await?;
                    ctx.authorize("DescribeKey", &key, &EncryptionContext::new())?;
                }
                return Err(Error::IncorrectKey(
                    "the ciphertext was not encrypted under key_id".into(),
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
        if self.oaep()? {
            if key.spec.rsa_bits().is_none() {
                rsa_oaep::refuse_oaep_for_symmetric(
                    key,
                    self.encryption_algorithm.as_deref(),
                    "decrypt",
                )?;
            }
            let (v, plaintext) = rsa_oaep::decrypt(
                ctx,
                key,
                self.encryption_algorithm.as_deref(),
                self.key_version,
                self.ciphertext_blob.0.to_vec(),
            )
            .await?;
            let algorithm = self
                .encryption_algorithm
                .as_deref()
                .and_then(OaepAlgorithm::parse)
                .map(OaepAlgorithm::as_str)
                .ok_or(Error::Internal)?;
            return Ok(DecryptOutput {
                key_id: key.id.clone(),
                key_version: v as u32,
                plaintext: Base64(plaintext),
                encryption_algorithm: algorithm,
            });
        }
        let ct = self.parsed()?;
        let plaintext =
            open_ciphertext(ctx, key, &ct, &self.encryption_context, VersionUse::Open).await?;
        Ok(DecryptOutput {
            key_id: key.id.clone(),
            key_version: ct.key_version,
            plaintext: Base64(plaintext),
            encryption_algorithm: rsa_oaep::SYMMETRIC_DEFAULT,
        })
    }
}
