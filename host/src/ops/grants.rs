//! Grants on a key (AWS's grants): `create-grant`, `list-grants`, `revoke-grant`,
//! `retire-grant` and `list-retirable-grants`. A grant lets its grantee (a principal of the
//! key's tenant) perform the actions it names on the key, optionally only when the request's
//! encryption context contains (`encryption_context_subset`) or is
//! (`encryption_context_equals`) given pairs. The constraint applies to the actions that take
//! an encryption context; a constrained grant may also name `DescribeKey`, `RetireGrant` and
//! `CreateGrant`, which it does not constrain (AWS). An empty map is no constraint: Terraform's
//! `aws_kms_grant` sends both, the unused one empty.
//!
//! Grants do not decide anything themselves: for each request on a key, keyplane computes
//! the actions the caller's grants allow for that request (their constraints checked against
//! its encryption context) and gives them to Cedar as `context.granted`; the shipped policy
//! `key-grants-honoured` permits a `Grantable` action that is in it, in the key's own tenant,
//! and every forbid (tenant isolation, the `purpose` guard) still applies. `RetireGrant` is
//! never granted by other grants: only a grant's retiring principal, or its grantee when the
//! grant names `RetireGrant`, is granted the retirement of *that* grant
//! ([`Operation::self_granted`]).
//!
//! A grant naming `CreateGrant` lets its grantee pass on what the grant holds, no more: when
//! only grants let the caller create grants on the key (Cedar would refuse it without them),
//! the new grant's operations must all be named by one grant the caller holds there that
//! names `CreateGrant`, and its constraint must be at least as strict as that grant's (AWS's
//! rule); else `AccessDenied`, recorded as a denial. Without that check a grantee of
//! `CreateGrant` alone could grant itself `Decrypt`. The check reads the grants in the write
//! transaction, as do a name's idempotency and the per-key limit (see [`CreateGrant`]).
//!
//! Cedar: `CreateGrant`, `ListGrants`, `RevokeGrant`, `RetireGrant` on the key;
//! `ListRetirableGrants` on the retiring principal.

use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::{changed_meanwhile, check_key_enabled};
use super::resolve::{key_row, resolve_key};
use super::validate::{validate_grant_id, validate_key_id};
use super::{Extra, OpContext, Operation, WriteScope};
use crate::authn::Principal;
use crate::authz::ResourceRef;
use crate::crypto::context::{self, EncryptionContext};
use crate::error::{Error, Result};
use crate::store::grants::{self, Grant, GrantNames, WITH_CONTEXT};
use crate::store::principals;
use crate::telemetry::metrics::metrics;

/// The actions a grant may name (the schema's `Grantable` group; checked when a policy set
/// loads).
pub const GRANTABLE: &[&str] = &[
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "Rewrap",
    "RewrapTo",
    "Sign",
    "Verify",
    "GenerateMac",
    "VerifyMac",
    "GetPublicKey",
    "DeriveSharedSecret",
    "DescribeKey",
    "CreateGrant",
    "RetireGrant",
];

/// What a constrained grant may name besides the actions that take an encryption context
/// ([`WITH_CONTEXT`]): the constraint does not apply to them (AWS).
const WITHOUT_CONTEXT: &[&str] = &["DescribeKey", "RetireGrant", "CreateGrant"];

/// Most grants on one key: each request on a key reads them all (through the row cache).
pub const MAX_PER_KEY: usize = 500;

/// Most pairs in one constraint map (AWS's limit; a request's own context may have more).
const MAX_CONSTRAINT_PAIRS: usize = 8;

/// A grant's encryption-context constraint.
#[derive(Debug, Default, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context_subset: Option<EncryptionContext>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_context_equals: Option<EncryptionContext>,
}

/// A grant as outputs show it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GrantInfo {
    pub grant_id: String,
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The grantee's principal id.
    pub grantee_principal: String,
    pub grantee_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retiring_principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retiring_name: Option<String>,
    pub operations: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Constraints>,
    pub created_at: String,
    /// The principal that created it.
    pub issuing_principal: String,
}

