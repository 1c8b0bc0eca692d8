//! What every front does around an operation, in one place: the request's facts
//! ([`RequestMeta`]), authentication, reading the body within limits, auditing a request that
//! never reaches an operation, and running the operation as its own task inside an
//! `operation` span, counted and timed. A front only maps its wire request to an operation
//! and the output or error back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::authn::{sigv4, Principal};
use crate::error::{Error, Result};
use crate::ops::{self, Front, Operation, RequestMeta};
use crate::state::AppState;
use crate::telemetry::http::RequestId;
use crate::telemetry::metrics::metrics;

/// Longest `User-Agent` kept in an audit record.
const MAX_USER_AGENT: usize = 256;

/// Who signed a request with Signature Version 4, and the region it was signed for.
pub struct Signed {
    pub principal: Principal,
    /// The access key the request was signed with.
    pub access_key_id: String,
    /// The principal's tenant's account id.
    pub account_id: String,
    pub region: String,
}

/// Operations one wire request may run for what its most expensive one cost (see
/// [`Gate::taken`]): enough for Transit's longest answer of a few steps (describe, list the
/// versions, read each public key of a signing key's first versions); a request that walks
/// more (a listing of many pages) pays one for each past these.
pub const FREE_OPERATIONS: u32 = 8;

/// One request on its way to an operation.
pub struct Gate {
    pub state: Arc<AppState>,
    pub meta: RequestMeta,
    /// Requests already taken from the caller's quotas for this request: one by
    /// [`Gate::admit`], then what its operations cost. A wire request is charged once, as
    /// its most expensive operation (one, or a batch's items): a front that answers it with
    /// a few (Transit's read after a write, create on first use) does not charge those, so a
    /// write that took effect is not answered 429 for reading it back. Past
    /// [`FREE_OPERATIONS`] operations (a listing walked page by page), each costs one again.
    pub taken: std::sync::atomic::AtomicU32,
    /// Operations this request has run (and [`Gate::admit`]'s charge).
    pub ran: std::sync::atomic::AtomicU32,
}

