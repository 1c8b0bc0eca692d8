//! `get-public-key`: the public key of an asymmetric key's version (default: the primary)
//! as PEM, DER (SubjectPublicKeyInfo, base64) and JWK, with what the key may be used for —
//! everything a client needs to verify signatures or encrypt outside keyplane. With `format:
//! CERTIFICATE` (`sign-verify` keys), a self-signed X.509 certificate of the primary
//! version's public key instead, signed in the HSM by that version and counted as one of its
//! signatures (see `ops::certificates`). `GetPublicKey` alone authorizes it because nothing in
//! it is the caller's: subject and issuer are the key id, the serial random, the validity a
//! year from today. A certificate request with contents of the caller's choosing is
//! `generate-csr`, which its own action (`GenerateCsr`) governs.
//! Cedar: `GetPublicKey` on the key (a Cryptographic action: key grantees may read it).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::certificates::{sign_x509, Request};
use super::checks::{check_key_enabled, usable_version, version_to_open, VersionUse};
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::{Base64, OpContext, Operation, WriteScope};
use crate::algorithms::{KeyUsage, OaepAlgorithm};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::usage::UseKind;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetPublicKey {
    pub key_id: String,
    /// Default: the primary version.
    pub key_version: Option<u32>,
    /// `PEM`, `DER` or `JWK`; default: all three. `CERTIFICATE`: a self-signed X.509
    /// certificate (PEM) of a `sign-verify` key, alone.
    pub format: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GetPublicKeyOutput {
    pub key_id: String,
    pub key_version: i64,
    pub key_spec: String,
    pub key_usage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    /// DER SubjectPublicKeyInfo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub der: Option<Base64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwk: Option<serde_json::Value>,
    /// A self-signed X.509 certificate, PEM (`format: CERTIFICATE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_algorithms: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encryption_algorithms: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_agreement_algorithms: Vec<&'static str>,
}

impl Operation for GetPublicKey {
    const NAME: &'static str = "get-public-key";
    const ACTION: &'static str = "GetPublicKey";
    type Output = GetPublicKeyOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        match self.format.as_deref() {
            None | Some("PEM" | "DER" | "JWK" | "CERTIFICATE") => Ok(()),
            Some(_) => Err(Error::validation(
                "format must be PEM, DER, JWK or CERTIFICATE",
            )),
        }
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
        check_key_enabled(key)?;
        let spec = key.spec;
        if !spec.is_asymmetric() {
            return Err(Error::InvalidKeyUsage(format!(
                "key {} is a symmetric {} key: it has no public key",
                key.id, key.spec
            )));
        }
        let usage = key.usage;
        let version = version_to_open(ctx, key, self.key_version).await?;
        if self.format.as_deref() == Some("CERTIFICATE") {
            if usage != KeyUsage::SignVerify {
                return Err(Error::InvalidKeyUsage(format!(
                    "key {} is a {} key: only a sign-verify key can sign its own certificate",
                    key.id, usage
                )));
            }
            // Signed by the primary version (one that may still protect), counted as one of
            // its signatures.
            if self
                .key_version
                .is_some_and(|v| i64::from(v) != key.primary_version)
            {
                return Err(Error::validation(
                    "format CERTIFICATE is signed by the primary version: leave key_version out",
                ));
            }
            let version =
                usable_version(ctx, key, key.primary_version, VersionUse::Protect).await?;
            let number = version.version;
            let request = Request::SelfSigned {
                key_id: key.id.clone(),
            };
            let certificate = sign_x509(ctx, spec, version, request).await?;
            ctx.state.usage.record(&key.id, number, UseKind::Sign);
            return Ok(GetPublicKeyOutput {
                key_id: key.id.clone(),
                key_version: number,
                key_spec: key.spec.to_string(),
                key_usage: usage.to_string(),
                pem: None,
                der: None,
                jwk: None,
                certificate: Some(certificate),
                signing_algorithms: Vec::new(),
                encryption_algorithms: Vec::new(),
                key_agreement_algorithms: Vec::new(),
            });
        }
        let public = ctx.state.keyring.public_key(&version, spec).await?;
        if self.format.as_deref() == Some("JWK") && public.jwk.is_none() {
            return Err(Error::validation(format!(
                "a {} public key has no JWK form; ask for PEM or DER",
                spec
            )));
        }
        let want = |f: &str| self.format.as_deref().is_none_or(|w| w == f);
        let mut out = GetPublicKeyOutput {
            key_id: key.id.clone(),
            key_version: version.version,
            key_spec: key.spec.to_string(),
            key_usage: key.usage.to_string(),
            pem: want("PEM").then(|| public.pem.clone()),
            der: want("DER").then(|| Base64::new(public.der.clone())),
            jwk: want("JWK").then(|| public.jwk.clone()).flatten(),
            certificate: None,
            signing_algorithms: Vec::new(),
            encryption_algorithms: Vec::new(),
            key_agreement_algorithms: Vec::new(),
        };
        match usage {
            KeyUsage::SignVerify => {
                out.signing_algorithms = spec
                    .signing_algorithms()
                    .iter()
                    .map(|a| a.as_str())
                    .collect()
            }
            KeyUsage::EncryptDecrypt => {
                if let Some(h) = ctx.state.keyring.hsm().capabilities().oaep_hash {
                    out.encryption_algorithms = vec![OaepAlgorithm(h).as_str()];
                }
            }
            KeyUsage::KeyAgreement => {
                out.key_agreement_algorithms = spec.key_agreement_algorithm().into_iter().collect()
            }
            KeyUsage::GenerateVerifyMac => {}
        }
        Ok(out)
    }
}
