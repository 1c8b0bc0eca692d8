//! `generate-data-key-pair` and `generate-data-key-pair-without-plaintext`: an asymmetric key
//! pair for the caller to use outside keyplane (to sign or decrypt where keyplane is not
//! reachable), its private key returned encrypted under a symmetric key and, for the first,
//! also in plaintext, once. Cedar: `GenerateDataKeyPair` / `GenerateDataKeyPairWithoutPlaintext`
//! on the key (both `Cryptographic`).
//!
//! As AWS KMS: `key_pair_spec` is `RSA_2048`, `RSA_3072`, `RSA_4096`, `ECC_NIST_P256` or
//! `ECC_NIST_P384`; the private key is PKCS#8 DER, the public key a DER SubjectPublicKeyInfo,
//! and `private_key_ciphertext_blob` is an ordinary keyplane ciphertext of the PKCS#8 under the
//! key's primary version, bound to the encryption context, which `decrypt` opens. The key must
//! be an enabled symmetric encrypt-decrypt key; that is checked before the pair is made (an
//! RSA-4096 pair takes the HSM seconds), and again when sealing.
//!
//! The pair comes from the HSM's generator like every key keyplane makes, and the HSM keeps no
//! copy ([`crate::hsm::Hsm::generate_data_key_pair`]); the host encodes it
//! ([`crate::algorithms::private_key`]). keyplane stores nothing of it: the answer is the only
//! copy. The without-plaintext variant still holds the plaintext briefly (to seal it), in
//! zeroized memory only.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::check_usable_for_encryption;
use super::resolve::{key_row, resolve_key};
use super::sealing::seal_with_primary;
use super::validate::validate_key_id;
use super::{Base64, OpContext, Operation, WriteScope};
use crate::algorithms::KeySpec;
use crate::authz::ResourceRef;
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};

/// The key pair specs a data key pair may have (what AWS KMS offers, less the curves
/// keyplane does not have).
pub const KEY_PAIR_SPECS: &[KeySpec] = &[
    KeySpec::Rsa2048,
    KeySpec::Rsa3072,
    KeySpec::Rsa4096,
    KeySpec::EccNistP256,
    KeySpec::EccNistP384,
];

/// The request both operations take.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataKeyPairRequest {
    /// The symmetric key the private key is encrypted under.
    pub key_id: String,
    /// One of [`KEY_PAIR_SPECS`].
    pub key_pair_spec: String,
    #[serde(default, deserialize_with = "crate::crypto::context::bounded")]
    pub encryption_context: EncryptionContext,
}

/// A data key pair as both operations make it.
struct Made {
    key_id: String,
    key_version: u32,
    spec: KeySpec,
    blob: Vec<u8>,
    private_key: Base64,
    public_key: Vec<u8>,
}

impl DataKeyPairRequest {
    fn spec(&self) -> Result<KeySpec> {
        KeySpec::parse(&self.key_pair_spec)
            .ok()
            .filter(|s| KEY_PAIR_SPECS.contains(s))
            .ok_or_else(|| {
                let names: Vec<&str> = KEY_PAIR_SPECS.iter().map(|s| s.as_str()).collect();
                Error::validation(format!("key_pair_spec must be one of {}", names.join(", ")))
            })
    }

    fn check(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        self.spec().map(|_| ())
    }

    async fn generate(&self, ctx: &OpContext<'_>, resource: &ResourceRef) -> Result<Made> {
        let key = key_row(resource)?;
        let spec = self.spec()?;
        // Before the HSM spends seconds on a pair that could not be sealed.
        check_usable_for_encryption(key)?;
        if let Some(missing) = ctx
            .state
            .keyring
            .hsm()
            .capabilities()
            .missing_for_data_key_pair(spec)
        {
            return Err(Error::validation(format!(
                "the HSM cannot generate {} key pairs: it lacks {missing}",
                spec.as_str()
            )));
        }
        let pair = ctx.state.keyring.data_key_pair(spec).await?;
        let (key_version, blob) =
            seal_with_primary(ctx, key, &self.encryption_context, pair.private_key.clone()).await?;
        Ok(Made {
            key_id: key.id.clone(),
            key_version,
            spec,
            blob,
            private_key: Base64(pair.private_key),
            public_key: pair.public_key,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct GenerateDataKeyPair(pub DataKeyPairRequest);

#[derive(Debug, Serialize, JsonSchema)]
pub struct GenerateDataKeyPairOutput {
    pub key_id: String,
    pub key_version: u32,
    pub key_pair_spec: &'static str,
    /// The PKCS#8 private key, encrypted under the key (`decrypt` opens it).
    pub private_key_ciphertext_blob: Base64,
    /// The PKCS#8 private key (DER).
    pub private_key_plaintext: Base64,
    /// The public key (DER SubjectPublicKeyInfo).
    pub public_key: Base64,
}

impl Operation for GenerateDataKeyPair {
    const NAME: &'static str = "generate-data-key-pair";
    const ACTION: &'static str = "GenerateDataKeyPair";
    const KEY_USE: bool = true;
    type Output = GenerateDataKeyPairOutput;

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
        let made = self.0.generate(ctx, &resource).await?;
        Ok(GenerateDataKeyPairOutput {
            key_id: made.key_id,
            key_version: made.key_version,
            key_pair_spec: made.spec.as_str(),
            private_key_ciphertext_blob: Base64::new(made.blob),
            private_key_plaintext: made.private_key,
            public_key: Base64::new(made.public_key),
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct GenerateDataKeyPairWithoutPlaintext(pub DataKeyPairRequest);

#[derive(Debug, Serialize, JsonSchema)]
pub struct GenerateDataKeyPairWithoutPlaintextOutput {
    pub key_id: String,
    pub key_version: u32,
    pub key_pair_spec: &'static str,
    pub private_key_ciphertext_blob: Base64,
    pub public_key: Base64,
}

impl Operation for GenerateDataKeyPairWithoutPlaintext {
    const NAME: &'static str = "generate-data-key-pair-without-plaintext";
    const ACTION: &'static str = "GenerateDataKeyPairWithoutPlaintext";
    const KEY_USE: bool = true;
    type Output = GenerateDataKeyPairWithoutPlaintextOutput;

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
        // The plaintext private key is dropped (zeroized) here.
        let made = self.0.generate(ctx, &resource).await?;
        Ok(GenerateDataKeyPairWithoutPlaintextOutput {
            key_id: made.key_id,
            key_version: made.key_version,
            key_pair_spec: made.spec.as_str(),
            private_key_ciphertext_blob: Base64::new(made.blob),
            public_key: Base64::new(made.public_key),
        })
    }
}
