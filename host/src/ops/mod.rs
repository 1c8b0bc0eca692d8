//! The typed operation core: every keyplane operation, whatever front it arrives through.
//!
//! One file per operation: its request and output types, its Cedar action, how it resolves
//! its resource, what it does. [`execute`] is the single pipeline every request goes
//! through: validate → resolve the resource → authorize (Cedar, deny by default) → execute in
//! a write scope → append the audit record in the same transaction. A failure at any step
//! rolls the scope back (destroying HSM objects it created) and appends an audit record of
//! the failure instead.
//!
//! Nothing here knows a wire format: no JSON, no HTTP status, no header. A front (`api`)
//! authenticates, decodes its request into an operation value, calls [`execute`] and encodes
//! the output or the [`Error`] its own way. The operation types derive serde because the
//! native front's JSON is their own shape (the native front is where they are decoded and
//! encoded), and `schemars::JsonSchema` for the native API's OpenAPI document made from that
//! shape (`api::openapi`); other fronts translate their wire types into them.
//! [`operations!`] lists every operation, so a front's table is built from one list. [`execute_many`] runs a batch of
//! one operation's requests, each item through [`execute`] (see [`batch`]).
//!
//! A request refused on a key its caller may not even see (Cedar denies it `DescribeKey` on
//! the key, as for every key of another tenant) fails as if the key did not exist
//! ([`Error::NotFound`], the same message), so key ids cannot be probed across tenants; its
//! audit record still says `deny`.

pub mod access_keys;
pub mod aliases;
pub mod automatic_rotation;
mod b64;
pub mod batch;
mod certificates;
mod checks;
pub mod configure_key;
pub mod create_key;
pub mod create_principal;
pub mod create_tenant;
pub mod decrypt;
pub mod delete_imported_key_material;
pub mod derive_shared_secret;
pub mod describe_hsm;
pub mod describe_key;
pub mod encrypt;
pub mod export_key;
pub mod gc;
pub mod generate_csr;
pub mod generate_data_key;
pub mod generate_data_key_pair;
pub mod generate_random;
pub mod get_caller_identity;
pub mod get_parameters_for_import;
pub mod get_public_key;
pub mod grants;
pub mod hash;
pub mod import_key_material;
pub mod key_deletion;
pub mod key_policies;
pub mod key_state;
pub mod key_tags;
mod key_transport;
pub mod list_keys;
pub mod mac;
pub mod plugin_config;
pub mod plugin_ops;
pub mod reload_policies;
mod resolve;
pub mod rewrap;
pub mod rotate_key;
pub mod rotation_ops;
mod rsa_oaep;
pub mod scheduler;
mod sealing;
mod secret_text;
pub mod set_storage_backend;
pub mod sign;
mod storage;
pub mod update_key_description;
pub mod upload_plugin;
mod validate;
mod versions;
mod views;

use std::future::Future;
use std::net::IpAddr;

use crate::audit::{self, AuditEvent};
use crate::authn::Principal;
use crate::authz::{AuthzRequest, Decision, ResourceRef};
use crate::crypto::context::EncryptionContext;
use crate::crypto::NewVersion;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::Tx;
use crate::telemetry::metrics::metrics;

pub use b64::Base64;
pub use batch::{execute_many, MAX_BATCH_ITEMS};
pub use resolve::key_resource;
pub use secret_text::{Password, SecretText};
pub use storage::load_blob;
pub use validate::{validate_alias, ALIAS_PREFIX};
pub use views::{rfc3339, KeyMetadata, VersionInfo};

/// The front a request came through, recorded in its audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// `POST /v1/<operation>`.
    Native,
    /// AWS KMS (JSON 1.1 on `POST /`).
    AwsKms,
    /// AWS STS (the query protocol on `POST /`).
    AwsSts,
    /// Vault Transit (`/v1/<mount>/…`).
    VaultTransit,
    /// A caller inside the process (command-line tools, benchmarks).
    InProcess,
}

impl Front {
    /// The name in audit records.
    pub fn name(self) -> &'static str {
        match self {
            Front::Native => "native",
            Front::AwsKms => "aws-kms",
            Front::AwsSts => "aws-sts",
            Front::VaultTransit => "vault-transit",
            Front::InProcess => "in-process",
        }
    }

    /// Whether the front's dialect forgets a deleted key (see [`refuse_if_forgotten`]).
    fn forgets_destroyed_keys(self) -> bool {
        matches!(self, Front::AwsKms)
    }
}

