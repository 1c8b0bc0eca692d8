//! `generate-csr`: a PKCS#10 certificate signing request for a `sign-verify` key's primary
//! version, with the subject and subject alternative names the caller gives, signed in the
//! HSM by the key itself, for an external CA to certify (see `ops::certificates`). The answer
//! is PEM, which `openssl req -verify` checks. Cedar: `GenerateCsr` on the key (a
//! Cryptographic action: the key signs a structure whose contents the caller chose).

use rcgen::DnType;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::certificates::{sans, sign_x509, subject, Request};
use super::checks::{check_usage, usable_version, VersionUse};
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::{OpContext, Operation, WriteScope};
use crate::algorithms::KeyUsage;
use crate::authz::ResourceRef;
use crate::error::Result;
use crate::usage::UseKind;

/// A distinguished name; `common_name` is required, each part 1 to 64 characters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub common_name: String,
    pub organization: Option<String>,
    pub organizational_unit: Option<String>,
    pub locality: Option<String>,
    pub state: Option<String>,
    /// Two letters.
    pub country: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateCsr {
    pub key_id: String,
    pub subject: Subject,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub ip_addresses: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GenerateCsrOutput {
    pub key_id: String,
    pub key_version: i64,
    /// The request, PEM (`CERTIFICATE REQUEST`).
    pub csr: String,
}

impl GenerateCsr {
    fn request(&self) -> Result<Request> {
        let s = &self.subject;
        if s.country
            .as_deref()
            .is_some_and(|c| c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_uppercase()))
        {
            return Err(crate::error::Error::validation(
                "subject.country must be two capital letters (ISO 3166)",
            ));
        }
        let subject = subject(&[
            (
                DnType::CommonName,
                "common_name",
                Some(s.common_name.as_str()),
            ),
            (
                DnType::OrganizationName,
                "organization",
                s.organization.as_deref(),
            ),
            (
                DnType::OrganizationalUnitName,
                "organizational_unit",
                s.organizational_unit.as_deref(),
            ),
            (DnType::LocalityName, "locality", s.locality.as_deref()),
            (DnType::StateOrProvinceName, "state", s.state.as_deref()),
            (DnType::CountryName, "country", s.country.as_deref()),
        ])?;
        Ok(Request::Csr {
            subject,
            sans: sans(&self.dns_names, &self.ip_addresses)?,
        })
    }
}

impl Operation for GenerateCsr {
    const NAME: &'static str = "generate-csr";
    const ACTION: &'static str = "GenerateCsr";
    const KEY_USE: bool = true;
    type Output = GenerateCsrOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        self.request().map(|_| ())
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
        let spec = check_usage(key, KeyUsage::SignVerify, "generate-csr")?;
        let version = usable_version(ctx, key, key.primary_version, VersionUse::Protect).await?;
        let number = version.version;
        let csr = sign_x509(ctx, spec, version, self.request()?).await?;
        ctx.state.usage.record(&key.id, number, UseKind::Sign);
        Ok(GenerateCsrOutput {
            key_id: key.id.clone(),
            key_version: number,
            csr,
        })
    }
}
