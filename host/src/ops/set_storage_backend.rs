//! `set-storage-backend`: a tenant chooses the storage-backend plugin that holds the wrapped
//! blobs of its new envelope key versions (without one they stay inline in the database).
//! Existing versions keep the backend they were written to, reached with the configuration
//! last given to that plugin (kept per plugin, see `store::plugins::backend_config`). So
//! that it keeps reaching them, a new configuration of a plugin that holds blobs must reach
//! them: a few of them are read with it first, and if one is not found (a new bucket, a new
//! directory, whatever the plugin calls its location) or cannot be read, the change is
//! refused (rotated credentials that reach the same place pass). Upload the component under
//! another name to store new blobs elsewhere. Any new configuration must also reach its
//! store: a blob that does not exist is read with it first, so a configuration the plugin
//! refuses (a bad endpoint, credentials the store rejects) is refused here (400, with the
//! plugin's reason), not found out by every later key creation as a server error. Every
//! value but a short list of plain ones is sealed before it is stored and redacted in the
//! answer (see [`super::plugin_config`]).
//! Cedar: `SetStorageBackend` on the caller's tenant.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::plugin_config;
use super::validate::validate_name;
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::plugins::{StorageOp, StorageReply};
use crate::store::keys;
use crate::store::now_rfc3339;
use crate::store::plugins::{self, BackendRow};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStorageBackend {
    pub plugin: String,
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub config: plugin_config::ConfigMap,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SetStorageBackendOutput {
    pub tenant_id: String,
    pub plugin: String,
    pub plugin_sha256: String,
    pub config: BTreeMap<String, String>,
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
        let p = plugins::get(&ctx.state.db, &tenant, &self.plugin)
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
        // Before the transaction opens: plugin calls may need the writer (the kv capability).
        let config = self.config.opened();
        let held = keys::sample_blobs(&ctx.state.db, &tenant, &p.name, 3).await?;
        for v in &held {
            let op = StorageOp::Get { name: v.blob() };
            let reached = match ctx.state.plugins.storage(&p, &config, op).await {
                Ok(StorageReply::Blob(Some(_))) => Ok(()),
                Ok(_) => Err("it finds no blob there".to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(why) = reached {
                return Err(Error::InvalidState(format!(
                    "plugin {} holds the blobs of existing key versions, and the new configuration \
                     does not reach the blob of version {} of key {} ({why}); only a configuration \
                     that reaches them may replace the current one (upload the component under \
                     another name to store new blobs elsewhere)",
                    p.name, v.version, v.key_id
                )));
            }
        }
        probe(ctx, &p, &config).await?;
        crate::pause::point("set-storage-backend:sampled", &p.name).await;
        let conn = scope.conn(ctx.state).await?;
        if !plugins::hold(conn, &p).await? {
            return Err(super::checks::plugin_changed(&p.name));
        }
        let row = BackendRow {
            tenant_id: tenant.clone(),
            plugin_name: p.name.clone(),
            config: stored,
            updated_at: now_rfc3339(),
        };
        plugins::set_storage_backend(conn, &row).await?;
        // A version that put its blob with the old configuration commits only while it is the
        // plugin's (`keys::check_blob_store`), but one may have committed since the sample
        // (before this upsert; on PostgreSQL the upsert waits for one committing, whose
        // version this count then sees): with none sampled, nothing showed that the new
        // configuration reaches it.
        if held.is_empty() && plugins::blob_count(conn, &tenant, &p.name).await? > 0 {
            return Err(Error::InvalidState(format!(
                "a key version stored its blob in plugin {} while this request ran; try again",
                p.name
            )));
        }
        Ok(SetStorageBackendOutput {
            tenant_id: tenant,
            plugin: p.name,
            plugin_sha256: p.sha256,
            config: plugin_config::redacted(&self.config),
        })
    }
}

/// Read a blob that does not exist with the new configuration: a configuration the plugin
/// refuses (a bad endpoint, credentials the store rejects, a destination not granted or not
/// answering) is refused here, with the plugin's reason, rather than accepted and then
/// failing every key creation as a server error. A read changes nothing, so nothing is left
/// behind whatever happens; that the credentials may also write is found out by the first
/// key creation.
async fn probe(
    ctx: &OpContext<'_>,
    plugin: &plugins::PluginRow,
    config: &plugin_config::PluginConfig,
) -> Result<()> {
    let name = super::storage::new_blob_name("probe", 0);
    match ctx
        .state
        .plugins
        .storage(plugin, config, StorageOp::Get { name })
        .await
    {
        Ok(StorageReply::Blob(_)) => Ok(()),
        Ok(_) => Err(Error::validation(format!(
            "plugin {} answered a read with something else than a blob",
            plugin.name
        ))),
        // What the plugin answered with this configuration is the caller's to mend; the
        // host's own refusals (plugin work past the tenant's budget, an outage) are not.
        Err(e @ (Error::PluginFailed { .. } | Error::PluginTimeout { .. })) => {
            Err(Error::validation(format!(
                "plugin {} cannot reach its store with this configuration ({e})",
                plugin.name
            )))
        }
        Err(e) => Err(e),
    }
}
