//! The native front: `POST /v1/<operation>` with a JSON body and `Authorization: Bearer`.
//! Authenticates, reads the body under the size limit, and hands both to the operation
//! table. Every response carries `x-request-id`.
//!
//! Two optional headers feed the Cedar context of guard policies (e.g. the deletion guard in
//! `policies/key-deletion-guard.cedar`):
//! - `x-keyplane-approver: Bearer <token>`: a second principal approves this request by
//!   authenticating in it. keyplane checks the token like any bearer token and hands the
//!   approver to Cedar as `context.approver` (with its tenant and role); a bad token fails the
//!   request as `Unauthenticated`. Policies, not this front, decide who may approve what.
//! - `x-keyplane-mfa: true`: honoured only on a connection that presented a verified TLS
//!   client certificate (bearer token + certificate = two factors); it sets `context.mfa`.
//!   The native front does not request client certificates yet, so `context.mfa` is
//!   currently always `false`; a header alone never sets it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use tracing::Instrument;

use super::error_response;
use crate::audit::AuditEvent;
use crate::error::Error;
use crate::ops::{self, Operation, RequestMeta};
use crate::state::AppState;
use crate::telemetry::http::RequestId;

fn unknown_action(op: &str) -> String {
    let clean: String = op
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    format!("unknown:{clean}")
}

/// Longest `User-Agent` kept in an audit record.
const MAX_USER_AGENT: usize = 256;

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
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

/// `POST /v1/{operation}`.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Path(operation): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut meta = RequestMeta {
        request_id: request_id
            .map(|Extension(RequestId(id))| id)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        source_ip: peer.ip(),
        client_certificate: false,
        mfa: false,
        approver: None,
        trace_id: current_trace_id(),
        user_agent: headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| truncate(ua, MAX_USER_AGENT)),
    };
    meta.mfa = meta.client_certificate
        && headers
            .get("x-keyplane-mfa")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let auth_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let authn_span = tracing::info_span!(
        "authenticate",
        keyplane.principal = tracing::field::Empty,
        keyplane.outcome = tracing::field::Empty
    );
    let approver_header = headers
        .get("x-keyplane-approver")
        .map(|v| v.to_str().unwrap_or_default());
    let auth = async {
        let principal = state.tokens.authenticate(&state.rows, auth_header).await?;
        if let Some(h) = approver_header {
            meta.approver = Some(state.tokens.authenticate(&state.rows, Some(h)).await?);
        }
        Ok::<_, Error>(principal)
    }
    .instrument(authn_span.clone())
    .await;
    match &auth {
        Ok(p) => {
            authn_span.record("keyplane.principal", p.id.as_str());
            authn_span.record("keyplane.outcome", "ok");
        }
        Err(e) => {
            authn_span.record("keyplane.outcome", e.code());
        }
    }

    let failure_event = |auth: &Result<_, Error>, action: String, outcome: &Error| AuditEvent {
        request_id: meta.request_id.clone(),
        principal: auth
            .as_ref()
            .map(|p: &crate::authn::Principal| format!("Keyplane::User::{:?}", p.id))
            .unwrap_or_else(|_| "-".into()),
        tenant: auth
            .as_ref()
            .map(|p| p.tenant_id.clone())
            .unwrap_or_else(|_| "-".into()),
        action,
        resource: "-".into(),
        decision: "not-evaluated",
        policies: vec![],
        outcome: outcome.code().into(),
        source: meta.source_ip.to_string(),
        policy_hash: None,
        trace_id: meta.trace_id.clone(),
        user_agent: meta.user_agent.clone(),
    };

    let Some(handler) = ops::lookup(&operation) else {
        let e = match &auth {
            Err(Error::DatabaseUnavailable) => Error::DatabaseUnavailable,
            Err(_) => Error::Unauthenticated,
            Ok(_) => Error::UnknownOperation(
                unknown_action(&operation)
                    .trim_start_matches("unknown:")
                    .to_string(),
            ),
        };
        let e = ops::fail(
            &state,
            &mut failure_event(&auth, unknown_action(&operation), &e),
            e,
        )
        .await;
        return error_response(&e, &meta.request_id);
    };
    let action = ops::OPERATIONS
        .iter()
        .find(|(n, _, _)| *n == operation)
        .map(|(_, a, _)| a.to_string())
        .unwrap_or_default();

    // Unauthenticated requests are answered (and audited) before their body is read.
    if let Err(e) = &auth {
        let e = match e {
            Error::DatabaseUnavailable => Error::DatabaseUnavailable,
            _ => Error::Unauthenticated,
        };
        let e = ops::fail(&state, &mut failure_event(&auth, action, &e), e).await;
        return error_response(&e, &meta.request_id);
    }

    let limit = if operation == crate::ops::upload_plugin::UploadPlugin::NAME {
        // base64 of the largest component, plus the JSON around it
        state.config.plugins.max_upload_bytes / 3 * 4 + 8192
    } else {
        state.config.limits.max_body_bytes
    };
    let bytes = match to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            let e = Error::PayloadTooLarge { limit };
            let e = ops::fail(&state, &mut failure_event(&auth, action, &e), e).await;
            return error_response(&e, &meta.request_id);
        }
    };

    // The pipeline runs as its own task: a client that disconnects cannot cancel it half-way
    // (after an HSM object or blob was created but before the rollback or audit record).
    let task = {
        let (state, meta) = (state.clone(), meta.clone());
        let span = tracing::Span::current();
        tokio::spawn(async move { handler(&state, auth, &meta, &bytes).await }.instrument(span))
    };
    let result = task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "operation task failed");
        Err(Error::Internal)
    });
    match result {
        Ok(value) => {
            let mut resp = Json(value).into_response();
            if let Ok(v) = meta.request_id.parse() {
                resp.headers_mut().insert("x-request-id", v);
            }
            resp
        }
        Err(e) => error_response(&e, &meta.request_id),
    }
}
