//! The operation table: every keyplane operation, whatever front it arrives through.
//!
//! One file per operation (its request and response types, its Cedar action, how it resolves
//! its resource, what it does). [`run`] is the single pipeline every request goes through:
//! authenticate → decode → validate → resolve the resource → authorize (Cedar, deny by
//! default) → execute in a write scope → append the audit record in the same transaction →
//! answer. A failure at any step rolls the scope back (destroying HSM objects it created) and
//! appends an audit record of the failure instead.
//!
//! A request refused on a key its caller may not even see (Cedar denies it `DescribeKey` on
//! the key, as for every key of another tenant) is answered as if the key did not exist
//! (`404`, the same message), so key ids cannot be probed across tenants; its audit record
//! still says `deny`. The answer's JSON is written straight from the operation's output into
//! a buffer that is zeroized when the response has been sent (plaintexts, data keys); the
//! copies the HTTP and TLS libraries make on the way out are theirs, not zeroized.

pub mod aliases;
mod b64;
mod common;
pub mod create_key;
pub mod create_principal;
pub mod create_tenant;
pub mod decrypt;
pub mod derive_shared_secret;
pub mod describe_hsm;
pub mod describe_key;
pub mod encrypt;
pub mod export_key;
pub mod gc;
pub mod generate_data_key;
pub mod generate_random;
pub mod get_caller_identity;
pub mod get_parameters_for_import;
pub mod get_public_key;
pub mod import_key_material;
pub mod key_deletion;
pub mod key_state;
mod key_transport;
pub mod list_keys;
pub mod mac;
pub mod plugin_config;
pub mod plugin_ops;
pub mod reload_policies;
pub mod rewrap;
pub mod rotate_key;
pub mod rotation_ops;
mod rsa_oaep;
pub mod scheduler;
pub mod set_storage_backend;
pub mod sign;
pub mod upload_plugin;
mod versions;

use std::future::Future;
use std::net::IpAddr;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::SqliteConnection;

use crate::audit::{self, AuditEvent};
use crate::authn::Principal;
use crate::authz::{AuthzRequest, Decision, ResourceRef};
use crate::crypto::context::EncryptionContext;
use crate::crypto::NewVersion;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::Tx;
use crate::telemetry::metrics::metrics;
use tracing::Instrument;
use zeroize::Zeroizing;

/// The JSON of a successful answer, zeroized when dropped (it may hold plaintext or a data
/// key).
pub type Reply = Zeroizing<Vec<u8>>;

pub use b64::Base64;
pub use common::{key_resource, load_blob};

/// Facts about the request that are not in its body.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: String,
    pub source_ip: IpAddr,
    pub client_certificate: bool,
    /// Multi-factor authentication established for this request (Cedar `context.mfa`).
    pub mfa: bool,
    /// W3C trace id of the request (recorded in its audit record).
    pub trace_id: Option<String>,
    /// The client's `User-Agent`, truncated (recorded in its audit record).
    pub user_agent: Option<String>,
}

/// What an operation sees while it runs.
pub struct OpContext<'a> {
    pub state: &'a AppState,
    pub principal: &'a Principal,
    pub meta: &'a RequestMeta,
    /// The determining policies of a denial by [`OpContext::authorize`] (the audit record
    /// then says `deny`).
    denied: std::sync::Mutex<Option<Vec<String>>>,
}

impl<'a> OpContext<'a> {
    fn new(state: &'a AppState, principal: &'a Principal, meta: &'a RequestMeta) -> Self {
        OpContext {
            state,
            principal,
            meta,
            denied: std::sync::Mutex::new(None),
        }
    }

    /// Cedar's decision on `action` on `resource` by this request's principal.
    fn decide(
        &self,
        action: &str,
        resource: &ResourceRef,
        ec: &EncryptionContext,
        approver: Option<&Principal>,
    ) -> Result<Decision> {
        self.state.authz.authorize(&AuthzRequest {
            principal: self.principal,
            action,
            resource,
            encryption_context: ec,
            source_ip: self.meta.source_ip,
            client_certificate: self.meta.client_certificate,
            request_time: chrono::Utc::now().timestamp(),
            mfa: self.meta.mfa,
            approver,
        })
    }

