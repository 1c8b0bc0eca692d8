//! `export-key`: hand a version of a key created `exportable` to a recipient, in one of two
//! forms.
//!
//! - `WRAPPED` (the default): wrapped to the recipient's RSA public key inside the HSM
//!   (RSA-OAEP, or RSA-OAEP + AES key wrap with padding); never as plaintext. Secret keys
//!   (AES, ChaCha20, HMAC) travel as raw bytes; private keys of pairs as PKCS#8 inside the AES
//!   key wrap.
//! - `PKCS12`, for key pairs: a PKCS#12 bundle of the private key and a certificate of its
//!   public key under a password the caller chooses (profile in
//!   [`crate::algorithms::pkcs12`]). Password-based encryption is no token's mechanism, so
//!   the private key is revealed to host memory for it (zeroized after) — the reason a key
//!   must be created `exportable` to allow it at all. The certificate is the caller's (its
//!   public key must be the version's) or, for `sign-verify` keys, one the version signs for
//!   itself in the HSM (as `get-public-key` `format: CERTIFICATE` does), counted as a
//!   signature.
//!
//! Refused for keys not created exportable, for keys that are not enabled and for versions
//! that may not decrypt (disabled, compromised, below the minimum decryption version).
//! Cedar: `ExportKey` on the key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::certificates::{sign_x509, Request};
use super::checks::{check_key_enabled, usable_version, VersionUse};
use super::key_transport::transport;
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::{Base64, OpContext, Operation, Password, WriteScope};
use crate::algorithms::pkcs12;
use crate::algorithms::public_key::{der_input, parts_from_spki, rsa_public_key};
use crate::algorithms::KeyUsage;
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::imports;
use crate::usage::UseKind;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportKey {
    pub key_id: String,
    /// Default: the primary version.
    #[serde(default)]
    pub key_version: Option<i64>,
    /// `WRAPPED` (default) or `PKCS12` (key pairs only).
    #[serde(default)]
    pub format: Option<String>,
    /// `WRAPPED`: `RSAES_OAEP_SHA_1` or `RSA_AES_KEY_WRAP_SHA_1`.
    #[serde(default)]
    pub wrapping_algorithm: Option<String>,
    /// `WRAPPED`: the recipient's RSA public key, SubjectPublicKeyInfo as PEM text or base64
    /// DER.
    #[serde(default)]
    pub public_key: Option<String>,
    /// `PKCS12`: the bundle's password, 8 to 1024 bytes.
    #[serde(default)]
    pub password: Option<Password>,
    /// `PKCS12`: the certificate to bundle (PEM or base64 DER X.509), of the version's public
    /// key. Default, for `sign-verify` keys: a self-signed one.
    #[serde(default)]
    pub certificate: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExportOutput {
    pub key_id: String,
    pub key_version: i64,
    pub key_spec: String,
    /// `RAW` (secret key bytes) or `PKCS8` (a key pair's private key, DER PrivateKeyInfo),
    /// each in `encrypted_key_material`; or `PKCS12` (the bundle in `pkcs12`).
    pub key_material_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrapping_algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypted_key_material: Option<Base64>,
    /// The PKCS#12 bundle (DER).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkcs12: Option<Base64>,
    /// The certificate in the bundle, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// The forms of export, as `format` names them and Cedar sees them (`context.export_format`).
pub const WRAPPED: &str = "WRAPPED";
pub const PKCS12: &str = "PKCS12";

/// The form asked for, with what it needs.
enum Form<'a> {
    Wrapped {
        algorithm: &'a str,
        public_key: &'a str,
    },
    Pkcs12 {
        password: &'a Password,
        certificate: Option<&'a str>,
    },
}

impl ExportKey {
    fn form(&self) -> Result<Form<'_>> {
        let only = |present: bool, field: &str, format: &str| {
            if present {
                Err(Error::validation(format!(
                    "{field} does not apply to format {format}"
                )))
            } else {
                Ok(())
            }
        };
        match self.format.as_deref() {
            None | Some(WRAPPED) => {
                only(self.password.is_some(), "password", "WRAPPED")?;
                only(self.certificate.is_some(), "certificate", "WRAPPED")?;
                let algorithm = self.wrapping_algorithm.as_deref().ok_or_else(|| {
                    Error::validation("wrapping_algorithm is required (format WRAPPED)")
                })?;
                let public_key = self
                    .public_key
                    .as_deref()
                    .ok_or_else(|| Error::validation("public_key is required (format WRAPPED)"))?;
                Ok(Form::Wrapped {
                    algorithm,
                    public_key,
                })
            }
            Some(PKCS12) => {
                only(
                    self.wrapping_algorithm.is_some(),
                    "wrapping_algorithm",
                    "PKCS12",
                )?;
                only(self.public_key.is_some(), "public_key", "PKCS12")?;
                let password = self
                    .password
                    .as_ref()
                    .ok_or_else(|| Error::validation("password is required (format PKCS12)"))?;
                Ok(Form::Pkcs12 {
                    password,
                    certificate: self.certificate.as_deref(),
                })
            }
            Some(_) => Err(Error::validation("format must be WRAPPED or PKCS12")),
        }
    }
}