/// A destroyed key named through a front whose dialect forgets a deleted key is answered as
/// a key that is gone, once the request on it was authorized (AWS KMS: `NotFoundException`
/// for every action, reads included). keyplane keeps the record for the audit trail, and its
/// own API shows it as `destroyed`.
fn refuse_if_forgotten(meta: &RequestMeta, r: &ResourceRef) -> Result<()> {
    match r {
        ResourceRef::Key { row, .. }
            if row.state == crate::model::KeyState::Destroyed
                && meta.front.forgets_destroyed_keys() =>
        {
            Err(Error::KeyDestroyed {
                what: format!("key {}", row.id),
            })
        }
        _ => Ok(()),
    }
}

/// Facts about the request that are not in its body.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub front: Front,
    pub request_id: String,
    pub source_ip: IpAddr,
    /// The certificate the client presented, verified against `tls.client_ca`.
    pub client_certificate: Option<std::sync::Arc<crate::authz::ClientCertificate>>,
    /// W3C trace id of the request (recorded in its audit record).
    pub trace_id: Option<String>,
    /// The client's `User-Agent`, truncated (recorded in its audit record).
    pub user_agent: Option<String>,
    /// Grant tokens the request carries (AWS's `GrantTokens`): a grant one names is honoured
    /// at once on every node, even before this node's caches have heard of it (see
    /// `resolve::resolve_key`). keyplane's grant token is the grant's id.
    pub grant_tokens: Vec<String>,
    /// The access key the request was signed with (SigV4), recorded in its audit record.
    pub access_key_id: Option<String>,
}

impl RequestMeta {
    /// A request made inside the process (tools, benchmarks), from the loopback address.
    pub fn in_process(request_id: &str) -> Self {
        RequestMeta {
            front: Front::InProcess,
            request_id: request_id.into(),
            source_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            client_certificate: None,
            trace_id: None,
            user_agent: None,
            grant_tokens: Vec::new(),
            access_key_id: None,
        }
    }
}

/// What an operation sees while it runs.
pub struct OpContext<'a> {
    pub state: &'a AppState,
    pub principal: &'a Principal,
    pub meta: &'a RequestMeta,
    /// The determining policies of a denial by [`OpContext::authorize`] (the audit record
    /// then says `deny`).
    denied: std::sync::Mutex<Option<Vec<String>>>,
    /// What the operation made, for its audit record (see [`OpContext::name_in_audit`]).
    made: std::sync::Mutex<Option<String>>,
}

impl<'a> OpContext<'a> {
    fn new(state: &'a AppState, principal: &'a Principal, meta: &'a RequestMeta) -> Self {
        OpContext {
            state,
            principal,
            meta,
            denied: std::sync::Mutex::new(None),
            made: std::sync::Mutex::new(None),
        }
    }

    /// Name what this request made (a grant, an access key: an id drawn while it ran) in its
    /// audit record, after the resource it acted on, so that the trail says which one a
    /// later request revokes or uses.
    pub fn name_in_audit(&self, what: String) {
        if let Ok(mut m) = self.made.lock() {
            *m = Some(what);
        }
    }

    /// Cedar's decision on `action` on `resource` by this request's principal, with what the
    /// operation adds to the context (`extra`). `context.granted` holds the actions the
    /// principal's grants on the resource allow for this request and what the request's own
    /// subject grants.
    fn decide(
        &self,
        action: &str,
        resource: &ResourceRef,
        ec: &EncryptionContext,
        extra: Extra<'_>,
    ) -> Result<Decision> {
        let mut granted = resource.granted(&self.principal.id, ec);
        granted.extend(extra.self_granted);
        self.state.authz.authorize(&AuthzRequest {
            principal: self.principal,
            action,
            resource,
            encryption_context: ec,
            source_ip: self.meta.source_ip,
            client_certificate: self.meta.client_certificate.as_deref(),
            request_time: chrono::Utc::now().timestamp(),
            // A client certificate that names the authenticated principal is a second factor
            // beside the token or signature every request carries (see `ClientCertificate::names`).
            mfa: self
                .meta
                .client_certificate
                .as_deref()
                .is_some_and(|c| c.names(&self.principal.id)),
            approver: extra.approver,
            granted: &granted,
            export_format: extra.export_format,
        })
    }

