//! `reload-policies`: re-read the policy directory the node started with, validate it the
//! way the server does at start, and install it. An invalid set is refused with the reason
//! (`InvalidPolicySet`, 400) and the set in force keeps serving. Cedar: `ReloadPolicies` on
//! the caller's tenant (an `Admin` action; the shipped policies allow the operator only).
//! SIGHUP does the same (see `server`).
//!
//! The audit record of a reload carries the hash of the set that authorized it (the old one);
//! the answer names both.

use serde::{Deserialize, Serialize};

use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadPolicies {}

#[derive(Debug, Serialize)]
pub struct ReloadOutput {
    /// SHA-256 of the set that was in force.
    pub previous_policy_set: String,
    /// SHA-256 of the set now in force.
    pub policy_set: String,
    /// Where it was read from ("embedded" or a directory).
    pub source: String,
    /// Ids of the policies now in force.
    pub policies: Vec<String>,
}

impl Operation for ReloadPolicies {
    const NAME: &'static str = "reload-policies";
    const ACTION: &'static str = "ReloadPolicies";
    type Output = ReloadOutput;

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        Ok(ResourceRef::Tenant(ctx.principal.tenant_id.clone()))
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        _r: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        match crate::bootstrap::reload_policies(ctx.state).await {
            Ok((previous, current)) => Ok(ReloadOutput {
                previous_policy_set: previous,
                policy_set: current.hash.clone(),
                source: current.source.clone(),
                policies: current.descriptions.keys().cloned().collect(),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "policy reload refused; the previous set keeps serving");
                Err(Error::InvalidPolicySet(format!(
                    "{e}\nthe policy set in force ({}) keeps serving",
                    ctx.state.authz.current().hash
                )))
            }
        }
    }
}