    /// Authorize a second resource of the same request (rewrap's destination key, the key an
    /// alias points to before `update-alias`). A denial fails the request, is audited as
    /// `deny` with its determining policies, and is answered as for the pipeline's own check.
    pub fn authorize(
        &self,
        action: &'static str,
        resource: &ResourceRef,
        ec: &EncryptionContext,
    ) -> Result<()> {
        let decision = self.decide(action, resource, ec, None)?;
        if decision.allowed {
            return Ok(());
        }
        metrics().denial(action);
        if let Ok(mut d) = self.denied.lock() {
            *d = Some(decision.policies);
        }
        Err(self.refusal(action, resource))
    }

    /// The answer to a denial of `action` on `resource`: `NotFound` if the resource is a key
    /// the principal may not even describe (so that its existence is not revealed), else
    /// `AccessDenied`.
    fn refusal(&self, action: &str, resource: &ResourceRef) -> Error {
        if let ResourceRef::Key { row, .. } = resource {
            let empty = EncryptionContext::new();
            let visible = self
                .decide("DescribeKey", resource, &empty, None)
                .is_ok_and(|d| d.allowed);
            if !visible {
                return Error::NotFound {
                    kind: "key",
                    id: row.id.clone(),
                };
            }
        }
        Error::AccessDenied {
            action: action.into(),
            resource: resource.display(),
        }
    }
}

/// Resolve a key (or alias) as an operation run by `principal` would (for tools and
/// benchmarks that call Cedar directly).
pub async fn resolve_key_for(
    state: &AppState,
    principal: &Principal,
    key_id: &str,
) -> Result<ResourceRef> {
    let meta = RequestMeta {
        request_id: "-".into(),
        source_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        client_certificate: false,
        mfa: false,
        trace_id: None,
        user_agent: None,
    };
    let ctx = OpContext::new(state, principal, &meta);
    common::resolve_key(&ctx, key_id).await
}

/// One keyplane operation.
pub trait Operation: DeserializeOwned + Send + Sync + Sized + 'static {
    /// Name in the native API (`POST /v1/<NAME>`).
    const NAME: &'static str;
    /// Cedar action (`Keyplane::Action::"<ACTION>"`).
    const ACTION: &'static str;
    /// A cryptographic use of a key (counted in `keyplane.key.operations`).
    const KEY_USE: bool = false;
    /// The answer.
    type Output: Serialize + Send + 'static;

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
    /// Tenants whose KEK was created in the HSM by this request.
    keks: Vec<String>,
}

/// A blob written to a storage backend during a request: (plugin, config, name).
type WrittenBlob = (
    crate::store::plugins::PluginRow,
    Vec<(String, String)>,
    String,
);

impl WriteScope {
    fn new() -> Self {
        WriteScope {
            tx: None,
            created: Vec::new(),
            blobs: Vec::new(),
            keks: Vec::new(),
        }
    }

    /// The transaction (begins it if needed).
    pub async fn conn(&mut self, state: &AppState) -> Result<&mut SqliteConnection> {
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
    pub fn created_kek(&mut self, tenant: &str) {
        self.keks.push(tenant.to_string());
    }

    /// Register a blob written to a storage backend, deleted if this scope rolls back.
    pub fn created_blob(
        &mut self,
        plugin: crate::store::plugins::PluginRow,
        config: Vec<(String, String)>,
        name: String,
    ) {
        self.blobs.push((plugin, config, name));
    }

    async fn commit_with(mut self, state: &AppState, ev: &AuditEvent) -> Result<()> {
        let nothing_else = self.tx.is_none()
            && self.created.is_empty()
            && self.blobs.is_empty()
            && self.keks.is_empty();
        if nothing_else {
            // No change to commit with it: the record joins the next group commit.
            return state.audit.append(ev.clone()).await.map(|_| ());
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
        if let Err(e) = committed {
            // Whether a failed COMMIT took effect is not known for sure (SQLite may have
            // written it before the error), and if it did, its rows name the material made
            // for it: none is destroyed. Garbage collection removes it if no row names it.
            tracing::warn!(error = %e, "a commit failed; the material it made is left to garbage collection");
            self.created.clear();
            self.blobs.clear();
            self.rollback(state).await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn rollback(mut self, state: &AppState) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.rollback().await;
        }
        for v in self.created.drain(..) {
            state.keyring.discard(v).await;
        }
        for tenant in self.keks.drain(..) {
            state.keyring.discard_tenant_kek(&tenant).await;
        }
        for (plugin, config, name) in self.blobs.drain(..) {
            let op = crate::plugins::StorageOp::Delete { name };
            if let Err(e) = state.plugins.storage(&plugin, &config, op).await {
                tracing::error!(error = %e, "could not delete the blob of a failed key creation");
            }
        }
    }
}

fn principal_display(p: &Principal) -> String {
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

/// Record a failed request and return the error to answer with (503 if it cannot be recorded).
pub async fn fail(state: &AppState, ev: &mut AuditEvent, e: Error) -> Error {
    ev.outcome = e.code().into();
    match audit_alone(state, ev).await {
        Ok(()) => e,
        Err(audit_error) => audit_error,
    }
}

fn decode<O: Operation>(body: &[u8]) -> Result<O> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => Error::MalformedJson(e.to_string()),
            Category::Data => Error::Validation(e.to_string()),
        }
    })
}