impl From<&Grant> for GrantInfo {
    fn from(g: &Grant) -> Self {
        let constrained = g.context_subset.is_some() || g.context_equals.is_some();
        GrantInfo {
            grant_id: g.id.clone(),
            key_id: g.key_id.clone(),
            name: g.name.clone(),
            grantee_principal: g.grantee.clone(),
            grantee_name: g.names.grantee.clone(),
            retiring_principal: g.retiring_principal.clone(),
            retiring_name: g.names.retiring_principal.clone(),
            operations: g.operations.clone(),
            constraints: constrained.then(|| Constraints {
                encryption_context_subset: g.context_subset.clone(),
                encryption_context_equals: g.context_equals.clone(),
            }),
            created_at: g.created_at.clone(),
            issuing_principal: g.created_by.clone(),
        }
    }
}

fn grants_of(r: &ResourceRef) -> Result<&[Grant]> {
    match r {
        ResourceRef::Key { grants, .. } => Ok(grants),
        _ => Err(Error::Internal),
    }
}

/// A principal of `tenant` (a grantee or retiring principal) named by its id or, failing
/// that, by its name.
async fn principal_of_tenant(
    ctx: &OpContext<'_>,
    id_or_name: &str,
    tenant: &str,
) -> Result<Principal> {
    let pool = &ctx.state.db;
    let not_found = || Error::NotFound {
        kind: "principal",
        id: id_or_name.to_string(),
    };
    // No principal's id or name has a NUL (and PostgreSQL refuses one in a query).
    if id_or_name.contains('\0') {
        return Err(not_found());
    }
    if let Some(p) = principals::get(pool, id_or_name)
        .await?
        .filter(|p| p.tenant_id == tenant)
    {
        return Ok(p);
    }
    principals::by_name(pool, tenant, id_or_name)
        .await?
        .ok_or_else(not_found)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    pub key_id: String,
    /// A principal of the key's tenant: its id, or its name.
    pub grantee_principal: String,
    /// Actions of [`GRANTABLE`].
    pub operations: Vec<String>,
    /// A principal of the key's tenant (id or name) that may retire the grant.
    pub retiring_principal: Option<String>,
    pub constraints: Option<Constraints>,
    /// Makes the call idempotent: a grant of the same name and parameters is answered again.
    pub name: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CreateGrantOutput {
    pub grant_id: String,
    /// What `retire-grant` takes instead of the id (keyplane's grants take effect at once, so
    /// the token is only that).
    pub grant_token: String,
}

/// A grant's constraint as given: (`encryption_context_subset`, `encryption_context_equals`).
type Constraint<'a> = (Option<&'a EncryptionContext>, Option<&'a EncryptionContext>);

impl CreateGrant {
    /// The operations, each once, in [`GRANTABLE`] order.
    fn operations(&self) -> Vec<String> {
        GRANTABLE
            .iter()
            .filter(|a| self.operations.iter().any(|o| o == *a))
            .map(|a| a.to_string())
            .collect()
    }

    /// The constraint, an empty map counting as absent (Terraform sends the unused one empty;
    /// both empty is no constraint).
    fn constraint(&self) -> Constraint<'_> {
        fn given(m: &Option<EncryptionContext>) -> Option<&EncryptionContext> {
            m.as_ref().filter(|m| !m.is_empty())
        }
        self.constraints.as_ref().map_or((None, None), |c| {
            (
                given(&c.encryption_context_subset),
                given(&c.encryption_context_equals),
            )
        })
    }

    /// Whether `g` is this request's grant made before: same name, principals (as resolved)
    /// and parameters.
    fn same_as(&self, g: &Grant, grantee: &str, retiring: Option<&str>) -> bool {
        let (subset, equals) = self.constraint();
        g.name == self.name
            && g.grantee == grantee
            && g.retiring_principal.as_deref() == retiring
            && g.operations == self.operations()
            && g.context_subset.as_ref() == subset
            && g.context_equals.as_ref() == equals
    }

    /// Whether one of the grants `holder` holds (among `held`, the key's) names
    /// `CreateGrant` and every operation of this grant, with a constraint this one's is at
    /// least as strict as.
    fn passed_on(&self, holder: &str, held: &[Grant]) -> bool {
        let operations = self.operations();
        let (subset, equals) = self.constraint();
        held.iter().any(|g| {
            g.grantee == holder
                && names(g, Self::ACTION)
                && operations.iter().all(|o| g.operations.contains(o))
                && g.admits_all_of(subset, equals)
        })
    }

    /// Cedar's decision on this request as if the caller held no grant on the key, when it
    /// holds one naming `CreateGrant` there (else Cedar's allowing it owed nothing to grants:
    /// `None`). A refusal means only its grants let it create grants, so the new grant must be
    /// one they pass on.
    fn decision_without_grants(
        &self,
        ctx: &OpContext<'_>,
        r: &ResourceRef,
    ) -> Result<Option<crate::authz::Decision>> {
        let me = &ctx.principal.id;
        if !grants_of(r)?
            .iter()
            .any(|g| g.grantee == *me && names(g, Self::ACTION))
        {
            return Ok(None);
        }
        let decision = ctx.decide(
            Self::ACTION,
            &r.without_grants(),
            &EncryptionContext::new(),
            Extra::default(),
        )?;
        Ok(Some(decision))
    }

    /// Refuse this grant unless the caller may create it without its grants, or one of
    /// `held` (the key's grants) passes it on.
    fn refuse_unless_passed_on(
        &self,
        ctx: &OpContext<'_>,
        r: &ResourceRef,
        held: &[Grant],
    ) -> Result<()> {
        match self.decision_without_grants(ctx, r)?.filter(|d| !d.allowed) {
            Some(refused) => self.refuse_unless_passed_on_as(ctx, r, held, refused),
            None => Ok(()),
        }
    }

    /// Refuse this grant unless one of `held` passes it on, recording the denial with what
    /// Cedar said without the caller's grants (`refused`).
    fn refuse_unless_passed_on_as(
        &self,
        ctx: &OpContext<'_>,
        r: &ResourceRef,
        held: &[Grant],
        refused: crate::authz::Decision,
    ) -> Result<()> {
        if self.passed_on(&ctx.principal.id, held) {
            return Ok(());
        }
        metrics().denial(Self::ACTION);
        if let Ok(mut d) = ctx.denied.lock() {
            *d = Some(refused.policies);
        }
        Err(Error::AccessDenied {
            action: Self::ACTION.into(),
            resource: r.display(),
        })
    }
}

