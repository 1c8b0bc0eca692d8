//! `describe-hsm`: what the token behind keyplane is and can do, as detected at start —
//! label, manufacturer, model, firmware, which of the mechanisms keyplane uses it lists and
//! which it lacks, the OAEP hash in use (`RSAES_OAEP_SHA_256` where the token accepts it,
//! else `RSAES_OAEP_SHA_1`), and the key specs it can therefore create.
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
    /// PKCS#11 sessions this node has open now (idle in its pool or in use).
    pub open_sessions: usize,
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
        let key_specs = KeySpec::all()
            .filter(|spec| {
                spec.usages()
                    .iter()
                    .any(|u| caps.missing_for(*spec, *u).is_empty())
            })
            .map(KeySpec::as_str)
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
            open_sessions: hsm.open_sessions(),
        })
    }
}