impl Gate {
    /// The request's facts from its connection, headers and extensions (the request id the
    /// HTTP middleware gave it, see `telemetry::http`; the client certificate of its
    /// connection, see `tls::ClientCertificates`).
    pub fn new(state: Arc<AppState>, front: Front, peer: SocketAddr, request: &Parts) -> Self {
        let (headers, extensions) = (&request.headers, &request.extensions);
        let client_certificate = extensions
            .get::<crate::tls::Presented>()
            .and_then(|p| p.0.clone());
        let meta = RequestMeta {
            front,
            request_id: extensions
                .get::<RequestId>()
                .map(|RequestId(id)| id.clone())
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            source_ip: peer.ip(),
            client_certificate,
            trace_id: current_trace_id(),
            user_agent: headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua[..ua.floor_char_boundary(MAX_USER_AGENT)].to_string()),
            grant_tokens: Vec::new(),
            access_key_id: None,
        };
        Gate {
            state,
            meta,
            taken: Default::default(),
            ran: Default::default(),
        }
    }

    /// This request's gate with what a front learnt of it on the way (the access key that
    /// signed it, its grant tokens) in its facts, and its charges so far carried over.
    pub fn with_meta(&self, meta: RequestMeta) -> Gate {
        use std::sync::atomic::Ordering::Relaxed;
        Gate {
            state: self.state.clone(),
            meta,
            taken: self.taken.load(Relaxed).into(),
            ran: self.ran.load(Relaxed).into(),
        }
    }

    /// Refuse a batch of `cost` operations that the caller's quotas could never admit at once
    /// (more than a burst): a front that does work of its own before the batch runs (Transit
    /// creating the key a batch encrypts under) asks first, so that the refusal leaves
    /// nothing done. One request always fits (a burst is at least 1): only a batch is
    /// measured, so the quota path of a single request reads the limits once.
    pub fn batch_fits(&self, principal: &Principal, cost: u32) -> Result<()> {
        let fits = match cost {
            0 | 1 => Ok(()),
            _ => self.state.quotas.fits(&principal.tenant_id, cost),
        };
        fits.map_err(|burst| {
            Error::Validation(format!(
                "{cost} operations in one request are more than the request quota lets one \
                 request take at once ({burst}); send batches of at most {burst} items"
            ))
        })
    }

    /// Authenticate an `Authorization: Bearer` header, in an `authenticate` span.
    pub async fn bearer(&self, headers: &HeaderMap) -> Result<Principal> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.bearer_value(header).await
    }

    /// Authenticate the value of an `Authorization` header (`Bearer <token>`), however the
    /// front received the token (Vault clients send it in `X-Vault-Token`).
    pub async fn bearer_value(&self, header: Option<&str>) -> Result<Principal> {
        let state = &self.state;
        self.admit_source()?;
        let auth = authenticated(state.tokens.authenticate(&state.rows, header), |p| {
            Some(p.id.as_str())
        })
        .await;
        self.count_failure(auth)
    }

    /// Before authenticating: refuse a source that failed to authenticate too often (see
    /// `quotas::sources`), without the work of checking its credentials.
    fn admit_source(&self) -> Result<()> {
        self.state
            .quotas
            .admit_source(self.meta.source_ip)
            .map_err(|wait| {
                metrics().throttled(self.meta.front.name());
                Error::throttled(wait)
            })
    }

    /// Count a failed authentication against the request's source.
    fn count_failure<T>(&self, auth: Result<T>) -> Result<T> {
        if matches!(&auth, Err(e) if !e.is_server_fault()) {
            self.state.quotas.source_failed(self.meta.source_ip);
        }
        auth
    }

    /// Read the body within `limits` (see [`read_body`]).
    pub async fn read_body(&self, body: Body, limits: BodyLimits) -> Result<Zeroizing<Vec<u8>>> {
        read_body(body, limits).await
    }

    /// Record a request that never reached an operation and return the error to answer with
    /// (see [`ops::refuse`]). `principal` is `None` when the caller is not (yet) proven: past
    /// the first few of its source in an audit window, such a request is only counted for
    /// its source's aggregated record (see `quotas::sources`).
    pub async fn refuse(&self, principal: Option<&Principal>, action: &str, e: Error) -> Error {
        // A proven caller's refused request is charged as one it ran, before its record is
        // written: past its quota it is answered as throttled, not audited on its own (the
        // AWS front proves a caller with the body and charges nothing before; the native
        // and Transit fronts charged it already, see `Gate::admit`).
        if let Some(Err(throttled)) = principal.map(|p| self.take_quota(p, 1)) {
            return throttled;
        }
        if principal.is_none()
            && !self
                .state
                .quotas
                .audit_unauthenticated(self.meta.source_ip, e.code())
        {
            return e;
        }
        ops::refuse(&self.state, &self.meta, principal, action, e).await
    }

    /// Authenticate a request signed with Signature Version 4 for `service` and read its
    /// body: the signature is parsed and its access key found first (a request that fails
    /// there gets only the refused limits), then the body is read within `max_body`, then the
    /// signature is checked over the whole request. The signature's time is checked against
    /// the wall clock, not the service clock (which tests move forward).
    pub async fn sigv4(
        &self,
        parts: &axum::http::request::Parts,
        body: Body,
        service: &str,
        max_body: usize,
    ) -> Result<(Signed, Zeroizing<Vec<u8>>)> {
        let now = chrono::Utc::now().timestamp();
        let state = &self.state;
        let admitted = self.admit_source();
        let head = sigv4::Request::from_parts(parts, &[]);
        let claim = match admitted {
            Ok(()) => {
                let claim =
                    authenticated(state.sigv4.claim(&state.rows, &head, service, now), |_| {
                        None
                    });
                self.count_failure(claim.await)
            }
            Err(e) => Err(e),
        };
        let limits = match &claim {
            Ok(_) => BodyLimits::authenticated(max_body),
            Err(_) => BodyLimits::refused(max_body),
        };
        let read = read_body(body, limits).await;
        let pending = claim?;
        let body = read?;
        let region = pending.region().to_string();
        let access_key_id = pending.access_key_id().to_string();
        let whole = sigv4::Request::from_parts(parts, &body);
        let verify = state.sigv4.verify(&state.keyring, pending, &whole, now);
        let signed =
            self.count_failure(authenticated(verify, |v| Some(v.principal.id.as_str())).await)?;
        Ok((
            Signed {
                principal: signed.principal,
                access_key_id,
                account_id: signed.account_id,
                region,
            },
            body,
        ))
    }

    /// Run an operation decoded by a front (or the error decoding it) for `principal`, in an
    /// `operation` span, counted and timed. It runs as its own task: a client that
    /// disconnects cannot cancel it half-way (after an HSM object or blob was created but
    /// before the rollback or audit record).
    pub async fn run<O: Operation>(
        &self,
        principal: Principal,
        op: Result<O>,
    ) -> Result<O::Output> {
        self.run_as(principal, op, false)
            .await?
            .ok_or(Error::Internal)
    }

    /// As [`Gate::run`], but only decide (see [`ops::dry_run`]): `Ok` if it would be allowed.
    pub async fn dry_run<O: Operation>(&self, principal: Principal, op: Result<O>) -> Result<()> {
        self.run_as(principal, op, true).await.map(|_| ())
    }

    async fn run_as<O: Operation>(
        &self,
        principal: Principal,
        op: Result<O>,
        dry_run: bool,
    ) -> Result<Option<O::Output>> {
        self.take_quota(&principal, 1)?;
        let (state, meta) = (self.state.clone(), self.meta.clone());
        let task = async move {
            match op {
                Ok(op) if dry_run => ops::dry_run(&state, &principal, &meta, op)
                    .await
                    .map(|()| None),
                Ok(op) => ops::execute(&state, &principal, &meta, op).await.map(Some),
                Err(e) => Err(ops::refuse(&state, &meta, Some(&principal), O::ACTION, e).await),
            }
        };
        self.spawned::<O, _>(None, task).await
    }

    /// Run a batch of one operation's requests (or the errors decoding them) for `principal`
    /// (see [`ops::execute_many`]), as [`Gate::run`] runs one: its own task, one `operation`
    /// span named after `O` (with `keyplane.batch.items`), counted once with the label
    /// `batch`. `Err` only when the batch as a whole is refused (audited once); each item's
    /// failure is in its own result.
    pub async fn run_many<O: Operation>(
        &self,
        principal: Principal,
        items: Vec<Result<O>>,
    ) -> Result<Vec<Result<O::Output>>> {
        let count = items.len();
        match self.take_quota(&principal, u32::try_from(count).unwrap_or(u32::MAX)) {
            Ok(()) => {}
            // Past the quota: counted, not audited on its own (see `take_quota`).
            Err(e @ Error::Throttled { .. }) => return Err(e),
            // More items than a bucket holds: a batch refused as a whole, one record.
            Err(e) => return Err(self.refuse(Some(&principal), O::ACTION, e).await),
        }
        let (state, meta) = (self.state.clone(), self.meta.clone());
        let task = async move { ops::execute_many(&state, &principal, &meta, items).await };
        self.spawned::<O, _>(Some(count), task).await
    }

    /// Take one request from `principal`'s quotas now, before its body is read: a caller past
    /// its quota must not make the node read and hold a body of up to the batch or upload
    /// limit first (the request is answered without its body read, see
    /// [`BodyLimits::refused`]). The operation then takes only what it costs beyond this one.
    /// Only for a principal already proven: a signature is proven with the body, so the AWS
    /// front takes its quota when the operation runs, or when the request is refused before
    /// one ([`Gate::refuse`]).
    fn admit(&self, principal: &Principal) -> Result<()> {
        self.take_quota(principal, 1)
    }

    /// After a bearer authentication: [`Gate::admit`] the caller, if proven, before its body
    /// is read. `Ok(body)` to read on; past its quota, the error to answer with (not audited
    /// on its own, as every quota refusal), the body drained as a refused request's is.
    pub async fn admit_before_body(
        &self,
        auth: &Result<Principal>,
        body: Body,
    ) -> std::result::Result<Body, Error> {
        let Ok(principal) = auth else {
            return Ok(body);
        };
        match self.admit(principal) {
            Ok(()) => Ok(body),
            Err(e) => {
                let max = self.state.config.limits.max_body_bytes;
                let _ = read_body(body, BodyLimits::refused(max)).await;
                Err(e)
            }
        }
    }

    /// Take `cost` requests, less what this request took already ([`Gate::taken`]), from
    /// the principal's and its tenant's quotas (`crate::quotas`): a refusal is counted for
    /// the quotas' aggregated audit record, not audited on its own. A request of more
    /// operations than a bucket can hold (a batch's items) is refused whole, as bad input
    /// (waiting would not help: [`crate::quotas::Quotas::fits`]), for the caller to audit.
    fn take_quota(&self, principal: &Principal, cost: u32) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let taken = match self.ran.fetch_add(1, Relaxed) {
            n if n <= FREE_OPERATIONS => self.taken.load(Relaxed),
            _ => 0,
        };
        if cost <= taken {
            return Ok(());
        }
        self.batch_fits(principal, cost)?;
        self.state
            .quotas
            .check(
                &principal.tenant_id,
                &principal.id,
                || ops::principal_display(principal),
                cost - taken,
            )
            .map_err(|wait| {
                metrics().throttled(self.meta.front.name());
                Error::throttled(wait)
            })?;
        self.taken.fetch_max(cost, Relaxed);
        Ok(())
    }

    /// Run `task` (one request of `O`, or a batch of `batch` items) as its own task inside an
    /// `operation` span, and count and time it.
    async fn spawned<O: Operation, T: Send + 'static>(
        &self,
        batch: Option<usize>,
        task: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let span = tracing::info_span!(
            "operation",
            otel.name = O::NAME,
            keyplane.operation = O::NAME,
            keyplane.action = O::ACTION,
            keyplane.front = self.meta.front.name(),
            keyplane.batch.items = batch,
            keyplane.tenant = tracing::field::Empty,
            keyplane.key_id = tracing::field::Empty,
            keyplane.encryption_context.keys = tracing::field::Empty,
            keyplane.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let start = std::time::Instant::now();
        let result = tokio::spawn(task.instrument(span.clone()))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "operation task failed");
                Err(Error::Internal)
            });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        span.record("keyplane.outcome", outcome);
        if matches!(&result, Err(e) if e.is_server_fault()) {
            span.record("otel.status_code", "ERROR");
        }
        metrics().request(
            O::NAME,
            outcome,
            batch.is_some(),
            start.elapsed().as_secs_f64(),
        );
        result
    }
}