/// Whether grant `g` names `action`.
fn names(g: &Grant, action: &str) -> bool {
    g.operations.iter().any(|o| o == action)
}

impl Operation for CreateGrant {
    const NAME: &'static str = "create-grant";
    const ACTION: &'static str = "CreateGrant";
    type Output = CreateGrantOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if self.operations.is_empty() || self.operations.len() > GRANTABLE.len() {
            return Err(Error::validation(
                "operations must name 1 or more grantable actions",
            ));
        }
        if let Some(bad) = self
            .operations
            .iter()
            .find(|o| !GRANTABLE.contains(&o.as_str()))
        {
            return Err(Error::validation(format!(
                "{bad} cannot be granted; grantable: {}",
                GRANTABLE.join(", ")
            )));
        }
        if let Some(n) = &self.name {
            let ok = (1..=256).contains(&n.len())
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b));
            if !ok {
                return Err(Error::validation(
                    "a grant name is 1 to 256 letters, digits, ':', '/', '_' or '-'",
                ));
            }
        }
        let ec = match self.constraint() {
            (None, None) => return Ok(()),
            (Some(ec), None) | (None, Some(ec)) => ec,
            (Some(_), Some(_)) => {
                return Err(Error::validation(
                    "constraints take encryption_context_subset or encryption_context_equals, \
                     not both",
                ))
            }
        };
        if ec.len() > MAX_CONSTRAINT_PAIRS {
            return Err(Error::validation(format!(
                "a grant constraint has at most {MAX_CONSTRAINT_PAIRS} encryption-context pairs"
            )));
        }
        context::validate(ec)?;
        let constrainable = |o: &&String| {
            WITH_CONTEXT.contains(&o.as_str()) || WITHOUT_CONTEXT.contains(&o.as_str())
        };
        if let Some(o) = self.operations.iter().find(|o| !constrainable(o)) {
            return Err(Error::validation(format!(
                "a grant with an encryption-context constraint names only operations that take \
                 an encryption context and {}; {o} does not take one",
                WITHOUT_CONTEXT.join(", ")
            )));
        }
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    /// A grant naming `CreateGrant` lets its grantee ask, whatever its constraint (which
    /// applies to the grant it creates instead, checked in `execute`).
    fn self_granted(&self, ctx: &OpContext<'_>, r: &ResourceRef) -> Option<&'static str> {
        let me = &ctx.principal.id;
        grants_of(r)
            .ok()?
            .iter()
            .any(|g| g.grantee == *me && names(g, Self::ACTION))
            .then_some(Self::ACTION)
    }

    /// The checks that depend on the key's grants (what the caller's grants pass on, a
    /// name's grant made before, the limit) read them in the write transaction with the key
    /// held ([`grants::of_key_held`]), not from the resolution's cached copy: two creations
    /// at once would each miss the other's grant and both insert.
    async fn authorize_dry_run(&self, ctx: &OpContext<'_>, r: &ResourceRef) -> Result<()> {
        // As `execute` checks them, on the key and grants as resolved (a dry run writes
        // nothing, so it holds no key row to read them under).
        check_key_enabled(key_row(r)?)?;
        self.refuse_unless_passed_on(ctx, r, grants_of(r)?)
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        // As AWS: no grant on a key that is not enabled (`DisabledException` when disabled,
        // `KMSInvalidStateException` pending deletion or import). The state is checked again
        // in the transaction (`of_key_held`).
        check_key_enabled(key)?;
        let grantee = principal_of_tenant(ctx, &self.grantee_principal, &key.tenant_id).await?;
        let retiring = match &self.retiring_principal {
            Some(p) => Some(principal_of_tenant(ctx, p, &key.tenant_id).await?),
            None => None,
        };
        let retiring_id = retiring.as_ref().map(|p| p.id.as_str());
        let without_grants = self
            .decision_without_grants(ctx, &r)?
            .filter(|d| !d.allowed);
        crate::pause::point("create-grant:resolved", &key.id).await;
        // Drawn before the transaction: the HSM is not asked while the key is held.
        let id = hex::encode(ctx.state.keyring.random(32).await?.as_slice());
        let conn = scope.conn(ctx.state).await?;
        let existing = grants::of_key_held(conn, &key.id, key.state)
            .await?
            .ok_or_else(|| changed_meanwhile("key", &key.id, key.state))?;
        // Inside the open transaction: on SQLite a test pausing here holds the write lock.
        crate::pause::point("create-grant:read", &key.id).await;
        if let Some(refused) = without_grants {
            self.refuse_unless_passed_on_as(ctx, &r, &existing, refused)?;
        }
        if self.name.is_some() {
            if let Some(g) = existing
                .iter()
                .find(|g| self.same_as(g, &grantee.id, retiring_id))
            {
                ctx.name_in_audit(format!("grant:{}", g.id));
                return Ok(CreateGrantOutput {
                    grant_id: g.id.clone(),
                    grant_token: g.id.clone(),
                });
            }
        }
        if existing.len() >= MAX_PER_KEY {
            return Err(Error::InvalidState(format!(
                "key {} has {MAX_PER_KEY} grants; retire or revoke some first",
                key.id
            )));
        }
        let (subset, equals) = self.constraint();
        let (context_subset, context_equals) = (subset.cloned(), equals.cloned());
        let grant = Grant {
            id: id.clone(),
            key_id: key.id.clone(),
            operations: self.operations(),
            name: self.name,
            grantee: grantee.id.clone(),
            retiring_principal: retiring.as_ref().map(|p| p.id.clone()),
            names: GrantNames {
                grantee: grantee.name,
                retiring_principal: retiring.map(|p| p.name),
                created_by: ctx.principal.name.clone(),
            },
            context_subset,
            context_equals,
            created_at: ctx.state.clock.now_rfc3339(),
            created_by: ctx.principal.id.clone(),
        };
        grants::insert(conn, &grant).await?;
        ctx.name_in_audit(format!("grant:{id}"));
        Ok(CreateGrantOutput {
            grant_id: id.clone(),
            grant_token: id,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListGrants {
    pub key_id: String,
    pub grant_id: Option<String>,
    /// A principal of the key's tenant: its id, or its name (the AWS front's user ARN).
    pub grantee_principal: Option<String>,
    /// 1 to 100 (default 50).
    pub limit: Option<i64>,
    /// Grants after this grant id (the last of the previous page).
    pub next_token: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListGrantsOutput {
    pub grants: Vec<GrantInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// One page of `grants` (in id order) after `after`.
fn page<'g>(
    grants: impl Iterator<Item = &'g Grant>,
    after: Option<&str>,
    limit: i64,
) -> ListGrantsOutput {
    let limit = limit as usize;
    let mut listed: Vec<GrantInfo> = grants
        .filter(|g| after.is_none_or(|a| g.id.as_str() > a))
        .take(limit + 1)
        .map(GrantInfo::from)
        .collect();
    let more = listed.len() > limit;
    listed.truncate(limit);
    ListGrantsOutput {
        next_token: more
            .then(|| listed.last().map(|g| g.grant_id.clone()))
            .flatten(),
        grants: listed,
    }
}

fn validate_page(limit: Option<i64>, next_token: Option<&str>) -> Result<()> {
    if limit.is_some_and(|l| !(1..=100).contains(&l)) {
        return Err(Error::validation("limit must be 1 to 100"));
    }
    if let Some(t) = next_token {
        validate_grant_id(t).map_err(|_| {
            Error::InvalidMarker("next_token is not a token this operation returned".into())
        })?;
    }
    Ok(())
}

impl Operation for ListGrants {
    const NAME: &'static str = "list-grants";
    const ACTION: &'static str = "ListGrants";
    type Output = ListGrantsOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if let Some(g) = &self.grant_id {
            validate_grant_id(g)?;
        }
        validate_page(self.limit, self.next_token.as_deref())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        _scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let all = grants_of(&r)?;
        // The grantee as create-grant names one (its id, else its name, in the key's tenant);
        // one that does not exist holds no grant.
        let grantee = match &self.grantee_principal {
            None => None,
            Some(p) => match principal_of_tenant(ctx, p, &key_row(&r)?.tenant_id).await {
                Ok(found) => Some(found.id),
                Err(Error::NotFound { .. }) => Some(String::new()),
                Err(e) => return Err(e),
            },
        };
        let selected = all.iter().filter(|g| {
            self.grant_id.as_ref().is_none_or(|id| g.id == *id)
                && grantee.as_ref().is_none_or(|p| g.grantee == *p)
        });
        Ok(page(
            selected,
            self.next_token.as_deref(),
            self.limit.unwrap_or(50),
        ))
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GrantGoneOutput {
    pub grant_id: String,
    pub key_id: String,
}

/// Delete `grant` (checked to be on the resolved key) in `scope`.
async fn delete(
    ctx: &OpContext<'_>,
    scope: &mut WriteScope,
    r: &ResourceRef,
    grant_id: &str,
) -> Result<GrantGoneOutput> {
    let key = key_row(r)?;
    if !grants::delete(scope.conn(ctx.state).await?, grant_id).await? {
        return Err(Error::NotFound {
            kind: "grant",
            id: grant_id.to_string(),
        });
    }
    Ok(GrantGoneOutput {
        grant_id: grant_id.to_string(),
        key_id: key.id.clone(),
    })
}

/// How the audit record of a request on grant `id` of key `resource` names it: the key and
/// the grant, so that the trail says which grant of the key went (or was made).
fn grant_in_audit(resource: &ResourceRef, id: &str) -> String {
    format!("{} grant:{id}", resource.display())
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeGrant {
    pub key_id: String,
    pub grant_id: String,
}

impl Operation for RevokeGrant {
    const NAME: &'static str = "revoke-grant";
    const ACTION: &'static str = "RevokeGrant";
    type Output = GrantGoneOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        validate_grant_id(&self.grant_id)
    }

    fn audit_resource(&self, resource: &ResourceRef) -> String {
        grant_in_audit(resource, &self.grant_id)
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
        if !grants_of(&r)?.iter().any(|g| g.id == self.grant_id) {
            return Err(Error::NotFound {
                kind: "grant",
                id: self.grant_id,
            });
        }
        delete(ctx, scope, &r, &self.grant_id).await
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireGrant {
    /// The grant's id, or its token (`grant_token`).
    pub grant_id: Option<String>,
    pub grant_token: Option<String>,
    /// Checked against the grant's key when given.
    pub key_id: Option<String>,
    /// The grant, once resolved.
    #[serde(skip)]
    grant: OnceLock<Grant>,
}

impl RetireGrant {
    pub fn new(
        grant_id: Option<String>,
        grant_token: Option<String>,
        key_id: Option<String>,
    ) -> Self {
        RetireGrant {
            grant_id,
            grant_token,
            key_id,
            grant: OnceLock::new(),
        }
    }

    fn id(&self) -> Result<&str> {
        self.grant_id
            .as_deref()
            .or(self.grant_token.as_deref())
            .ok_or_else(|| Error::validation("retire-grant takes grant_id or grant_token"))
    }
}

impl Operation for RetireGrant {
    const NAME: &'static str = "retire-grant";
    const ACTION: &'static str = "RetireGrant";
    type Output = GrantGoneOutput;

    fn validate(&self) -> Result<()> {
        validate_grant_id(self.id()?).map_err(|e| match self.grant_id {
            Some(_) => e,
            // Named by its token only: AWS's answer for a token that is not one.
            None => Error::InvalidGrantToken("a grant token is 64 hexadecimal characters".into()),
        })?;
        if let (Some(id), Some(token)) = (&self.grant_id, &self.grant_token) {
            if id != token {
                return Err(Error::validation(
                    "grant_id and grant_token name different grants",
                ));
            }
        }
        if let Some(k) = &self.key_id {
            validate_key_id(k)?;
        }
        Ok(())
    }

    fn audit_resource(&self, resource: &ResourceRef) -> String {
        match self.id() {
            Ok(id) => grant_in_audit(resource, id),
            Err(_) => resource.display(),
        }
    }

    /// A grant on a key the caller may not see is a grant that does not exist (the key's id
    /// is not revealed either).
    fn unseen(&self) -> Option<Error> {
        Some(Error::NotFound {
            kind: "grant",
            id: self.id().ok()?.to_string(),
        })
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        let id = self.id()?;
        let not_found = || Error::NotFound {
            kind: "grant",
            id: id.to_string(),
        };
        let grant = grants::get(&ctx.state.db, id)
            .await?
            .ok_or_else(not_found)?;
        let r = resolve_key(ctx, &grant.key_id).await?;
        let _ = self.grant.set(grant);
        Ok(r)
    }

    /// The grant's retiring principal, or its grantee when it names `RetireGrant`, is
    /// granted its retirement.
    fn self_granted(&self, ctx: &OpContext<'_>, _r: &ResourceRef) -> Option<&'static str> {
        let g = self.grant.get()?;
        let me = &ctx.principal.id;
        let retiring = g.retiring_principal.as_ref() == Some(me);
        let grantee = g.grantee == *me && g.operations.iter().any(|o| o == "RetireGrant");
        (retiring || grantee).then_some("RetireGrant")
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let id = self.id()?.to_string();
        // The key the caller named is compared only now, once the grant's key was
        // authorized: before, a grant of another tenant's key would be told apart from one
        // that does not exist (an unknown alias answered as such only when the grant existed).
        if let (Some(k), Some(grant)) = (&self.key_id, self.grant.get()) {
            if super::resolve::key_id_of(ctx, k).await? != grant.key_id {
                return Err(Error::NotFound { kind: "grant", id });
            }
        }
        delete(ctx, scope, &r, &id).await
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRetirableGrants {
    /// A principal of the caller's tenant (id or name); default: the caller.
    pub retiring_principal: Option<String>,
    pub limit: Option<i64>,
    pub next_token: Option<String>,
}

impl Operation for ListRetirableGrants {
    const NAME: &'static str = "list-retirable-grants";
    const ACTION: &'static str = "ListRetirableGrants";
    type Output = ListGrantsOutput;

    fn validate(&self) -> Result<()> {
        validate_page(self.limit, self.next_token.as_deref())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        let p = match &self.retiring_principal {
            None => ctx.principal.clone(),
            Some(p) => principal_of_tenant(ctx, p, &ctx.principal.tenant_id).await?,
        };
        Ok(ResourceRef::User(Box::new(p)))
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        _scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let ResourceRef::User(p) = &r else {
            return Err(Error::Internal);
        };
        let limit = self.limit.unwrap_or(50);
        let after = self.next_token.unwrap_or_default();
        let rows = grants::retirable_by(&ctx.state.db, &p.id, &after, limit + 1).await?;
        Ok(page(rows.iter(), None, limit))
    }
}
