//! `create-tenant`: a new tenant with its own KEK (generated in the HSM, stored root-wrapped)
//! and its 12-digit account id (the caller's choice, or random), which AWS-style ARNs name it
//! by. Cedar: `CreateTenant` on `Tenant::"<new id>"`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::validate_name;
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::{now_rfc3339, tenants};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub tenant_id: String,
    /// 12 decimal digits, unique; default: random.
    pub account_id: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CreateTenantOutput {
    pub tenant_id: String,
    pub account_id: String,
    pub created_at: String,
}

impl Operation for CreateTenant {
    const NAME: &'static str = "create-tenant";
    const ACTION: &'static str = "CreateTenant";
    type Output = CreateTenantOutput;

    /// The tenant it names is one to be made, not one to hide: a refusal says so.
    fn unseen(&self) -> Option<Error> {
        Some(Error::AccessDenied {
            action: Self::ACTION.into(),
            resource: format!("Keyplane::Tenant::{:?}", self.tenant_id),
        })
    }

    fn validate(&self) -> Result<()> {
        validate_name("tenant_id", &self.tenant_id)?;
        match &self.account_id {
            Some(a) if !tenants::is_account_id(a) => {
                Err(Error::validation("account_id must be 12 decimal digits"))
            }
            _ => Ok(()),
        }
    }

    async fn resolve(&self, _ctx: &OpContext<'_>) -> Result<ResourceRef> {
        Ok(ResourceRef::Tenant(self.tenant_id.clone()))
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        _r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        // Checked (and the KEK made in the HSM) before the write transaction opens, so HSM
        // latency never holds the writer; the insert below still fails on a duplicate.
        if tenants::get(&ctx.state.db, &self.tenant_id)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists {
                kind: "tenant",
                id: self.tenant_id,
            });
        }
        let account_id = match self.account_id {
            Some(a) => a,
            None => tenants::account_id_from(&ctx.state.keyring.random(8).await?),
        };
        let (kek_wrapped, made) = ctx.state.keyring.create_tenant_kek(&self.tenant_id).await?;
        scope.created_kek(made);
        crate::pause::point("create-tenant:kek-made", &self.tenant_id).await;
        let row = tenants::TenantRow {
            id: self.tenant_id.clone(),
            created_at: now_rfc3339(),
            kek_wrapped,
            account_id,
        };
        let conn = scope.conn(ctx.state).await?;
        if tenants::exists(conn, &row.id).await? {
            return Err(Error::AlreadyExists {
                kind: "tenant",
                id: row.id,
            });
        }
        tenants::insert(conn, &row).await?;
        Ok(CreateTenantOutput {
            tenant_id: row.id,
            account_id: row.account_id,
            created_at: row.created_at,
        })
    }
}