/// `authenticate`, in an `authenticate` span that records its outcome and, once proven, the
/// principal (`principal_of`).
async fn authenticated<T>(
    authenticate: impl std::future::Future<Output = Result<T>>,
    principal_of: fn(&T) -> Option<&str>,
) -> Result<T> {
    let span = tracing::info_span!(
        "authenticate",
        keyplane.principal = tracing::field::Empty,
        keyplane.outcome = tracing::field::Empty
    );
    let auth = authenticate.instrument(span.clone()).await;
    match &auth {
        Ok(t) => {
            if let Some(p) = principal_of(t) {
                span.record("keyplane.principal", p);
            }
            span.record("keyplane.outcome", "ok");
        }
        Err(e) => {
            span.record("keyplane.outcome", e.code());
        }
    }
    auth
}

/// The trace id of the request's span (the caller's, from `traceparent`, or a new one), if
/// tracing is on.
fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// How much of a request body is read, for how long, and how much past its limit is read and
/// thrown away before the answer. Every answer is sent only once the body has been read (an
/// answer sent while the client is still sending breaks an HTTP/2 stream, curl: "Stream
/// error in the HTTP/2 framing layer", and resets an HTTP/1.1 client that writes its whole
/// body before reading, as Python's `http.client`, so `requests` and boto3, do). Draining
/// lets such a client read a `413` instead of a connection reset; a client sending more, or
/// slower, is answered anyway.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// The whole body must have arrived by then (`RequestTimeout` otherwise).
    pub deadline: Duration,
    pub drain_bytes: usize,
    pub drain_time: Duration,
}