    /// Authorize a second resource of the same request (rewrap's destination key, the key an
    /// alias points to before `update-alias`). A denial fails the request, is audited as
    /// `deny` with its determining policies, and is answered as for the pipeline's own check;
    /// a destroyed key allowed is refused as the front's dialect wants it
    /// ([`refuse_if_forgotten`]), also as for the pipeline's own resource.
    pub fn authorize(
        &self,
        action: &'static str,
        resource: &ResourceRef,
        ec: &EncryptionContext,
    ) -> Result<Decision> {
        let decision = self.decide(action, resource, ec, Extra::default())?;
        if decision.allowed {
            refuse_if_forgotten(self.meta, resource)?;
            return Ok(decision);
        }
        metrics().denial(action);
        if let Ok(mut d) = self.denied.lock() {
            *d = Some(decision.policies);
        }
        Err(self.refusal(action, resource))
    }

    /// The grants (their ids, comma-separated) that let the caller do `action` on `resource`,
    /// for the request's audit record (as AWS's CloudTrail names the grant a request used):
    /// the caller's grants on the key that allow `action` for this request, when Cedar,
    /// asked again without them, refuses it. `None` when the policies alone allow it (an
    /// admin who also holds a grant) or the caller holds none; only then is Cedar asked twice.
    fn grants_used(
        &self,
        action: &str,
        resource: &ResourceRef,
        ec: &EncryptionContext,
        extra: Extra<'_>,
    ) -> Option<String> {
        let ResourceRef::Key { grants, .. } = resource else {
            return None;
        };
        let ids: Vec<&str> = grants
            .iter()
            .filter(|g| g.grantee == self.principal.id && g.actions_for(ec).any(|a| a == action))
            .map(|g| g.id.as_str())
            .collect();
        if ids.is_empty() {
            return None;
        }
        let without = self
            .decide(action, &resource.without_grants(), ec, extra)
            .ok()?;
        (!without.allowed).then(|| ids.join(","))
    }

    /// The determining policies of the denial [`OpContext::authorize`] last made, if any.
    fn denial_policies(&self) -> Vec<String> {
        self.denied
            .lock()
            .ok()
            .and_then(|d| d.clone())
            .unwrap_or_default()
    }

    /// The answer to a denial of `action` on `resource`: `NotFound` if the caller may not
    /// even see the resource (a key it may not describe; another tenant's principal, plugin
    /// or the tenant itself), the answer a request naming nothing gets, so that other
    /// tenants' objects cannot be probed; else `AccessDenied`.
    fn refusal(&self, action: &str, resource: &ResourceRef) -> Error {
        let own = |tenant: &str| tenant == self.principal.tenant_id;
        let (visible, kind, id) = match resource {
            ResourceRef::Key { row, .. } => {
                let empty = EncryptionContext::new();
                let visible = self
                    .decide("DescribeKey", resource, &empty, Extra::default())
                    .is_ok_and(|d| d.allowed);
                (visible, "key", &row.id)
            }
            ResourceRef::User(p) => (
                own(&p.tenant_id) || self.principal.operator,
                "principal",
                &p.id,
            ),
            ResourceRef::Plugin(p) => (own(&p.tenant_id), "plugin", &p.name),
            ResourceRef::Tenant(t) => (own(t) || self.principal.operator, "tenant", t),
        };
        if visible {
            return Error::AccessDenied {
                action: action.into(),
                resource: resource.display(),
            };
        }
        Error::NotFound {
            kind,
            id: id.clone(),
        }
    }
}

/// What an operation adds to Cedar's context besides its encryption context, from the
/// [`Operation`] methods of the same names.
#[derive(Default, Clone, Copy)]
struct Extra<'a> {
    approver: Option<&'a Principal>,
    self_granted: Option<&'a str>,
    export_format: Option<&'static str>,
}

/// Resolve a key (or alias) as an operation run by `principal` would (for tools and
/// benchmarks that call Cedar directly).
pub async fn resolve_key_for(
    state: &AppState,
    principal: &Principal,
    key_id: &str,
) -> Result<ResourceRef> {
    let meta = RequestMeta::in_process("-");
    let ctx = OpContext::new(state, principal, &meta);
    resolve::resolve_key(&ctx, key_id).await
}

