//! `list-plugins`, `describe-plugin` and `delete-plugin` (refused while a key's rotation
//! schedule uses the plugin, while it is the tenant's storage backend, and while it holds the
//! blob of any key version: deleting it would lose those keys). Deleting the last plugin that
//! names a component deletes the component's bytes from the database in the same transaction.
//!
//! What else a deleted plugin leaves goes with it:
//! - the tenant's `kv` rows, in the same transaction, when the plugin is the tenant's last
//!   storage backend. The `kv` table is scoped to the tenant, not to a plugin (a tenant's
//!   storage backends share it, and a new upload of a backend finds its predecessor's rows),
//!   so while another of the tenant's backends remains, no row can be told to be this
//!   plugin's, and all stay;
//! - its directory (`filesystem`), once the deletion has committed, and on the node that took
//!   the request, the component's loaded entries and cached artifact unless another plugin
//!   names it (`PluginRuntime::after_deletion`); other nodes drop those at their next start.
//!
//! Cedar: `ListPlugins` on the tenant, `DescribePlugin` / `DeletePlugin` on the plugin.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::upload_plugin::PluginInfo;
use super::validate::validate_name;
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::{plugin_kv, plugins};

async fn resolve_plugin(ctx: &OpContext<'_>, name: &str) -> Result<ResourceRef> {
    let tenant = &ctx.principal.tenant_id;
    let row = plugins::get(&ctx.state.db, tenant, name)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "plugin",
            id: format!("{tenant}/{name}"),
        })?;
    Ok(ResourceRef::Plugin(Box::new(row)))
}

fn plugin_row(r: &ResourceRef) -> Result<&plugins::PluginRow> {
    match r {
        ResourceRef::Plugin(p) => Ok(p),
        _ => Err(Error::Internal),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListPlugins {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListPluginsOutput {
    pub plugins: Vec<PluginInfo>,
}

impl Operation for ListPlugins {
    const NAME: &'static str = "list-plugins";
    const ACTION: &'static str = "ListPlugins";
    type Output = ListPluginsOutput;

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        Ok(ResourceRef::Tenant(ctx.principal.tenant_id.clone()))
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        _r: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let rows = plugins::list(&ctx.state.db, &ctx.principal.tenant_id).await?;
        Ok(ListPluginsOutput {
            plugins: rows.iter().map(PluginInfo::from).collect(),
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribePlugin {
    pub name: String,
}

impl Operation for DescribePlugin {
    const NAME: &'static str = "describe-plugin";
    const ACTION: &'static str = "DescribePlugin";
    type Output = PluginInfo;

    fn validate(&self) -> Result<()> {
        validate_name("name", &self.name)
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_plugin(ctx, &self.name).await
    }

    async fn execute(
        self,
        _ctx: &OpContext<'_>,
        r: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        Ok(PluginInfo::from(plugin_row(&r)?))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeletePlugin {
    pub name: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletePluginOutput {
    pub deleted: String,
}

impl Operation for DeletePlugin {
    const NAME: &'static str = "delete-plugin";
    const ACTION: &'static str = "DeletePlugin";
    type Output = DeletePluginOutput;

    fn validate(&self) -> Result<()> {
        validate_name("name", &self.name)
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_plugin(ctx, &self.name).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let p = plugin_row(&r)?;
        let conn = scope.conn(ctx.state).await?;
        let gone = || {
            Error::InvalidState(format!(
                "plugin {} was deleted while this request ran",
                p.name
            ))
        };
        // First, so that the counts below include every version being committed into it.
        if !plugins::lock_for_deletion(conn, &p.tenant_id, &p.name).await? {
            return Err(gone());
        }
        let attached = plugins::attached_keys(conn, &p.tenant_id, &p.name).await?;
        if attached > 0 {
            return Err(Error::InvalidState(format!(
                "plugin {} is the rotation schedule of {attached} key(s); detach it first",
                p.name
            )));
        }
        if plugins::is_backend(conn, &p.tenant_id, &p.name).await? {
            return Err(Error::InvalidState(format!(
                "plugin {} is the tenant's storage backend; set-storage-backend to another plugin first",
                p.name
            )));
        }
        let blobs = plugins::blob_count(conn, &p.tenant_id, &p.name).await?;
        if blobs > 0 {
            return Err(Error::InvalidState(format!(
                "plugin {} still holds the blobs of {blobs} key version(s); it can be deleted once \
                 those keys are destroyed (their material lives only there)",
                p.name
            )));
        }
        if !plugins::delete(conn, &p.tenant_id, &p.name).await? {
            return Err(gone());
        }
        plugins::delete_component_if_unreferenced(conn, &p.sha256).await?;
        if p.world == crate::plugins::World::StorageBackend.as_str() {
            plugin_kv::delete_unreachable(conn, &p.tenant_id).await?;
        }
        scope.clean_up_plugin_after_commit(p.clone());
        Ok(DeletePluginOutput {
            deleted: p.name.clone(),
        })
    }
}
