//! Authorization with Cedar: loading and strictly validating the policy set, and deciding
//! requests. Deny by default: a request is allowed only when some `permit` applies and no
//! `forbid` does; any evaluation error counts against it (Cedar itself skips a policy whose
//! condition errors, which would let an erroring `forbid` guard fall silent: keyplane denies
//! instead, fail-closed).
//!
//! The live set can be replaced while the node serves ([`Authz::replace`], used by the
//! `reload-policies` operation and SIGHUP); a set that does not load is never installed.
//! Each [`Decision`] names the hash of the set that made it, so a decision and its audit
//! record always agree on which set that was, even across a concurrent reload.
//!
//! Policies carry `@id` (their id in decisions and audit records) and `@description`.
//! Entities are built per request from the database rows the operation resolved
//! (see [`entities`]).

pub mod entities;
pub mod literal;
mod loader;

use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid, Request, Schema,
};

use crate::error::{Error, Result};
pub use entities::{AuthzRequest, ResourceRef};
pub use loader::{load_policies, LoadedPolicies, PolicyLoadError};

/// The outcome of an authorization check.
#[derive(Debug, Clone)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    /// Evaluation errors (they never allow anything).
    pub errors: Vec<String>,
    /// SHA-256 (hex) of the policy set that decided.
    pub policy_set: String,
}

/// The live policy set and its schema.
pub struct Authz {
    current: RwLock<Arc<LoadedPolicies>>,
    authorizer: Authorizer,
}

impl Authz {
    pub fn new(loaded: LoadedPolicies) -> Self {
        Authz {
            current: RwLock::new(Arc::new(loaded)),
            authorizer: Authorizer::new(),
        }
    }

    /// The policy set in force.
    pub fn current(&self) -> Arc<LoadedPolicies> {
        self.current
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Install a new (already validated) set; returns the hash of the one it replaces.
    pub fn replace(&self, loaded: LoadedPolicies) -> String {
        let new = Arc::new(loaded);
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, new).hash.clone()
    }

    /// Decide a request.
    pub fn authorize(&self, req: &AuthzRequest<'_>) -> Result<Decision> {
        let loaded = self.current();
        let (request, entities) = build(&loaded.schema, req)?;
        Ok(decide(&self.authorizer, &loaded, &request, &entities))
    }
}

/// Evaluate one request against `loaded` (the server, `policy explain`, `policy test` and
/// `policy who-can` all decide through here).
pub fn decide(
    authorizer: &Authorizer,
    loaded: &LoadedPolicies,
    request: &Request,
    entities: &Entities,
) -> Decision {
    let response = authorizer.is_authorized(request, &loaded.policies, entities);
    let errors: Vec<String> = response
        .diagnostics()
        .errors()
        .map(|e| e.to_string())
        .collect();
    Decision {
        allowed: response.decision() == CedarDecision::Allow && errors.is_empty(),
        policies: response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect(),
        errors,
        policy_set: loaded.hash.clone(),
    }
}

/// The Cedar request and entities of a keyplane request, checked against `schema`.
pub fn build(schema: &Schema, req: &AuthzRequest<'_>) -> Result<(Request, Entities)> {
    let (principal, action, resource, context, entities) = entities::build(req)?;
    check(schema, principal, action, resource, context, entities).map_err(|e| {
        tracing::error!(error = %e, "authorization request does not match the schema");
        Error::Internal
    })
}

/// Check a request and its entities against `schema`. An entity given twice (e.g. a tenant
/// that is both the principal's and the resource's) is kept once: the first occurrence wins.
pub fn check(
    schema: &Schema,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    context: Context,
    entities: Vec<Entity>,
) -> std::result::Result<(Request, Entities), String> {
    let request = Request::new(principal, action, resource, context, Some(schema))
        .map_err(|e| format!("the request does not match the schema: {e}"))?;
    let mut seen = std::collections::HashSet::new();
    let entities: Vec<Entity> = entities
        .into_iter()
        .filter(|e| seen.insert(e.uid()))
        .collect();
    let entities = Entities::from_entities(entities, Some(schema))
        .map_err(|e| format!("the entities do not match the schema: {e}"))?;
    Ok((request, entities))
}
