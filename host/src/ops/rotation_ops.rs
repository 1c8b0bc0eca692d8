//! `set-rotation-schedule` (attach a rotation-schedule plugin and its configuration to a key)
//! and `preview-rotation` (invoke the plugin now and return its decision; the scheduler that
//! acts on decisions comes with key lifecycle). Cedar: `SetRotationSchedule` /
//! `PreviewRotation` on the key.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::automatic_rotation::check_renewable;
use super::checks::{changed_meanwhile, check_key_enabled};
use super::plugin_config;
use super::resolve::{key_row, resolve_key};
use super::validate::{validate_key_id, validate_name};
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::model::KeyState;
use crate::plugins::bindings::v0_1::rotation::keyplane::plugin::types::KeyInfo;
use crate::store::keys::KeyRow;
use crate::store::plugins::{self, PluginRow, ScheduleRow};
use crate::store::{keys, now_rfc3339};

async fn rotation_plugin(ctx: &OpContext<'_>, tenant: &str, name: &str) -> Result<PluginRow> {
    let p = plugins::get(&ctx.state.db, tenant, name)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "plugin",
            id: format!("{tenant}/{name}"),
        })?;
    if p.world != "rotation-schedule" {
        return Err(Error::validation(format!(
            "plugin {name} is a {}, not a rotation-schedule",
            p.world
        )));
    }
    Ok(p)
}

// A configuration may hold a secret (an API token): `plugin_config::ConfigMap` shows it
// redacted wherever the request is ever logged, and wipes it when dropped.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRotationSchedule {
    pub key_id: String,
    pub plugin: String,
    #[serde(default)]
    #[schemars(extend("default" = {}))]
    pub config: plugin_config::ConfigMap,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScheduleOutput {
    pub key_id: String,
    pub plugin: String,
    pub plugin_sha256: String,
    pub config: BTreeMap<String, String>,
}

impl Operation for SetRotationSchedule {
    const NAME: &'static str = "set-rotation-schedule";
    const ACTION: &'static str = "SetRotationSchedule";
    type Output = ScheduleOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        validate_name("plugin", &self.plugin)?;
        plugin_config::check(&self.config)
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        check_schedulable(ctx, key).await?;
        let p = rotation_plugin(ctx, &key.tenant_id, &self.plugin).await?;
        let stored =
            plugin_config::seal(&ctx.state.keyring, &key.tenant_id, &p.name, &self.config).await?;
        let row = ScheduleRow {
            key_id: key.id.clone(),
            tenant_id: key.tenant_id.clone(),
            plugin_name: p.name.clone(),
            config: stored,
            updated_at: now_rfc3339(),
            last_error: None,
        };
        let conn = scope.conn(ctx.state).await?;
        if !keys::hold_state(conn, &key.id, key.state).await? {
            return Err(changed_meanwhile("key", &key.id, key.state));
        }
        if !plugins::hold(conn, &p).await? {
            return Err(super::checks::plugin_changed(&p.name));
        }
        plugins::set_schedule(conn, &row).await?;
        Ok(ScheduleOutput {
            key_id: key.id.clone(),
            plugin: p.name,
            plugin_sha256: p.sha256,
            config: plugin_config::redacted(&self.config),
        })
    }
}

/// A key a rotation schedule may be set on: enabled or disabled (a disabled key is rotated
/// once enabled again), with material keyplane made. A schedule on a key being deleted
/// would be dropped by its destruction, or outlive it and keep its plugin in use.
async fn check_schedulable(ctx: &OpContext<'_>, key: &KeyRow) -> Result<()> {
    if key.state != KeyState::Disabled {
        check_key_enabled(key)?;
    }
    check_renewable(ctx, key, "a rotation schedule").await
}

/// Overrides of what the plugin is told about the key (to try boundary cases).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInfoOverride {
    pub created_at: Option<i64>,
    pub current_version: Option<u32>,
    pub version_count: Option<u32>,
    pub last_rotation: Option<i64>,
    pub encryptions_since_rotation: Option<u64>,
    pub decryptions_since_rotation: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRotation {
    pub key_id: String,
    /// Plugin to ask (default: the key's schedule).
    pub plugin: Option<String>,
    /// Configuration (default: the key's schedule's, when `plugin` is not given).
    pub config: Option<plugin_config::ConfigMap>,
    /// Evaluate as of this time (seconds since the epoch; default now).
    pub now: Option<i64>,
    #[serde(default)]
    pub key_info: KeyInfoOverride,
}

// By hand, as `SetRotationSchedule`'s.
impl std::fmt::Debug for PreviewRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviewRotation")
            .field("key_id", &self.key_id)
            .field("plugin", &self.plugin)
            .field("config", &self.config)
            .field("now", &self.now)
            .field("key_info", &self.key_info)
            .finish()
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PreviewOutput {
    pub key_id: String,
    pub plugin: String,
    pub plugin_sha256: String,
    pub now: i64,
    /// When the key should rotate (seconds since the epoch), or null.
    pub next_rotation: Option<i64>,
    /// Whether that time has come.
    pub due: bool,
}