/// The body limit of `hash`, on every front: its input at `ops::hash::MAX_INPUT` (1 MiB) as
/// base64, with the line breaks a shell's `base64` wraps it with (`\r\n`, escaped in JSON,
/// every 76 characters; Vault reads them), and room for the JSON around it. Derived from the
/// operation's own limit so that the body never refuses what the operation takes (the body
/// limit of other endpoints, 64 KiB by default, cut `hash` inputs from about 48 KiB) and
/// still bounds what is read before the operation refuses it.
pub const HASH_MAX_BODY: usize = {
    let base64 = crate::ops::hash::MAX_INPUT.div_ceil(3) * 4;
    base64 + base64 / 76 * 4 + 4096
};

impl BodyLimits {
    /// An authenticated request's body.
    pub fn authenticated(max_bytes: usize) -> Self {
        BodyLimits {
            max_bytes,
            deadline: Duration::from_secs(30),
            drain_bytes: 16 << 20,
            drain_time: Duration::from_secs(5),
        }
    }

    /// The body of a request that will be refused whatever it holds (no credentials, no
    /// route): read briefly, only so that the answer reaches the client. Never the upload
    /// limit.
    pub fn refused(max_bytes: usize) -> Self {
        BodyLimits {
            max_bytes,
            deadline: Duration::from_secs(5),
            drain_bytes: 4 << 20,
            drain_time: Duration::from_secs(2),
        }
    }
}

/// Read a request body within `limits` into a buffer that is zeroized when dropped (bodies
/// carry plaintext). Over `max_bytes`: `PayloadTooLarge`, after draining what is left within
/// the drain limits; not all there by the deadline: `RequestTimeout`.
pub async fn read_body(body: Body, limits: BodyLimits) -> Result<Zeroizing<Vec<u8>>> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let read = async {
        // Grows without leaving copies of what it held (bodies carry plaintext).
        let mut buf = super::secret_buf::SecretBuf::default();
        loop {
            match stream.next().await {
                None => return Ok(buf.into_inner()),
                Some(Err(e)) => {
                    return Err(Error::validation(format!(
                        "the request body could not be read: {e}"
                    )))
                }
                Some(Ok(chunk)) if buf.len() + chunk.len() <= limits.max_bytes => {
                    buf.extend_from_slice(&chunk)
                }
                Some(Ok(chunk)) => {
                    let mut drained = chunk.len();
                    let drain = async {
                        while let Some(Ok(c)) = stream.next().await {
                            drained += c.len();
                            if drained > limits.drain_bytes {
                                break;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(limits.drain_time, drain).await;
                    return Err(Error::PayloadTooLarge {
                        limit: limits.max_bytes,
                    });
                }
            }
        }
    };
    tokio::time::timeout(limits.deadline, read)
        .await
        .unwrap_or(Err(Error::RequestTimeout))
}