/// The pipeline, in an `operation` span, counted and timed. `auth` is the outcome of
/// authentication by the front.
pub async fn run<O: Operation>(
    state: &AppState,
    auth: Result<Principal>,
    meta: &RequestMeta,
    body: &[u8],
) -> Result<Reply> {
    let span = tracing::info_span!(
        "operation",
        otel.name = O::NAME,
        keyplane.operation = O::NAME,
        keyplane.action = O::ACTION,
        keyplane.tenant = tracing::field::Empty,
        keyplane.key_id = tracing::field::Empty,
        keyplane.encryption_context.keys = tracing::field::Empty,
        keyplane.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let start = std::time::Instant::now();
    let result = run_in_span::<O>(state, auth, meta, body)
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    span.record("keyplane.outcome", outcome);
    if matches!(&result, Err(e) if e.status().is_server_error()) {
        span.record("otel.status_code", "ERROR");
    }
    metrics().request(O::NAME, outcome, start.elapsed().as_secs_f64());
    result
}

async fn run_in_span<O: Operation>(
    state: &AppState,
    auth: Result<Principal>,
    meta: &RequestMeta,
    body: &[u8],
) -> Result<Reply> {
    let mut ev = AuditEvent {
        request_id: meta.request_id.clone(),
        principal: "-".into(),
        tenant: "-".into(),
        action: O::ACTION.into(),
        resource: "-".into(),
        decision: "not-evaluated",
        policies: Vec::new(),
        outcome: "ok".into(),
        source: meta.source_ip.to_string(),
        policy_hash: None,
        trace_id: meta.trace_id.clone(),
        user_agent: meta.user_agent.clone(),
    };
    let principal = match auth {
        Ok(p) => p,
        Err(e) => {
            return Err(fail(state, &mut ev, e).await);
        }
    };
    ev.principal = principal_display(&principal);
    ev.tenant = principal.tenant_id.clone();
    let span = tracing::Span::current();
    span.record("keyplane.tenant", principal.tenant_id.as_str());
    let ctx = OpContext::new(state, &principal, meta);

    let prepared = async {
        let req: O = decode(body)?;
        req.validate()?;
        if let Some(ec) = req.encryption_context() {
            crate::crypto::context::validate(ec)?;
        }
        let resource = req.resolve(&ctx).await?;
        let approver = req.approver(&ctx, &resource).await?;
        Ok::<_, Error>((req, resource, approver))
    }
    .await;
    let (req, resource, approver) = match prepared {
        Ok(x) => x,
        Err(e) => {
            return Err(fail(state, &mut ev, e).await);
        }
    };
    ev.resource = req.audit_resource(&resource);
    if let ResourceRef::Key { row, .. } = &resource {
        span.record("keyplane.key_id", row.id.as_str());
    }
    if state.config.telemetry.record_context_keys {
        if let Some(ec) = req.encryption_context().filter(|ec| !ec.is_empty()) {
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
    let ec = req.encryption_context().unwrap_or(&empty);
    let decision = ctx.decide(O::ACTION, &resource, ec, approver.as_ref());
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
        let e = ctx.refusal(O::ACTION, &resource);
        return Err(fail(state, &mut ev, e).await);
    }
    ev.decision = "allow";

    let key_id = match &resource {
        ResourceRef::Key { row, .. } => Some(row.id.clone()),
        _ => None,
    };
    let mut scope = WriteScope::new();
    let executed = req.execute(&ctx, resource, &mut scope).await;
    if let Some(policies) = ctx.denied.lock().ok().and_then(|mut d| d.take()) {
        ev.decision = "deny";
        ev.policies = policies;
    }
    match executed {
        Ok(out) => {
            let mut reply = Reply::default();
            if serde_json::to_writer(&mut *reply, &out).is_err() {
                scope.rollback(state).await;
                return Err(fail(state, &mut ev, Error::Internal).await);
            }
            drop(out);
            if let Err(e) = scope.commit_with(state, &ev).await {
                return Err(fail(state, &mut ev, e).await);
            }
            if O::KEY_USE {
                if let Some(key_id) = key_id {
                    metrics().key_operation(&principal.tenant_id, O::NAME, &key_id);
                }
            }
            Ok(reply)
        }
        Err(e) => {
            scope.rollback(state).await;
            Err(fail(state, &mut ev, e).await)
        }
    }
}

/// A type-erased entry of the operation table.
pub type Handler = for<'a> fn(
    &'a AppState,
    Result<Principal>,
    &'a RequestMeta,
    &'a [u8],
) -> BoxFuture<'a, Result<Reply>>;

fn handler<'a, O: Operation>(
    state: &'a AppState,
    auth: Result<Principal>,
    meta: &'a RequestMeta,
    body: &'a [u8],
) -> BoxFuture<'a, Result<Reply>> {
    Box::pin(run::<O>(state, auth, meta, body))
}