/// One keyplane operation.
pub trait Operation: Send + Sync + Sized + 'static {
    /// The operation's name: in the native API (`POST /v1/<NAME>`), metrics and traces.
    const NAME: &'static str;
    /// Cedar action (`Keyplane::Action::"<ACTION>"`).
    const ACTION: &'static str;
    /// A cryptographic use of a key (counted in `keyplane.key.operations`).
    const KEY_USE: bool = false;
    /// The answer.
    type Output: Send + 'static;

    /// Check values that need no database or HSM (sizes, ranges, formats).
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// The encryption context the request carries (Cedar sees it as tags).
    fn encryption_context(&self) -> Option<&EncryptionContext> {
        None
    }

    /// How the audit record names the resource (default: its Cedar uid).
    fn audit_resource(&self, resource: &ResourceRef) -> String {
        resource.display()
    }

    /// What to answer instead of `NotFound` for the resource when the caller may not even
    /// see it, for an operation that names it by something else (an access key, a grant):
    /// the answer a request naming nothing would get. `None`: the resource's own `NotFound`.
    fn unseen(&self) -> Option<Error> {
        None
    }

    /// Look up what the request is about.
    fn resolve(&self, ctx: &OpContext<'_>) -> impl Future<Output = Result<ResourceRef>> + Send;

    /// A second principal who approved this request beforehand (Cedar `context.approver`),
    /// looked up once the resource is known (`schedule-key-deletion`: a recorded
    /// `approve-key-deletion`).
    fn approver(
        &self,
        _ctx: &OpContext<'_>,
        _resource: &ResourceRef,
    ) -> impl Future<Output = Result<Option<Principal>>> + Send {
        std::future::ready(Ok(None))
    }

    /// An action the request's own subject grants the caller, added to Cedar's
    /// `context.granted` (`retire-grant`: the grant being retired, to its retiring principal).
    fn self_granted(&self, _ctx: &OpContext<'_>, _resource: &ResourceRef) -> Option<&'static str> {
        None
    }

    /// The form key material leaves in, for Cedar's `context.export_format` (`export-key`:
    /// `WRAPPED` or `PKCS12`).
    fn export_format(&self) -> Option<&'static str> {
        None
    }

    /// What a dry run checks besides the pipeline's decision: the authorizations `execute`
    /// makes of its own (rewrap's destination key, a grant passed on through a grant), so
    /// that a dry run answers, and is audited, as the request itself would be. A denial goes
    /// through [`OpContext::authorize`] (or records its policies in `denied`, as it does).
    fn authorize_dry_run(
        &self,
        _ctx: &OpContext<'_>,
        _resource: &ResourceRef,
    ) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// Do it. State changes go through `scope`, so they commit together with the audit record.
    fn execute(
        self,
        ctx: &OpContext<'_>,
        resource: ResourceRef,
        scope: &mut WriteScope,
    ) -> impl Future<Output = Result<Self::Output>> + Send;
}

/// The write transaction of one request, begun on first use, plus what to undo outside the
/// database (HSM objects created) if it does not commit.
pub struct WriteScope {
    tx: Option<Tx>,
    created: Vec<NewVersion>,
    blobs: Vec<WrittenBlob>,
    /// Tenant KEKs created in the HSM by this request.
    keks: Vec<crate::crypto::NewKek>,
    /// Import wrapping keys this request used up (their `CKA_ID`s): destroyed once it
    /// commits, never before (a rollback restores the token row that names the key).
    used_import_keys: Vec<Vec<u8>>,
    /// A policy set to put in force once this request's record is durable, never before: a
    /// set in force must have the record of its change.
    policies: Option<crate::authz::LoadedPolicies>,
    /// Plugins deleted by this request, whose leftovers go once it commits.
    deleted_plugins: Vec<crate::store::plugins::PluginRow>,
}

/// A blob written to a storage backend during a request: (plugin, config, name).
type WrittenBlob = (
    crate::store::plugins::PluginRow,
    crate::plugins::PluginConfig,
    String,
);

impl WriteScope {
    fn new() -> Self {
        WriteScope {
            tx: None,
            created: Vec::new(),
            blobs: Vec::new(),
            keks: Vec::new(),
            used_import_keys: Vec::new(),
            policies: None,
            deleted_plugins: Vec::new(),
        }
    }

    /// Put `loaded` in force (on every node) once this request commits with its record.
    pub fn install_policies_after_commit(&mut self, loaded: crate::authz::LoadedPolicies) {
        self.policies = Some(loaded);
    }

    /// Destroy an import wrapping key once this request commits. If it cannot be destroyed
    /// then, no row names it any more and garbage collection removes it.
    pub fn discard_import_key_after_commit(&mut self, object_id: Vec<u8>) {
        self.used_import_keys.push(object_id);
    }

    /// Remove a deleted plugin's directory and this node's compiled copy of its component
    /// (unless another plugin names it) once this request commits.
    pub fn clean_up_plugin_after_commit(&mut self, deleted: crate::store::plugins::PluginRow) {
        self.deleted_plugins.push(deleted);
    }

