//! `create-principal`: a user or service of a tenant, with a new bearer token returned once
//! (only its keyed hash is stored). Cedar: `CreatePrincipal` on the tenant.

use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::validate::validate_name;
use super::SecretText;
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::principals::{self, PrincipalRow};
use crate::store::{now_rfc3339, tenants};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePrincipal {
    /// Defaults to the caller's tenant.
    pub tenant_id: Option<String>,
    pub name: String,
    /// `admin` or `member` (default).
    #[serde(default = "member")]
    pub role: String,
    /// `user` (default) or `service`.
    #[serde(default = "user")]
    pub kind: String,
}

fn member() -> String {
    "member".into()
}
fn user() -> String {
    "user".into()
}

#[derive(Serialize, JsonSchema)]
pub struct CreatePrincipalOutput {
    pub principal_id: String,
    pub tenant_id: String,
    pub name: String,
    pub role: String,
    pub kind: String,
    /// The bearer token. Shown only in this answer.
    pub token: SecretText,
}

impl Operation for CreatePrincipal {
    const NAME: &'static str = "create-principal";
    const ACTION: &'static str = "CreatePrincipal";
    type Output = CreatePrincipalOutput;

    fn validate(&self) -> Result<()> {
        if let Some(t) = &self.tenant_id {
            validate_name("tenant_id", t)?;
        }
        validate_name("name", &self.name)?;
        if !matches!(self.role.as_str(), "admin" | "member") {
            return Err(Error::validation("role must be \"admin\" or \"member\""));
        }
        if !matches!(self.kind.as_str(), "user" | "service") {
            return Err(Error::validation("kind must be \"user\" or \"service\""));
        }
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        Ok(ResourceRef::Tenant(
            self.tenant_id
                .clone()
                .unwrap_or_else(|| ctx.principal.tenant_id.clone()),
        ))
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        resource: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let tenant = resource.tenant().to_string();
        let conn = scope.conn(ctx.state).await?;
        if !tenants::exists(conn, &tenant).await? {
            return Err(Error::NotFound {
                kind: "tenant",
                id: tenant,
            });
        }
        if principals::name_taken(conn, &tenant, &self.name).await? {
            return Err(Error::AlreadyExists {
                kind: "principal",
                id: format!("{tenant}/{}", self.name),
            });
        }
        let (token, hash) = ctx.state.tokens.issue()?;
        let row = PrincipalRow {
            id: format!("p-{}", uuid::Uuid::new_v4().simple()),
            tenant_id: tenant,
            name: self.name,
            kind: self.kind,
            role: self.role,
            operator: false,
            created_at: now_rfc3339(),
        };
        principals::insert(conn, &row, &hash).await?;
        Ok(CreatePrincipalOutput {
            principal_id: row.id,
            tenant_id: row.tenant_id,
            name: row.name,
            role: row.role,
            kind: row.kind,
            token: SecretText::new(token.expose_secret().to_string()),
        })
    }
}