fn rfc3339_secs(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp())
        .unwrap_or(0)
}

/// What a rotation schedule is told about a key: its age, versions, last rotation (the
/// primary version's creation, on the service clock) and the usage of its primary version
/// (counted since the last rotation), including counts not yet written.
pub async fn key_info(state: &crate::state::AppState, key: &KeyRow) -> Result<KeyInfo> {
    let versions = keys::versions(&state.db, &key.id).await?;
    let created = |v: &keys::KeyVersionRow| {
        v.created_unix
            .unwrap_or_else(|| rfc3339_secs(&v.created_at))
    };
    let primary = versions.iter().find(|v| v.version == key.primary_version);
    let pending = state.usage.pending(&key.id, key.primary_version);
    Ok(KeyInfo {
        key_id: key.id.clone(),
        key_spec: key.spec.to_string(),
        created_at: versions
            .iter()
            .find(|v| v.version == 1)
            .map(created)
            .unwrap_or_else(|| rfc3339_secs(&key.created_at)),
        current_version: key.primary_version as u32,
        version_count: versions.len() as u32,
        last_rotation: primary.filter(|v| v.version > 1).map(created),
        encryptions_since_rotation: primary.map_or(0, |v| v.encryptions + pending[0]).max(0) as u64,
        decryptions_since_rotation: primary.map_or(0, |v| v.decryptions + pending[1]).max(0) as u64,
    })
}

impl Operation for PreviewRotation {
    const NAME: &'static str = "preview-rotation";
    const ACTION: &'static str = "PreviewRotation";
    type Output = PreviewOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if let Some(p) = &self.plugin {
            validate_name("plugin", p)?;
        }
        if let Some(c) = &self.config {
            plugin_config::check(c)?;
        }
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        let (plugin_name, config): (String, plugin_config::PluginConfig) = match self.plugin {
            Some(p) => (p, self.config.unwrap_or_default().opened()),
            None => {
                let s = plugins::schedule(&ctx.state.db, &key.id)
                    .await?
                    .ok_or_else(|| {
                        Error::InvalidState(format!(
                            "key {} has no rotation schedule; name a plugin",
                            key.id
                        ))
                    })?;
                let config = match &self.config {
                    Some(c) => c.opened(),
                    None => {
                        plugin_config::open(
                            &ctx.state.keyring,
                            &key.tenant_id,
                            &s.plugin_name,
                            &s.config,
                        )
                        .await?
                    }
                };
                (s.plugin_name, config)
            }
        };
        let p = rotation_plugin(ctx, &key.tenant_id, &plugin_name).await?;
        let actual = key_info(ctx.state, key).await?;
        let o = self.key_info;
        let info = KeyInfo {
            key_id: actual.key_id,
            key_spec: actual.key_spec,
            created_at: o.created_at.unwrap_or(actual.created_at),
            current_version: o.current_version.unwrap_or(actual.current_version),
            version_count: o.version_count.unwrap_or(actual.version_count),
            last_rotation: o.last_rotation.or(actual.last_rotation),
            encryptions_since_rotation: o
                .encryptions_since_rotation
                .unwrap_or(actual.encryptions_since_rotation),
            decryptions_since_rotation: o
                .decryptions_since_rotation
                .unwrap_or(actual.decryptions_since_rotation),
        };
        let now = self.now.unwrap_or_else(|| ctx.state.clock.now());
        let next = ctx
            .state
            .plugins
            .next_rotation(&p.tenant_id, &p.sha256, &config, &info, now)
            .await?;
        Ok(PreviewOutput {
            key_id: key.id.clone(),
            plugin: p.name,
            plugin_sha256: p.sha256,
            now,
            next_rotation: next,
            due: next.is_some_and(|t| t <= now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schedule's configuration may hold a secret: the requests' `Debug` hides it.
    #[test]
    fn debug_hides_configuration_secrets() {
        let config =
            plugin_config::ConfigMap::from([("api_token".to_string(), "s3cret-value".to_string())]);
        let set = SetRotationSchedule {
            key_id: "k-1".into(),
            plugin: "p".into(),
            config: config.clone(),
        };
        let preview = PreviewRotation {
            key_id: "k-1".into(),
            plugin: None,
            config: Some(config),
            now: None,
            key_info: KeyInfoOverride::default(),
        };
        for shown in [format!("{set:?}"), format!("{preview:?}")] {
            assert!(!shown.contains("s3cret-value"), "{shown}");
            assert!(shown.contains("api_token"), "{shown}");
        }
    }
}