    /// The transaction (begins it if needed).
    pub async fn conn(&mut self, state: &AppState) -> Result<&mut Tx> {
        if self.tx.is_none() {
            self.tx = Some(state.db.begin().await?);
        }
        Ok(self.tx.as_mut().expect("just set"))
    }

    /// Register material created outside the database, destroyed if this scope rolls back.
    pub fn created(&mut self, v: NewVersion) {
        self.created.push(v);
    }

    /// Register a tenant KEK created in the HSM, destroyed if this scope rolls back.
    pub fn created_kek(&mut self, kek: crate::crypto::NewKek) {
        self.keks.push(kek);
    }

    /// Register a blob written to a storage backend, deleted if this scope rolls back.
    pub fn created_blob(
        &mut self,
        plugin: crate::store::plugins::PluginRow,
        config: crate::plugins::PluginConfig,
        name: String,
    ) {
        self.blobs.push((plugin, config, name));
    }

    async fn commit_with(mut self, state: &AppState, ev: &AuditEvent) -> Result<()> {
        let nothing_else = self.tx.is_none()
            && self.created.is_empty()
            && self.blobs.is_empty()
            && self.keks.is_empty()
            && self.used_import_keys.is_empty();
        if nothing_else {
            // No change to commit with it: the record joins the next group commit.
            state.audit.append(ev.clone()).await?;
            self.after_commit(state).await;
            return Ok(());
        }
        let prepared = async {
            let conn = self.conn(state).await?;
            audit::append(conn, ev).await
        }
        .await;
        if let Err(e) = prepared {
            self.rollback(state).await;
            return Err(e);
        }
        let tx = self.tx.take().expect("begun above");
        let committed = crate::telemetry::spans::db("COMMIT", "transaction", tx.commit()).await;
        if committed.is_ok() {
            self.after_commit(state).await;
        }
        if let Err(e) = committed {
            // Whether a failed COMMIT took effect is not known for sure (SQLite may have
            // written it before the error), and if it did, its rows name the material made
            // for it: none is destroyed. Garbage collection removes it if no row names it.
            tracing::warn!(error = %e, "a commit failed; the material it made is left to garbage collection");
            self.created.clear();
            self.blobs.clear();
            self.keks.clear();
            self.rollback(state).await;
            return Err(e);
        }
        Ok(())
    }

    /// What follows a commit that took effect.
    async fn after_commit(&mut self, state: &AppState) {
        for kek in self.keks.drain(..) {
            state.keyring.keep_tenant_kek(kek);
        }
        for object_id in self.used_import_keys.drain(..) {
            if let Err(e) = state.keyring.discard_import_key(object_id).await {
                tracing::warn!(error = %e, "used import wrapping key not destroyed; garbage collection removes it");
            }
        }
        if let Some(loaded) = self.policies.take() {
            reload_policies::install(state, loaded, true).await;
        }
        for deleted in self.deleted_plugins.drain(..) {
            state.plugins.after_deletion(&deleted).await;
        }
    }

    async fn rollback(mut self, state: &AppState) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.rollback().await;
        }
        for v in self.created.drain(..) {
            state.keyring.discard(v).await;
        }
        for kek in self.keks.drain(..) {
            state.keyring.discard_tenant_kek(kek).await;
        }
        for (plugin, config, name) in self.blobs.drain(..) {
            let op = crate::plugins::StorageOp::Delete { name };
            if let Err(e) = state.plugins.storage(&plugin, &config, op).await {
                tracing::error!(error = %e, "could not delete the blob of a failed key creation");
            }
        }
    }
}

pub fn principal_display(p: &Principal) -> String {
    format!("Keyplane::User::{:?}", p.id)
}

/// Append a record that comes with no change (denials and failures) through the group commit.
/// A request whose record cannot be written is answered as a database failure instead.
pub async fn audit_alone(state: &AppState, ev: &AuditEvent) -> Result<()> {
    let res = state.audit.append(ev.clone()).await.map(|_| ());
    if let Err(e) = &res {
        tracing::error!(error = %e, request_id = %ev.request_id, "could not append audit record");
    }
    res.map_err(|_| Error::DatabaseUnavailable)
}

/// Record a failed request and return the error to answer with (`DatabaseUnavailable` if it
/// cannot be recorded).
async fn fail(state: &AppState, ev: &mut AuditEvent, e: Error) -> Error {
    let e = match e {
        Error::OtherTenant { kind, id } => {
            ev.decision = "deny";
            Error::NotFound { kind, id }
        }
        e => e,
    };
    ev.outcome = e.code().into();
    match audit_alone(state, ev).await {
        Ok(()) => e,
        Err(audit_error) => audit_error,
    }
}

