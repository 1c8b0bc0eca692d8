//! `set-storage-backend`: a tenant chooses the storage-backend plugin that holds the wrapped
//! blobs of its new envelope key versions (without one they stay inline in the database).
//! Existing versions keep the backend they were written to. Secrets in the configuration
//! (credentials) are sealed before they are stored and redacted in the answer (see
//! [`super::plugin_config`]). Cedar: `SetStorageBackend` on the caller's tenant.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::validate_name;
use super::plugin_config;
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::now_rfc3339;
use crate::store::plugins::{self, BackendRow};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetStorageBackend {
    pub plugin: String,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct SetStorageBackendOutput {
    pub tenant_id: String,
    pub plugin: String,
    pub plugin_sha256: String,
    pub config: BTreeMap<String, String>,
}

impl std::fmt::Debug for SetStorageBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetStorageBackend")
            .field("plugin", &self.plugin)
            .field("config", &plugin_config::redacted(&self.config))
            .finish()
    }
}

impl Operation for SetStorageBackend {
    const NAME: &'static str = "set-storage-backend";
    const ACTION: &'static str = "SetStorageBackend";
    type Output = SetStorageBackendOutput;

    fn validate(&self) -> Result<()> {
        validate_name("plugin", &self.plugin)?;
        plugin_config::check(&self.config)?;
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        Ok(ResourceRef::Tenant(ctx.principal.tenant_id.clone()))
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        _r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let tenant = ctx.principal.tenant_id.clone();
        let p = plugins::get(ctx.state.db.reader(), &tenant, &self.plugin)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "plugin",
                id: format!("{tenant}/{}", self.plugin),
            })?;
        if p.world != "storage-backend" {
            return Err(Error::validation(format!(
                "plugin {} is a {}, not a storage-backend",
                p.name, p.world
            )));
        }
        let stored =
            plugin_config::seal(&ctx.state.keyring, &tenant, &p.name, &self.config).await?;
        let row = BackendRow {
            tenant_id: tenant.clone(),
            plugin_name: p.name.clone(),
            config: stored,
            updated_at: now_rfc3339(),
        };
        plugins::set_storage_backend(scope.conn(ctx.state).await?, &row).await?;
        Ok(SetStorageBackendOutput {
            tenant_id: tenant,
            plugin: p.name,
            plugin_sha256: p.sha256,
            config: plugin_config::redacted(&self.config),
        })
    }
}