/// One entry of the operation table.
macro_rules! op {
    ($op:ty) => {
        (<$op>::NAME, <$op>::ACTION, handler::<$op>)
    };
}

/// Every operation: (native name, Cedar action, handler).
pub const OPERATIONS: &[(&str, &str, Handler)] = &[
    op!(create_tenant::CreateTenant),
    op!(create_principal::CreatePrincipal),
    op!(create_key::CreateKey),
    op!(describe_key::DescribeKey),
    op!(list_keys::ListKeys),
    op!(encrypt::Encrypt),
    op!(decrypt::Decrypt),
    op!(generate_data_key::GenerateDataKey),
    op!(generate_data_key::GenerateDataKeyWithoutPlaintext),
    op!(generate_random::GenerateRandom),
    op!(get_caller_identity::GetCallerIdentity),
    op!(sign::Sign),
    op!(sign::Verify),
    op!(mac::GenerateMac),
    op!(mac::VerifyMac),
    op!(get_public_key::GetPublicKey),
    op!(derive_shared_secret::DeriveSharedSecret),
    op!(describe_hsm::DescribeHsm),
    op!(set_storage_backend::SetStorageBackend),
    op!(upload_plugin::UploadPlugin),
    op!(plugin_ops::ListPlugins),
    op!(plugin_ops::DescribePlugin),
    op!(plugin_ops::DeletePlugin),
    op!(rotation_ops::SetRotationSchedule),
    op!(rotation_ops::PreviewRotation),
    op!(rotate_key::RotateKey),
    op!(rotate_key::ListKeyVersions),
    op!(key_state::EnableKey),
    op!(key_state::DisableKey),
    op!(key_state::EnableKeyVersion),
    op!(key_state::DisableKeyVersion),
    op!(key_state::RevokeKeyVersion),
    op!(key_state::SetMinDecryptionVersion),
    op!(key_deletion::ApproveKeyDeletion),
    op!(key_deletion::ScheduleKeyDeletion),
    op!(key_deletion::CancelKeyDeletion),
    op!(rewrap::Rewrap),
    op!(aliases::CreateAlias),
    op!(aliases::UpdateAlias),
    op!(aliases::DeleteAlias),
    op!(aliases::ListAliases),
    op!(scheduler::RunScheduler),
    op!(reload_policies::ReloadPolicies),
    op!(get_parameters_for_import::GetParametersForImport),
    op!(import_key_material::ImportKeyMaterial),
    op!(export_key::ExportKey),
];

/// Find an operation by its native name.
pub fn lookup(name: &str) -> Option<Handler> {
    OPERATIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, h)| *h)
}
