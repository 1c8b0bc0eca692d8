//! `export-key`: hand a version of a key created `exportable` to a recipient, wrapped to the
//! recipient's RSA public key inside the HSM (RSA-OAEP, or RSA-OAEP + AES key wrap with
//! padding); never as plaintext. Secret keys (AES, ChaCha20, HMAC) travel as raw bytes;
//! private keys of pairs as PKCS#8 inside the AES key wrap. Refused for keys not created
//! exportable, for keys that are not enabled and for versions that may not decrypt (disabled,
//! compromised, below the minimum decryption version). Cedar: `ExportKey` on the key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::{check_key_enabled, usable_version, VersionUse};
use super::key_transport::transport;
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::{Base64, OpContext, Operation, WriteScope};
use crate::algorithms::public_key::rsa_public_key;
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::imports;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportKey {
    pub key_id: String,
    /// Default: the primary version.
    #[serde(default)]
    pub key_version: Option<i64>,
    /// `RSAES_OAEP_SHA_1` or `RSA_AES_KEY_WRAP_SHA_1`.
    pub wrapping_algorithm: String,
    /// The recipient's RSA public key: SubjectPublicKeyInfo as PEM text or base64 DER.
    pub public_key: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExportOutput {
    pub key_id: String,
    pub key_version: i64,
    pub key_spec: String,
    /// `RAW` (secret key bytes) or `PKCS8` (a key pair's private key, DER PrivateKeyInfo).
    pub key_material_format: &'static str,
    pub wrapping_algorithm: String,
    pub encrypted_key_material: Base64,
}

impl ExportKey {
    fn recipient(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        rsa_public_key("public_key", &self.public_key, 2048)
    }
}

impl Operation for ExportKey {
    const NAME: &'static str = "export-key";
    const ACTION: &'static str = "ExportKey";
    type Output = ExportOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        transport(&self.wrapping_algorithm)?;
        if self.key_version.is_some_and(|v| v < 1) {
            return Err(Error::validation("key_version must be 1 or more"));
        }
        if self.public_key.len() > 16 * 1024 {
            return Err(Error::validation("public_key is longer than 16 KiB"));
        }
        self.recipient()?;
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        _scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        check_key_enabled(key)?;
        let material = imports::material(&ctx.state.db, &key.id)
            .await?
            .ok_or(Error::Internal)?;
        if !material.exportable {
            return Err(Error::validation(format!(
                "key {} was not created exportable; its material never leaves keyplane",
                key.id
            )));
        }
        let spec = key.spec;
        let transport = transport(&self.wrapping_algorithm)?;
        if spec.is_asymmetric() && !transport.with_aes_key_wrap {
            return Err(Error::validation(format!(
                "a {} private key is exported as PKCS#8, which RSA-OAEP alone cannot carry; use RSA_AES_KEY_WRAP_SHA_1",
                spec.as_str()
            )));
        }
        let v = self.key_version.unwrap_or(key.primary_version);
        let version = usable_version(ctx, key, v, VersionUse::Open).await?;
        let (modulus, exponent) = self.recipient()?;
        let protection = key.protection;
        let wrapped = ctx
            .state
            .keyring
            .export_version(
                &key.tenant_id,
                protection,
                spec,
                &version,
                modulus,
                exponent,
                transport,
            )
            .await?;
        Ok(ExportOutput {
            key_id: key.id.clone(),
            key_version: v,
            key_spec: key.spec.to_string(),
            key_material_format: if spec.is_asymmetric() { "PKCS8" } else { "RAW" },
            wrapping_algorithm: self.wrapping_algorithm,
            encrypted_key_material: Base64::new(wrapped),
        })
    }
}
