//! `describe-hsm`: what the token behind keyplane is and can do, as detected at start —
//! label, manufacturer, model, firmware, which of the mechanisms keyplane uses it lists and
//! which it lacks, the OAEP hash in use (`RSAES_OAEP_SHA_256` where the token accepts it,
//! else `RSAES_OAEP_SHA_1`), the module as keyplane knows it with its quirks (`hsm::quirks`),
//! how the node seals secrets (`hsm::sealing`), and the resulting table: for each key spec,
//! the usages it can have with `hsm` protection and whether `envelope` protection is there.
//!
//! Readable by every principal for its own tenant (Cedar: `DescribeHsm` on the caller's
//! tenant, policy `tenant-members-describe-hsm`): clients need the OAEP hash to encrypt
//! for RSA keys, and the answer holds no secret and nothing about other tenants.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{OpContext, Operation, WriteScope};
use crate::algorithms::{KeySpec, OaepAlgorithm};
use crate::authz::ResourceRef;
use crate::error::Result;
use crate::model::Protection;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeHsm {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DescribeHsmOutput {
    pub token_label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial_number: String,
    pub firmware_version: String,
    pub mechanisms: Vec<&'static str>,
    pub missing_mechanisms: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rsa_encryption_algorithm: Option<&'static str>,
    pub key_specs: Vec<&'static str>,
    /// The PKCS#11 module as keyplane knows it: `SoftHSM2`, `tpm2-pkcs11` or `other`.
    pub module: &'static str,
    /// What the module does differently from the standard, as keyplane works around it.
    pub quirks: Vec<&'static str>,
    /// How secrets (node secrets, tenant KEKs, envelope material) are sealed.
    pub sealing: &'static str,
    /// For each key spec: what it can be made with on this token.
    pub support: Vec<SpecSupport>,
    /// PKCS#11 sessions this node has open now (idle in its pool or in use).
    pub open_sessions: usize,
}

/// What a key spec can be made with on this token.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SpecSupport {
    pub key_spec: &'static str,
    /// The usages a key of this spec can have with `hsm` protection.
    pub hsm: Vec<&'static str>,
    /// Whether it can have `envelope` protection.
    pub envelope: bool,
}

impl Operation for DescribeHsm {
    const NAME: &'static str = "describe-hsm";
    const ACTION: &'static str = "DescribeHsm";
    type Output = DescribeHsmOutput;

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        Ok(ResourceRef::Tenant(ctx.principal.tenant_id.clone()))
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        _r: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let hsm = ctx.state.keyring.hsm();
        let caps = hsm.capabilities();
        let (mechanisms, missing_mechanisms) = caps.mechanism_names();
        let support: Vec<SpecSupport> = KeySpec::all()
            .map(|spec| SpecSupport {
                key_spec: spec.as_str(),
                hsm: spec
                    .usages()
                    .iter()
                    .filter(|u| {
                        spec.allows_hsm() && caps.missing_for(spec, **u, Protection::Hsm).is_empty()
                    })
                    .map(|u| u.as_str())
                    .collect(),
                envelope: spec.allows_envelope(),
            })
            .collect();
        let key_specs = support
            .iter()
            .filter(|s| s.envelope || !s.hsm.is_empty())
            .map(|s| s.key_spec)
            .collect();
        Ok(DescribeHsmOutput {
            token_label: hsm.token_label().to_string(),
            manufacturer: caps.manufacturer.clone(),
            model: caps.model.clone(),
            serial_number: caps.serial_number.clone(),
            firmware_version: caps.firmware_version.clone(),
            mechanisms,
            missing_mechanisms,
            rsa_encryption_algorithm: caps.oaep_hash.map(|h| OaepAlgorithm(h).as_str()),
            key_specs,
            module: caps.module.name(),
            quirks: caps.quirks().names(),
            sealing: caps.scheme.name(),
            support,
            open_sessions: hsm.open_sessions(),
        })
    }
}
