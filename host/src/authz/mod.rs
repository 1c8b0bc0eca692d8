//! Authorization with Cedar: loading and strictly validating the policy set, and deciding
//! requests. Deny by default: a request is allowed only when some `permit` applies and no
//! `forbid` does; any evaluation error counts against it.
//!
//! Policies carry `@id` (their id in decisions and audit records) and `@description`.
//! Entities are built per request from the database rows the operation resolved
//! (see [`entities`]).

pub mod entities;
mod loader;

use std::sync::{Arc, RwLock};

use cedar_policy::{Authorizer, Decision as CedarDecision, Entities, Request, Schema};

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

    /// Decide a request.
    pub fn authorize(&self, req: &AuthzRequest<'_>) -> Result<Decision> {
        let loaded = self.current();
        let (request, entities) = build(&loaded.schema, req)?;
        let response = self
            .authorizer
            .is_authorized(&request, &loaded.policies, &entities);
        Ok(Decision {
            allowed: response.decision() == CedarDecision::Allow,
            policies: response
                .diagnostics()
                .reason()
                .map(|id| id.to_string())
                .collect(),
            errors: response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect(),
        })
    }
}

fn build(schema: &Schema, req: &AuthzRequest<'_>) -> Result<(Request, Entities)> {
    let (principal, action, resource, context, entities) = entities::build(req)?;
    let request =
        Request::new(principal, action, resource, context, Some(schema)).map_err(|e| {
            tracing::error!(error = %e, "authorization request does not match the schema");
            Error::Internal
        })?;
    let entities = Entities::from_entities(entities, Some(schema)).map_err(|e| {
        tracing::error!(error = %e, "entities do not match the schema");
        Error::Internal
    })?;
    Ok((request, entities))
}