/// The audit record of a request by `principal` (if known) for `action`, before it is decided.
fn event(meta: &RequestMeta, principal: Option<&Principal>, action: &str) -> AuditEvent {
    AuditEvent {
        request_id: meta.request_id.clone(),
        principal: principal.map_or_else(|| "-".into(), principal_display),
        tenant: principal.map_or_else(|| "-".into(), |p| p.tenant_id.clone()),
        action: action.into(),
        resource: "-".into(),
        decision: "not-evaluated",
        policies: Vec::new(),
        outcome: "ok".into(),
        source: meta.source_ip.to_string(),
        policy_hash: None,
        trace_id: meta.trace_id.clone(),
        user_agent: meta.user_agent.clone(),
        front: Some(meta.front.name()),
        access_key_id: meta.access_key_id.clone(),
    }
}

/// Record a request that never reached an operation (no credentials, an unknown operation, a
/// body that is too large, late, or does not decode into the operation) and return the error
/// to answer with (`DatabaseUnavailable` if it cannot be recorded). `action` is the Cedar
/// action it asked for, or what the front calls an unknown one.
pub async fn refuse(
    state: &AppState,
    meta: &RequestMeta,
    principal: Option<&Principal>,
    action: &str,
    e: Error,
) -> Error {
    fail(state, &mut event(meta, principal, action), e).await
}

/// Run `op` for `principal`: validate → resolve the resource → authorize (Cedar, deny by
/// default) → execute in a write scope → append the audit record in the same transaction.
/// A failure at any step rolls the scope back (destroying HSM objects and blobs it created)
/// and appends an audit record of the failure instead. The output is returned once its
/// record is committed.
///
/// Knows nothing of wire formats: a front decodes its request into `op` and encodes what
/// this returns (see `api`). Cancelling the future half-way can leave material for garbage
/// collection; fronts run it as its own task.
pub async fn execute<O: Operation>(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    op: O,
) -> Result<O::Output> {
    run(state, principal, meta, op, false)
        .await?
        .ok_or(Error::Internal)
}

/// What [`execute`] would decide, without doing it: validate, resolve and authorize `op`,
/// and record the request (outcome `dry-run`). `Ok` means it would have been allowed.
pub async fn dry_run<O: Operation>(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    op: O,
) -> Result<()> {
    run(state, principal, meta, op, true).await.map(|_| ())
}