fn certificate_der(text: &str) -> Result<Vec<u8>> {
    der_input("certificate", text, "CERTIFICATE", "X.509 certificate")
}

impl Operation for ExportKey {
    const NAME: &'static str = "export-key";
    const ACTION: &'static str = "ExportKey";
    type Output = ExportOutput;

    fn export_format(&self) -> Option<&'static str> {
        match self.form() {
            Ok(Form::Wrapped { .. }) => Some(WRAPPED),
            Ok(Form::Pkcs12 { .. }) => Some(PKCS12),
            Err(_) => None,
        }
    }

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if self.key_version.is_some_and(|v| v < 1) {
            return Err(Error::validation("key_version must be 1 or more"));
        }
        match self.form()? {
            Form::Wrapped {
                algorithm,
                public_key,
            } => {
                transport(algorithm)?;
                if public_key.len() > 16 * 1024 {
                    return Err(Error::validation("public_key is longer than 16 KiB"));
                }
                rsa_public_key("public_key", public_key, 2048)?;
            }
            Form::Pkcs12 {
                password,
                certificate,
            } => {
                password.validate("password")?;
                if let Some(text) = certificate {
                    if text.len() > 16 * 1024 {
                        return Err(Error::validation("certificate is longer than 16 KiB"));
                    }
                    pkcs12::certificate_spki("certificate", &certificate_der(text)?)?;
                }
            }
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
        let v = self.key_version.unwrap_or(key.primary_version);
        let (algorithm, public_key) = match self.form()? {
            Form::Wrapped {
                algorithm,
                public_key,
            } => (algorithm, public_key),
            Form::Pkcs12 {
                password,
                certificate,
            } => {
                if !spec.is_asymmetric() {
                    return Err(Error::validation(format!(
                        "a {} key has no certificate: PKCS12 is for key pairs; use format WRAPPED",
                        spec.as_str()
                    )));
                }
                // The slot first: a refusal (429) is then a request that did nothing, which
                // the pipeline counts in the principal's aggregated record rather than auditing
                // it alone; taken later, a certificate would have been signed and its use
                // counted for a request with no record of its own.
                let slot = ctx.state.password_slot()?;
                let version = usable_version(ctx, key, v, VersionUse::Open).await?;
                let public = ctx.state.keyring.public_key(&version, spec).await?;
                let certificate = match certificate {
                    Some(text) => {
                        let der = certificate_der(text)?;
                        let (_, parts) = parts_from_spki(&public.der)?;
                        if !pkcs12::certificate_matches("certificate", &der, spec, &parts)? {
                            return Err(Error::validation(format!(
                                "certificate is not of the public key of version {v} of key {}",
                                key.id
                            )));
                        }
                        der
                    }
                    None if key.usage == KeyUsage::SignVerify => {
                        let request = Request::SelfSigned {
                            key_id: key.id.clone(),
                        };
                        let pem = sign_x509(ctx, spec, version.clone(), request).await?;
                        ctx.state.usage.record(&key.id, v, UseKind::Sign);
                        der::pem::decode_vec(pem.as_bytes())
                            .map_err(|_| Error::Internal)?
                            .1
                    }
                    None => {
                        return Err(Error::validation(format!(
                            "key {} is a {} key and cannot sign its own certificate: pass one in certificate",
                            key.id, key.usage
                        )))
                    }
                };
                let private = ctx.state.keyring.reveal_private_key(&version).await?;
                let password = zeroize::Zeroizing::new(password.expose().to_owned());
                let (name, cert) = (key.id.clone(), certificate.clone());
                let bundle = tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    pkcs12::encode(&private, &cert, &name, &password)
                })
                .await
                .map_err(|_| Error::Internal)??;
                let pem =
                    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &certificate)
                        .map_err(|_| Error::Internal)?;
                return Ok(ExportOutput {
                    key_id: key.id.clone(),
                    key_version: v,
                    key_spec: spec.to_string(),
                    key_material_format: PKCS12,
                    wrapping_algorithm: None,
                    encrypted_key_material: None,
                    pkcs12: Some(Base64::new(bundle)),
                    certificate: Some(pem),
                });
            }
        };
        let transport = transport(algorithm)?;
        if spec.is_asymmetric() && !transport.with_aes_key_wrap {
            return Err(Error::validation(format!(
                "a {} private key is exported as PKCS#8, which RSA-OAEP alone cannot carry; use RSA_AES_KEY_WRAP_SHA_1",
                spec.as_str()
            )));
        }
        let version = usable_version(ctx, key, v, VersionUse::Open).await?;
        let (modulus, exponent) = rsa_public_key("public_key", public_key, 2048)?;
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
            wrapping_algorithm: Some(algorithm.to_string()),
            encrypted_key_material: Some(Base64::new(wrapped)),
            pkcs12: None,
            certificate: None,
        })
    }
}
