//! `get-caller-identity`: who the caller is (principal id, tenant, name, role, kind), as
//! AWS STS `GetCallerIdentity` answers it; what a second admin needs to approve the caller's
//! deletion request (`approve-key-deletion` names the requester). Cedar: `GetCallerIdentity`
//! on the caller's tenant.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::Result;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetCallerIdentity {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CallerIdentity {
    pub principal_id: String,
    pub tenant_id: String,
    pub name: String,
    pub role: String,
    pub kind: String,
    pub operator: bool,
}

impl Operation for GetCallerIdentity {
    const NAME: &'static str = "get-caller-identity";
    const ACTION: &'static str = "GetCallerIdentity";
    type Output = CallerIdentity;

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        Ok(ResourceRef::Tenant(ctx.principal.tenant_id.clone()))
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        _r: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let p = ctx.principal;
        Ok(CallerIdentity {
            principal_id: p.id.clone(),
            tenant_id: p.tenant_id.clone(),
            name: p.name.clone(),
            role: p.role.clone(),
            kind: p.kind.clone(),
            operator: p.operator,
        })
    }
}
