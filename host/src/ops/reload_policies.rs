//! `reload-policies`: re-read the policy directory the node started with, validate it the
//! way the server does at start, and install it. An invalid set is refused with the reason
//! (`InvalidPolicySet`, 400) and the set in force keeps serving. Cedar: `ReloadPolicies` on
//! the caller's tenant (an `Admin` action; the shipped policies allow the operator only).
//! SIGHUP does the same (see `server`).
//!
//! The audit record of a reload carries the hash of the set that authorized it (the old one);
//! the answer names both.
//!
//! Loading a policy set lives here, for start, reload and `keyplane policy validate` alike,
//! because a set is only valid if its schema declares the action of every operation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{OpContext, Operation, WriteScope};
use crate::authz::{load_policies, LoadedPolicies, PolicyLoadError, ResourceRef};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::Notice;

/// Which policy directory to use: configured, `./policies`, or the embedded copy.
pub fn policies_dir(config: &Config) -> Option<PathBuf> {
    match &config.policies_dir {
        Some(d) => Some(d.clone()),
        None => Some(PathBuf::from("policies")).filter(|d| d.join("schema.cedarschema").exists()),
    }
}

/// Load and strictly validate a policy set from `dir` (the embedded copy when `None`), and
/// check the schema declares the Cedar action of every operation and puts every action a
/// grant may name (`grants::GRANTABLE`) in the `Grantable` group. The one code path for the
/// set the server starts with, every reload (`reload-policies`, SIGHUP) and
/// `keyplane policy validate`.
pub fn load_policy_set(dir: Option<&Path>) -> Result<LoadedPolicies, PolicyLoadError> {
    let loaded = load_policies(dir)?;
    let declared: Vec<String> = loaded
        .schema
        .actions()
        .map(|a| a.id().unescaped().to_string())
        .collect();
    let missing: Vec<&str> = super::ACTIONS
        .iter()
        .copied()
        .filter(|a| !declared.iter().any(|d| d == a))
        .collect();
    if !missing.is_empty() {
        return Err(PolicyLoadError(vec![format!(
            "schema.cedarschema does not declare the actions {}",
            missing.join(", ")
        )]));
    }
    let not_grantable = not_in_group(&loaded, "Grantable", super::grants::GRANTABLE)?;
    if !not_grantable.is_empty() {
        return Err(PolicyLoadError(vec![format!(
            "schema.cedarschema does not put the grantable actions {} in the Grantable group",
            not_grantable.join(", ")
        )]));
    }
    Ok(loaded)
}

/// The `actions` the schema of `loaded` does not put in action group `group`.
fn not_in_group<'a>(
    loaded: &LoadedPolicies,
    group: &str,
    actions: &[&'a str],
) -> Result<Vec<&'a str>, PolicyLoadError> {
    let entities = loaded
        .schema
        .action_entities()
        .map_err(|e| PolicyLoadError(vec![format!("the schema's actions: {e}")]))?;
    let uid = |a: &str| {
        crate::authz::literal::parse_uid(&format!("Action::{a:?}"))
            .map_err(|e| PolicyLoadError(vec![e]))
    };
    let group = uid(group)?;
    let mut missing = Vec::new();
    for a in actions {
        if !entities.is_ancestor_of(&group, &uid(a)?) {
            missing.push(*a);
        }
    }
    Ok(missing)
}

/// Load and strictly validate the policy set (before anything else is touched).
pub fn load_at_start(config: &Config) -> anyhow::Result<LoadedPolicies> {
    let loaded = load_policy_set(policies_dir(config).as_deref())?;
    tracing::info!(source = %loaded.source, hash = %loaded.hash, policies = loaded.descriptions.len(), "policy set loaded");
    Ok(loaded)
}

/// Reload the policy set from where the node took it at start and install it if it loads;
/// an invalid set is refused and the one in force keeps serving. Returns (previous hash,
/// new set).
pub async fn reload(state: &AppState) -> Result<(String, Arc<LoadedPolicies>), PolicyLoadError> {
    let dir = policies_dir(&state.config);
    let loaded = tokio::task::spawn_blocking(move || load_policy_set(dir.as_deref()))
        .await
        .map_err(|e| PolicyLoadError(vec![format!("policy loader failed: {e}")]))??;
    let previous = state.authz.replace(loaded);
    let current = state.authz.current();
    tracing::info!(source = %current.source, previous = %previous, hash = %current.hash, policies = current.descriptions.len(), "policy set reloaded");
    Ok((previous, current))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadPolicies {}

#[derive(Debug, Serialize, JsonSchema)]
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
        match reload(ctx.state).await {
            Ok((previous, current)) => {
                // Every node sharing the database reloads too (see `server`).
                if let Err(e) = ctx.state.db.announce(&Notice::PoliciesReloaded).await {
                    tracing::warn!(error = %e, "could not tell the other nodes to reload their policy sets");
                }
                Ok(ReloadOutput {
                    previous_policy_set: previous,
                    policy_set: current.hash.clone(),
                    source: current.source.clone(),
                    policies: current.descriptions.keys().cloned().collect(),
                })
            }
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
