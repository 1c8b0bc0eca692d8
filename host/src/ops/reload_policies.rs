//! `reload-policies`: re-read the policy directory the node started with, validate it the
//! way the server does at start, and install it once the reload's audit record is durable
//! (a reload that cannot be recorded changes nothing). An invalid set is refused with the
//! reason (`InvalidPolicySet`, 400) and the set in force keeps serving. Cedar:
//! `ReloadPolicies` on the caller's tenant (an `Admin` action; the shipped policies allow the
//! operator only). SIGHUP does the same ([`reload_on_signal`]); the other nodes sharing the
//! database follow ([`reload`]).
//!
//! The audit record of a reload carries the hash of the set that authorized it (the old one);
//! the answer names both.
//!
//! Loading a policy set lives here, for start, reload and `keyplane policy validate` alike,
//! because a set is only valid if its schema declares the action of every operation.

use std::path::{Path, PathBuf};

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

/// Load and validate the policy set from where the node took it at start, without putting
/// it in force.
async fn load(state: &AppState) -> Result<LoadedPolicies, PolicyLoadError> {
    let dir = policies_dir(&state.config);
    tokio::task::spawn_blocking(move || load_policy_set(dir.as_deref()))
        .await
        .map_err(|e| PolicyLoadError(vec![format!("policy loader failed: {e}")]))?
}

/// Put `loaded` in force on this node and, if `announce` (the operation, not a SIGHUP, which
/// is one node's), tell the other nodes sharing the database to reload theirs (see
/// `server`). Called once the change's audit record is durable.
pub async fn install(state: &AppState, loaded: LoadedPolicies, announce: bool) {
    let previous = state.authz.replace(loaded);
    let current = state.authz.current();
    tracing::info!(source = %current.source, previous = %previous, hash = %current.hash, policies = current.descriptions.len(), "policy set reloaded");
    if !announce {
        return;
    }
    if let Err(e) = state.db.announce(&Notice::PoliciesReloaded).await {
        tracing::warn!(error = %e, "could not tell the other nodes to reload their policy sets");
    }
}

/// Reload the policy set, as a node does when another node reloaded (or when it may have
/// missed such a notice): a set that differs from the one in force is put in force once its
/// record (principal `keyplane:peer`, action `ReloadPolicies`, its hash) is durable here, as
/// every change of the set in force has its record (the announcing node's record names that
/// node's set, which this node's directory may not hold). An invalid set, or one whose record
/// cannot be written, is refused and the one in force keeps serving.
pub async fn reload(state: &AppState) -> Result<(), PolicyLoadError> {
    let loaded = load(state).await?;
    if loaded.hash == state.authz.current().hash {
        return Ok(());
    }
    let ev = crate::audit::AuditEvent {
        source: "local".into(),
        policy_hash: Some(loaded.hash.clone()),
        ..crate::audit::AuditEvent::system(
            "peer",
            "keyplane:peer",
            "-",
            "ReloadPolicies",
            format!("policies:{}", loaded.source),
        )
    };
    if super::audit_alone(state, &ev).await.is_err() {
        return Err(PolicyLoadError(vec![
            "the reload could not be recorded".into()
        ]));
    }
    let previous = state.authz.replace(loaded);
    tracing::info!(previous = %previous, hash = %state.authz.current().hash, "policy set reloaded as another node did");
    Ok(())
}

/// The SIGHUP reload: the set is loaded, its record (principal `keyplane:sighup`, action
/// `ReloadPolicies`, outcome `ok` or `InvalidPolicySet`, the hash of the set in force
/// afterwards) written, and only then, if that record is durable, the set put in force.
pub async fn reload_on_signal(state: &AppState) {
    let loaded = load(state).await;
    let (outcome, source, hash) = match &loaded {
        Ok(l) => ("ok".to_string(), l.source.clone(), l.hash.clone()),
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: policy reload refused; the previous set keeps serving");
            let current = state.authz.current();
            (
                Error::InvalidPolicySet(String::new()).code().to_string(),
                current.source.clone(),
                current.hash.clone(),
            )
        }
    };
    let ev = crate::audit::AuditEvent {
        outcome,
        source: "local".into(),
        policy_hash: Some(hash),
        ..crate::audit::AuditEvent::system(
            "sighup",
            "keyplane:sighup",
            "-",
            "ReloadPolicies",
            format!("policies:{source}"),
        )
    };
    if super::audit_alone(state, &ev).await.is_err() {
        tracing::error!(
            "SIGHUP: the policy reload could not be recorded; the previous set keeps serving"
        );
        return;
    }
    if let Ok(loaded) = loaded {
        install(state, loaded, false).await;
    }
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
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        match load(ctx.state).await {
            Ok(loaded) => {
                let out = ReloadOutput {
                    previous_policy_set: ctx.state.authz.current().hash.clone(),
                    policy_set: loaded.hash.clone(),
                    source: loaded.source.clone(),
                    policies: loaded.descriptions.keys().cloned().collect(),
                };
                // In force (here and, told then, on every node) once this request's record
                // is durable: a request that fails to record it changes nothing.
                scope.install_policies_after_commit(loaded);
                Ok(out)
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
