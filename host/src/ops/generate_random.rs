//! `generate-random`: bytes from the HSM's RNG, up to [`MAX_BYTES`] (Vault Transit's limit;
//! the AWS front keeps AWS's 1024). Cedar: `GenerateRandom` on the caller's tenant.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Base64, OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};

/// The most one request draws: Vault Transit's `random` limit (128 KiB), so that scripts
/// that ask it for more than AWS's 1024 bytes work unchanged.
pub const MAX_BYTES: usize = 128 * 1024;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRandom {
    // 1 to 131072.
    pub number_of_bytes: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GenerateRandomOutput {
    pub random: Base64,
}

impl Operation for GenerateRandom {
    const NAME: &'static str = "generate-random";
    const ACTION: &'static str = "GenerateRandom";
    type Output = GenerateRandomOutput;

    fn validate(&self) -> Result<()> {
        if !(1..=MAX_BYTES).contains(&self.number_of_bytes) {
            return Err(Error::validation(format!(
                "number_of_bytes must be 1 to {MAX_BYTES}"
            )));
        }
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        Ok(ResourceRef::Tenant(ctx.principal.tenant_id.clone()))
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        _r: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        Ok(GenerateRandomOutput {
            random: Base64(ctx.state.keyring.random(self.number_of_bytes).await?),
        })
    }
}