/// The pipeline; a dry run stops after authorization (`None`).
async fn run<O: Operation>(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    op: O,
    dry_run: bool,
) -> Result<Option<O::Output>> {
    let mut ev = event(meta, Some(principal), O::ACTION);
    let span = tracing::Span::current();
    span.record("keyplane.tenant", principal.tenant_id.as_str());
    let ctx = OpContext::new(state, principal, meta);

    let prepared = async {
        op.validate()?;
        if let Some(ec) = op.encryption_context() {
            crate::crypto::context::validate(ec)?;
        }
        let resource = op.resolve(&ctx).await?;
        let approver = op.approver(&ctx, &resource).await?;
        Ok::<_, Error>((resource, approver))
    }
    .await;
    let (resource, approver) = match prepared {
        Ok(x) => x,
        Err(e) => {
            // Refused by an authorization the resolution needed (a second key it names).
            if let Some(policies) = ctx.denied.lock().ok().and_then(|mut d| d.take()) {
                ev.decision = "deny";
                ev.policies = policies;
            }
            return Err(fail(state, &mut ev, e).await);
        }
    };
    ev.resource = op.audit_resource(&resource);
    if let ResourceRef::Key { row, .. } = &resource {
        span.record("keyplane.key_id", row.id.as_str());
    }
    if state.config.telemetry.record_context_keys {
        if let Some(ec) = op.encryption_context().filter(|ec| !ec.is_empty()) {
            let keys: Vec<&str> = ec.keys().map(String::as_str).collect();
            span.record("keyplane.encryption_context.keys", keys.join(",").as_str());
        }
    }

    let empty = EncryptionContext::new();
    let authz_span = tracing::info_span!(
        "authorize",
        keyplane.authz.action = O::ACTION,
        keyplane.authz.decision = tracing::field::Empty,
        keyplane.authz.policy_count = tracing::field::Empty,
        keyplane.authz.policy_set = tracing::field::Empty,
        keyplane.authz.memoised = tracing::field::Empty,
    );
    let entered = authz_span.enter();
    let ec = op.encryption_context().unwrap_or(&empty);
    let extra = Extra {
        approver: approver.as_ref(),
        self_granted: op.self_granted(&ctx, &resource),
        export_format: op.export_format(),
    };
    let extra_without_grants = Extra {
        self_granted: None,
        ..extra
    };
    let decision = ctx.decide(O::ACTION, &resource, ec, extra);
    drop(entered);
    if let Ok(d) = &decision {
        authz_span.record(
            "keyplane.authz.decision",
            if d.allowed { "allow" } else { "deny" },
        );
        authz_span.record("keyplane.authz.policy_count", d.policies.len() as u64);
        authz_span.record("keyplane.authz.policy_set", d.policy_set.as_str());
        authz_span.record("keyplane.authz.memoised", d.memoised);
    }
    let decision = match decision {
        Ok(d) => d,
        Err(e) => {
            return Err(fail(state, &mut ev, e).await);
        }
    };
    ev.policies = decision.policies.clone();
    ev.policy_hash = Some(decision.policy_set.clone());
    if !decision.errors.is_empty() {
        tracing::warn!(request_id = %meta.request_id, errors = decision.errors.len(), "policy evaluation errors");
    }
    if !decision.allowed {
        metrics().denial(O::ACTION);
        ev.decision = "deny";
        let mut e = ctx.refusal(O::ACTION, &resource);
        if let (Error::NotFound { .. }, Some(unseen)) = (&e, op.unseen()) {
            e = unseen;
        }
        return Err(fail(state, &mut ev, e).await);
    }
    ev.decision = "allow";
    if let Some(grants) = ctx.grants_used(O::ACTION, &resource, ec, extra_without_grants) {
        // Right after the leading uid, whose decision the grant made (a rewrap's record goes
        // on with `-> <destination>`).
        let uid = resource.display();
        ev.resource = match ev.resource.strip_prefix(uid.as_str()) {
            Some(rest) => format!("{uid} via grant:{grants}{rest}"),
            None => format!("{} via grant:{grants}", ev.resource),
        };
    }
    if let Err(e) = refuse_if_forgotten(meta, &resource) {
        return Err(fail(state, &mut ev, e).await);
    }
    if dry_run {
        if let Err(e) = op.authorize_dry_run(&ctx, &resource).await {
            if let Some(policies) = ctx.denied.lock().ok().and_then(|mut d| d.take()) {
                ev.decision = "deny";
                ev.policies = policies;
            }
            return Err(fail(state, &mut ev, e).await);
        }
        ev.outcome = "dry-run".into();
        audit_alone(state, &ev).await?;
        return Ok(None);
    }

    let key_id = match &resource {
        ResourceRef::Key { row, .. } => Some(row.id.clone()),
        _ => None,
    };
    let mut scope = WriteScope::new();
    let executed = op.execute(&ctx, resource, &mut scope).await;
    if let Some(policies) = ctx.denied.lock().ok().and_then(|mut d| d.take()) {
        ev.decision = "deny";
        ev.policies = policies;
    }
    if let Some(made) = ctx.made.lock().ok().and_then(|mut m| m.take()) {
        ev.resource = format!("{} {made}", ev.resource);
    }
    match executed {
        Ok(out) => {
            if let Err(e) = scope.commit_with(state, &ev).await {
                return Err(fail(state, &mut ev, e).await);
            }
            if O::KEY_USE {
                if let Some(key_id) = key_id {
                    metrics().key_operation(&principal.tenant_id, O::NAME, &key_id);
                }
            }
            Ok(Some(out))
        }
        Err(e) => {
            scope.rollback(state).await;
            if let Error::Throttled { .. } = e {
                // Refused by a limit (the tenant's plugin budget, the node's plugin instances,
                // its PKCS#12 slots), which each operation meets before it does anything that
                // lasts (its transaction is rolled back): counted for the principal's
                // aggregated record, as a request quota's refusals are (a tenant flooding
                // plugin work must not fill the audit log instead).
                state
                    .quotas
                    .count_refused(&principal.tenant_id, || principal_display(principal));
                return Err(e);
            }
            Err(fail(state, &mut ev, e).await)
        }
    }
}

