//! `upload-plugin`: a tenant uploads a WebAssembly component for a world. It is size-limited,
//! compiled once, type-checked against the world with only the granted imports (refused with
//! the reason otherwise), and audited with its SHA-256. The component's bytes go to the
//! database (`plugin_components`, keyed by SHA-256, shared by plugins with the same bytes) in
//! the transaction that inserts the plugin row, so an upload that fails leaves neither, and
//! every node sharing the database can run the plugin; the node that takes the upload holds
//! what it compiled for the plugin's first call, which caches the precompiled artifact (see
//! `crate::plugins`: compilations are bounded per node, and bytes compiled already are not
//! compiled again). An upload refused after it was compiled (a capability not granted, its
//! name taken meanwhile, a failed insert) drops what it compiled, so it leaves nothing behind;
//! after a failed commit, the held entry is pushed out by later uploads, and was never
//! written to disk. Cedar: `UploadPlugin` on the caller's tenant.

use ring::digest;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::validate_name;
use super::{Base64, OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::plugins::http_grant::{normalise_destination, CAP_HTTP_PREFIX};
use crate::plugins::{World, CAP_FILESYSTEM};
use crate::store::now_rfc3339;
use crate::store::plugins::{self, PluginRow};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadPlugin {
    pub name: String,
    /// `rotation-schedule` or `storage-backend`.
    pub world: String,
    /// The component, base64.
    pub component: Base64,
    /// Capabilities beyond the world's defaults (storage backends only): `filesystem` (a
    /// directory of its own at `/data`, if the operator allows it) and `http:<host>:<port>`
    /// (outbound HTTP to that destination, if the operator's `plugins.http_hosts` lists it).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// A plugin as answers show it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PluginInfo {
    pub name: String,
    pub tenant_id: String,
    pub world: String,
    pub sha256: String,
    pub size: i64,
    pub imports: Vec<String>,
    pub capabilities: Vec<String>,
    pub created_at: String,
    pub created_by: String,
}

impl From<&PluginRow> for PluginInfo {
    fn from(r: &PluginRow) -> Self {
        PluginInfo {
            name: r.name.clone(),
            tenant_id: r.tenant_id.clone(),
            world: r.world.clone(),
            sha256: r.sha256.clone(),
            size: r.size,
            imports: serde_json::from_str(&r.imports).unwrap_or_default(),
            capabilities: serde_json::from_str(&r.capabilities).unwrap_or_default(),
            created_at: r.created_at.clone(),
            created_by: r.created_by.clone(),
        }
    }
}

impl Operation for UploadPlugin {
    const NAME: &'static str = "upload-plugin";
    const ACTION: &'static str = "UploadPlugin";
    type Output = PluginInfo;

    fn validate(&self) -> Result<()> {
        validate_name("name", &self.name)?;
        if World::parse(&self.world).is_none() {
            return Err(Error::validation(
                "world must be \"rotation-schedule\" or \"storage-backend\"",
            ));
        }
        for c in &self.capabilities {
            if let Some(dest) = c.strip_prefix(CAP_HTTP_PREFIX) {
                if normalise_destination(dest).is_none() {
                    return Err(Error::validation(format!(
                        "capability {c:?}: expected http:<host>:<port>"
                    )));
                }
            } else if c != CAP_FILESYSTEM {
                return Err(Error::validation(format!(
                    "unknown capability {c:?} (known: filesystem, http:<host>:<port>)"
                )));
            }
            if self.world != "storage-backend" {
                return Err(Error::validation(format!(
                    "only storage backends can be granted capabilities ({c:?})"
                )));
            }
        }
        if self.capabilities.len() > 16 {
            return Err(Error::validation("at most 16 capabilities"));
        }
        if self.component.is_empty() {
            return Err(Error::validation("component is empty"));
        }
        Ok(())
    }

    fn audit_resource(&self, resource: &ResourceRef) -> String {
        let sha = hex::encode(digest::digest(&digest::SHA256, &self.component.0));
        format!(
            "Keyplane::Plugin::\"{}/{}\" sha256:{sha}",
            resource.tenant(),
            self.name
        )
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
        if plugins::get(&ctx.state.db, &tenant, &self.name)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists {
                kind: "plugin",
                id: format!("{tenant}/{}", self.name),
            });
        }
        let world = World::parse(&self.world).ok_or(Error::Internal)?;
        if self.capabilities.iter().any(|c| c == CAP_FILESYSTEM)
            && !ctx.state.config.plugins.allow_filesystem
        {
            return Err(Error::InvalidPlugin(
                "the operator does not allow the filesystem capability".into(),
            ));
        }
        let operator_hosts: Vec<String> = ctx
            .state
            .config
            .plugins
            .http_hosts
            .iter()
            .filter_map(|h| normalise_destination(h))
            .collect();
        let mut capabilities = Vec::new();
        for c in &self.capabilities {
            let c = match c.strip_prefix(CAP_HTTP_PREFIX) {
                Some(dest) => {
                    let dest = normalise_destination(dest).ok_or(Error::Internal)?;
                    if !operator_hosts.contains(&dest) {
                        return Err(Error::InvalidPlugin(format!(
                            "the operator does not allow outbound HTTP to {dest} \
                             (plugins.http_hosts)"
                        )));
                    }
                    format!("{CAP_HTTP_PREFIX}{dest}")
                }
                None => c.clone(),
            };
            if !capabilities.contains(&c) {
                capabilities.push(c);
            }
        }
        let runtime = ctx.state.plugins.clone();
        let bytes = std::sync::Arc::new(self.component.0);
        let span = tracing::Span::current();
        let component = bytes.clone();
        let inspected = tokio::task::spawn_blocking(move || {
            span.in_scope(|| runtime.install(&component, world))
        })
        .await
        .map_err(|_| Error::Internal)??;
        crate::pause::point("upload:installed", &self.name).await;
        // Refused from here on, the upload drops what it compiled (`discard_upload`).
        let sha256 = inspected.sha256.clone();
        let stored = async {
            let wants_http = inspected
                .imports
                .iter()
                .any(|i| i.starts_with("wasi:http/"));
            let granted_http = capabilities.iter().any(|c| c.starts_with(CAP_HTTP_PREFIX));
            if wants_http && !granted_http {
                return Err(Error::InvalidPlugin(
                    "the component imports wasi:http but no http:<host>:<port> capability was \
                     granted"
                        .into(),
                ));
            }
            let row = PluginRow {
                tenant_id: tenant,
                name: self.name,
                sha256: inspected.sha256,
                world: world.as_str().into(),
                size: inspected.size as i64,
                imports: serde_json::to_string(&inspected.imports).map_err(|_| Error::Internal)?,
                created_at: now_rfc3339(),
                created_by: ctx.principal.id.clone(),
                capabilities: serde_json::to_string(&capabilities).map_err(|_| Error::Internal)?,
            };
            let conn = scope.conn(ctx.state).await?;
            plugins::insert_component(conn, &row.sha256, &bytes[..], &row.created_at).await?;
            plugins::insert(conn, &row).await?;
            Ok(row)
        }
        .await;
        let row = match stored {
            Ok(row) => row,
            Err(e) => {
                ctx.state.plugins.discard_upload(&sha256, world);
                return Err(e);
            }
        };
        Ok(PluginInfo::from(&row))
    }
}
