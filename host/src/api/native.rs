//! The native front: `POST /v1/<operation>` with a JSON body and `Authorization: Bearer`.
//! Authenticates, reads the body under the size limit, and hands both to the operation
//! table. Every response carries `x-request-id`.
//!
//! One optional header feeds the Cedar context of guard policies: `x-keyplane-mfa: true`,
//! honoured only on a connection that presented a verified TLS client certificate (bearer
//! token + certificate = two factors); it sets `context.mfa`. The native front does not
//! request client certificates yet, so `context.mfa` is currently always `false`; a header
//! alone never sets it. No request carries another principal's credential: a second admin
//! approves a key's deletion with `approve-key-deletion`, under their own token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Extension;
use tracing::Instrument;

use super::{error_response, json_reply, read_body, BodyLimits};
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
    let auth = state
        .tokens
        .authenticate(&state.rows, auth_header)
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

    // The body is read before any answer, whatever it is: an answer sent while the client
    // is still sending breaks an HTTP/2 stream (curl: "Stream error in the HTTP/2 framing
    // layer") and, over HTTP/1.1, resets a client that writes its whole body before reading.
    // Unauthenticated callers get the ordinary limit, never the upload limit.
    let max_body = state.config.limits.max_body_bytes;
    let limits = match &auth {
        Ok(_) if operation == crate::ops::upload_plugin::UploadPlugin::NAME => {
            // base64 of the largest component, plus the JSON around it
            BodyLimits::authenticated(state.config.plugins.max_upload_bytes / 3 * 4 + 8192)
        }
        Ok(_) if ops::lookup(&operation).is_some() => BodyLimits::authenticated(max_body),
        _ => BodyLimits::refused(max_body),
    };
    let read = read_body(body, limits).await;

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

    if let Err(e) = &auth {
        let e = match e {
            Error::DatabaseUnavailable => Error::DatabaseUnavailable,
            _ => Error::Unauthenticated,
        };
        let e = ops::fail(&state, &mut failure_event(&auth, action, &e), e).await;
        return error_response(&e, &meta.request_id);
    }
    let bytes = match read {
        Ok(b) => b,
        Err(e) => {
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
        Ok(reply) => {
            let mut resp = json_reply(reply);
            if let Ok(v) = meta.request_id.parse() {
                resp.headers_mut().insert("x-request-id", v);
            }
            resp
        }
        Err(e) => error_response(&e, &meta.request_id),
    }
}
