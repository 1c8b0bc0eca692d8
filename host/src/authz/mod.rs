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
//! (see [`entities`]). Each request is checked against the schema (its principal, resource
//! and context types); its entities are not re-validated per request, because they come from
//! one builder whose every shape is checked against the schema when the set loads
//! ([`entities::check_shapes`]), and validating them again costs more than the decision.
//! The request's action entity (with its action groups) comes from the schema, prepared at
//! load.

pub mod entities;
pub mod literal;
mod loader;
pub mod memo;

use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid, Request, Schema,
};

use crate::error::{Error, Result};
pub use entities::{AuthzRequest, ClientCertificate, ResourceRef};
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
    /// Taken from the decision memo (an identical earlier request), not evaluated again.
    pub memoised: bool,
}

/// The live policy set and its schema.
pub struct Authz {
    current: RwLock<Arc<LoadedPolicies>>,
    authorizer: Authorizer,
    /// Recent decisions (see [`memo`]); `None` when turned off.
    memo: Option<memo::DecisionMemo>,
}

impl Authz {
    /// Decide with `loaded`, memoising up to `max_decisions` decisions (0: none).
    pub fn new(loaded: LoadedPolicies, max_decisions: usize) -> Self {
        Authz {
            current: RwLock::new(Arc::new(loaded)),
            authorizer: Authorizer::new(),
            memo: (max_decisions > 0).then(|| memo::DecisionMemo::new(max_decisions)),
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

    /// Decide a request (or reuse the decision of an identical one).
    pub fn authorize(&self, req: &AuthzRequest<'_>) -> Result<Decision> {
        let loaded = self.current();
        let memo = self
            .memo
            .as_ref()
            .map(|m| (m, memo::key(&loaded.hash, req)));
        if let Some(d) = memo
            .as_ref()
            .and_then(|(m, key)| m.get(req.request_time, key))
        {
            return Ok(Decision {
                memoised: true,
                ..Decision::clone(&d)
            });
        }
        let (request, entities) = build(&loaded, req)?;
        let decision = decide(&self.authorizer, &loaded, &request, &entities);
        if let Some((m, key)) = memo {
            let now = chrono::Utc::now().timestamp();
            m.insert(req.request_time, now, key, Arc::new(decision.clone()));
        }
        Ok(decision)
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
    let policies = loaded.for_action(request.action());
    let response = authorizer.is_authorized(request, policies, entities);
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
        memoised: false,
    }
}

/// The Cedar request (checked against the schema) and entities of a keyplane request.
pub fn build(loaded: &LoadedPolicies, req: &AuthzRequest<'_>) -> Result<(Request, Entities)> {
    let (principal, action, resource, context, mut entities) = entities::build(req)?;
    let request = Request::new(principal, action, resource, context, Some(&loaded.schema))
        .map_err(|e| {
            tracing::error!(error = %e, "authorization request does not match the schema");
            Error::Internal
        })?;
    entities.extend(loaded.actions.get(req.action).cloned());
    let entities = Entities::from_entities(unique(entities), None).map_err(|e| {
        tracing::error!(error = %e, "could not assemble the entities of a request");
        Error::Internal
    })?;
    Ok((request, entities))
}

/// Entities with each uid once (the first occurrence wins).
fn unique(entities: Vec<Entity>) -> Vec<Entity> {
    let mut seen = std::collections::HashSet::new();
    entities
        .into_iter()
        .filter(|e| seen.insert(e.uid()))
        .collect()
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
    let entities = Entities::from_entities(unique(entities), Some(schema))
        .map_err(|e| format!("the entities do not match the schema: {e}"))?;
    Ok((request, entities))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::store::keys::KeyRow;

    fn principal(id: &str, tenant: &str, role: &str, operator: bool) -> crate::authn::Principal {
        crate::authn::Principal {
            id: id.into(),
            tenant_id: tenant.into(),
            name: id.into(),
            kind: "user".into(),
            role: role.into(),
            operator,
            created_at: String::new(),
        }
    }

    fn key(id: &str, tenant: &str, user: &str, purpose: Option<&str>) -> ResourceRef {
        ResourceRef::Key {
            row: Box::new(KeyRow::sample(id, tenant)),
            users: vec![user.into()],
            tags: purpose
                .map(|p| [("purpose".to_string(), p.to_string())].into())
                .unwrap_or_default(),
            grants: Default::default(),
        }
    }

    /// The server's path (per-action policy subset, entities not re-validated) decides every
    /// request exactly as the whole policy set with schema-validated entities does.
    #[test]
    fn per_action_subsets_decide_as_the_whole_set() {
        let loaded = load_policies(None).unwrap();
        let authorizer = Authorizer::new();
        let principals = [
            principal("p-admin", "t1", "admin", false),
            principal("p-user", "t1", "user", false),
            principal("p-operator", "t1", "user", true),
            principal("p-stranger", "t2", "admin", false),
        ];
        let approvers = [None, Some(principal("p-admin2", "t1", "admin", false))];
        let resources = [
            ResourceRef::Tenant("t1".into()),
            ResourceRef::Tenant("t2".into()),
            key("k-1", "t1", "p-user", None),
            key("k-2", "t1", "p-user", Some("billing")),
            key("k-3", "t2", "p-user", None),
        ];
        let contexts: [EncryptionContextOf; 2] = [
            Default::default(),
            [("purpose".to_string(), "billing".to_string())].into(),
        ];
        let (mut compared, mut allowed) = (0, 0);
        for action in loaded.actions.keys() {
            for p in &principals {
                for approver in &approvers {
                    for resource in &resources {
                        for ec in &contexts {
                            let req = AuthzRequest {
                                principal: p,
                                action,
                                resource,
                                encryption_context: ec,
                                source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                                client_certificate: None,
                                request_time: 1_800_000_000,
                                mfa: false,
                                approver: approver.as_ref(),
                                granted: &[],
                                export_format: None,
                            };
                            let (p_uid, a_uid, r_uid, ctx, entities) =
                                entities::build(&req).unwrap();
                            // Action and resource type that the schema does not pair.
                            let Ok((full_req, full_entities)) =
                                check(&loaded.schema, p_uid, a_uid, r_uid, ctx, entities)
                            else {
                                continue;
                            };
                            let full = authorizer.is_authorized(
                                &full_req,
                                &loaded.policies,
                                &full_entities,
                            );
                            let (request, entities) = build(&loaded, &req).unwrap();
                            let fast = decide(&authorizer, &loaded, &request, &entities);
                            let full_errors = full.diagnostics().errors().count();
                            assert_eq!(
                                fast.allowed,
                                full.decision() == CedarDecision::Allow && full_errors == 0,
                                "{action} by {} on {}",
                                p.id,
                                resource.display()
                            );
                            let full_reasons: BTreeSet<String> =
                                full.diagnostics().reason().map(|r| r.to_string()).collect();
                            let fast_reasons: BTreeSet<String> =
                                fast.policies.iter().cloned().collect();
                            assert_eq!(fast_reasons, full_reasons, "{action} by {}", p.id);
                            assert_eq!(fast.errors.len(), full_errors);
                            compared += 1;
                            allowed += usize::from(fast.allowed);
                        }
                    }
                }
            }
        }
        assert!(compared > 200, "{compared} requests compared");
        assert!(
            allowed > 20 && allowed < compared,
            "{allowed} of {compared} allowed"
        );
    }

    /// A memoised decision is the decision, marked as memoised; a reloaded set decides anew.
    #[test]
    fn memoised_decisions_match_and_reloads_are_not_served_stale() {
        let authz = Authz::new(load_policies(None).unwrap(), 16);
        let user = principal("p-user", "t1", "user", false);
        let granted = key("k-1", "t1", "p-user", None);
        let ec = EncryptionContextOf::new();
        let req = AuthzRequest {
            principal: &user,
            action: "Encrypt",
            resource: &granted,
            encryption_context: &ec,
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_certificate: None,
            request_time: 1_800_000_000,
            mfa: false,
            approver: None,
            granted: &[],
            export_format: None,
        };
        let first = authz.authorize(&req).unwrap();
        let again = authz.authorize(&req).unwrap();
        assert!(first.allowed && !first.memoised && again.memoised);
        assert_eq!(first.policies, again.policies);
        assert_eq!(first.policy_set, again.policy_set);
        // A set without the grant policy: same request, fresh (denying) decision.
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        for entry in std::fs::read_dir(shipped).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() && !p.ends_with("key-grants.cedar") {
                std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        authz.replace(load_policies(Some(dir.path())).unwrap());
        let after = authz.authorize(&req).unwrap();
        assert!(!after.allowed && !after.memoised);
    }

    /// The memo keeps one second's decisions: the first decision of a later second forgets
    /// the earlier ones (they can never be reused, their keys hold their second), and a late
    /// request of an earlier second is decided without being kept.
    #[test]
    fn the_memo_holds_only_the_current_seconds_decisions() {
        let authz = Authz::new(load_policies(None).unwrap(), 1024);
        let memo = authz.memo.as_ref().unwrap();
        let user = principal("p-user", "t1", "user", false);
        let keys: Vec<_> = (0..3)
            .map(|i| key(&format!("k-{i}"), "t1", "p-user", None))
            .collect();
        let ec = EncryptionContextOf::new();
        fn request<'a>(
            principal: &'a crate::authn::Principal,
            resource: &'a ResourceRef,
            ec: &'a EncryptionContextOf,
            request_time: i64,
        ) -> AuthzRequest<'a> {
            AuthzRequest {
                principal,
                action: "Encrypt",
                resource,
                encryption_context: ec,
                source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                client_certificate: None,
                request_time,
                mfa: false,
                approver: None,
                granted: &[],
                export_format: None,
            }
        }
        let at = |resource, request_time| request(&user, resource, &ec, request_time);
        // In the past, as a request's time is when the memo keeps its decision.
        let t = 1_700_000_000;
        for k in &keys {
            assert!(!authz.authorize(&at(k, t)).unwrap().memoised);
            assert!(authz.authorize(&at(k, t)).unwrap().memoised);
        }
        assert_eq!(memo.len(), 3);
        // The next second: the previous second's decisions are gone.
        assert!(!authz.authorize(&at(&keys[0], t + 1)).unwrap().memoised);
        assert_eq!(memo.len(), 1);
        // A late request of the previous second: decided, not kept.
        let late = authz.authorize(&at(&keys[1], t)).unwrap();
        assert!(late.allowed && !late.memoised);
        assert!(!authz.authorize(&at(&keys[1], t)).unwrap().memoised);
        assert_eq!(memo.len(), 1);
        assert!(authz.authorize(&at(&keys[0], t + 1)).unwrap().memoised);
        // Over a long run the memo holds one second's worth, not every second's.
        for s in 2..100 {
            for k in &keys {
                authz.authorize(&at(k, t + s)).unwrap();
            }
        }
        assert_eq!(memo.len(), 3);
    }

    type EncryptionContextOf = crate::crypto::context::EncryptionContext;
}