/// Calls the macro `$callback` with the type of every operation, in the order the native API
/// documents them: a front builds its table from this list (mapping each operation it
/// speaks), so an operation written once appears in every front that maps it.
macro_rules! operations {
    ($callback:ident) => {
        $callback! {
            $crate::ops::create_tenant::CreateTenant,
            $crate::ops::create_principal::CreatePrincipal,
            $crate::ops::create_key::CreateKey,
            $crate::ops::describe_key::DescribeKey,
            $crate::ops::list_keys::ListKeys,
            $crate::ops::encrypt::Encrypt,
            $crate::ops::decrypt::Decrypt,
            $crate::ops::generate_data_key::GenerateDataKey,
            $crate::ops::generate_data_key::GenerateDataKeyWithoutPlaintext,
            $crate::ops::generate_data_key_pair::GenerateDataKeyPair,
            $crate::ops::generate_data_key_pair::GenerateDataKeyPairWithoutPlaintext,
            $crate::ops::generate_random::GenerateRandom,
            $crate::ops::hash::Hash,
            $crate::ops::get_caller_identity::GetCallerIdentity,
            $crate::ops::access_keys::CreateAccessKey,
            $crate::ops::access_keys::ListAccessKeys,
            $crate::ops::access_keys::DeleteAccessKey,
            $crate::ops::sign::Sign,
            $crate::ops::sign::Verify,
            $crate::ops::mac::GenerateMac,
            $crate::ops::mac::VerifyMac,
            $crate::ops::get_public_key::GetPublicKey,
            $crate::ops::generate_csr::GenerateCsr,
            $crate::ops::derive_shared_secret::DeriveSharedSecret,
            $crate::ops::describe_hsm::DescribeHsm,
            $crate::ops::set_storage_backend::SetStorageBackend,
            $crate::ops::upload_plugin::UploadPlugin,
            $crate::ops::plugin_ops::ListPlugins,
            $crate::ops::plugin_ops::DescribePlugin,
            $crate::ops::plugin_ops::DeletePlugin,
            $crate::ops::rotation_ops::SetRotationSchedule,
            $crate::ops::rotation_ops::PreviewRotation,
            $crate::ops::rotate_key::RotateKey,
            $crate::ops::rotate_key::ListKeyVersions,
            $crate::ops::key_state::EnableKey,
            $crate::ops::key_state::DisableKey,
            $crate::ops::key_state::EnableKeyVersion,
            $crate::ops::key_state::DisableKeyVersion,
            $crate::ops::key_state::RevokeKeyVersion,
            $crate::ops::key_state::SetMinDecryptionVersion,
            $crate::ops::key_deletion::ApproveKeyDeletion,
            $crate::ops::key_deletion::ScheduleKeyDeletion,
            $crate::ops::key_deletion::CancelKeyDeletion,
            $crate::ops::key_deletion::SetDeletionProtection,
            $crate::ops::configure_key::ConfigureKey,
            $crate::ops::rewrap::Rewrap,
            $crate::ops::aliases::CreateAlias,
            $crate::ops::aliases::UpdateAlias,
            $crate::ops::aliases::DeleteAlias,
            $crate::ops::aliases::ListAliases,
            $crate::ops::scheduler::RunScheduler,
            $crate::ops::reload_policies::ReloadPolicies,
            $crate::ops::get_parameters_for_import::GetParametersForImport,
            $crate::ops::import_key_material::ImportKeyMaterial,
            $crate::ops::export_key::ExportKey,
            $crate::ops::delete_imported_key_material::DeleteImportedKeyMaterial,
            $crate::ops::update_key_description::UpdateKeyDescription,
            $crate::ops::key_tags::TagKey,
            $crate::ops::key_tags::UntagKey,
            $crate::ops::key_tags::ListKeyTags,
            $crate::ops::automatic_rotation::EnableKeyRotation,
            $crate::ops::automatic_rotation::DisableKeyRotation,
            $crate::ops::automatic_rotation::GetKeyRotationStatus,
            $crate::ops::key_policies::GetKeyPolicy,
            $crate::ops::key_policies::PutKeyPolicy,
            $crate::ops::key_policies::ListKeyPolicies,
            $crate::ops::grants::CreateGrant,
            $crate::ops::grants::ListGrants,
            $crate::ops::grants::RevokeGrant,
            $crate::ops::grants::RetireGrant,
            $crate::ops::grants::ListRetirableGrants,
        }
    };
}
pub(crate) use operations;

macro_rules! actions_of {
    ($($op:ty),* $(,)?) => {
        &[$(<$op>::ACTION),*]
    };
}

/// The Cedar action of every operation (the policy schema must declare each).
pub const ACTIONS: &[&str] = operations!(actions_of);
