//! HTTP fronts. Each front only decodes a request into an operation of the table in `ops`
//! and encodes its result or error; none makes decisions of its own.
//! - `native`: `POST /v1/<operation>`, JSON, bearer token.
//! - health: `GET /healthz` (liveness) and `GET /readyz` (the database answers and the HSM's
//!   root key works).
//!
//! Every answer is sent only once the request's body has been read (up to a bound, see
//! [`read_body`]), so that it reaches HTTP/2 clients and HTTP/1.1 clients that write their
//! whole body before reading.
//! - `debug`: test hooks under `/debug/` (debug builds with `test-hooks` only).

#[cfg(all(feature = "test-hooks", debug_assertions))]
pub mod debug;
pub mod native;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::state::AppState;

/// The whole router.
pub fn router(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/{operation}", post(native::handle));
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    let router = router
        .route("/debug/envelope-material", post(debug::envelope_material))
        .route("/debug/clock", post(debug::clock))
        .route("/debug/hsm-objects", post(debug::hsm_objects))
        .route("/debug/pause", post(debug::pause))
        .route("/debug/hsm-fault", post(debug::hsm_fault));
    router
        .route_layer(axum::middleware::from_fn(
            crate::telemetry::http::trace_request,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// How much of a request body is read, for how long, and how much past its limit is read and
/// thrown away before the answer. Draining lets a client that writes its whole body before
/// reading (Python's `http.client`, so `requests` and boto3) read a `413` instead of a
/// connection reset, and an HTTP/2 stream end cleanly; a client sending more, or slower, is
/// answered anyway.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// The whole body must have arrived by then (`408` otherwise).
    pub deadline: Duration,
    pub drain_bytes: usize,
    pub drain_time: Duration,
}

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
    /// route): read briefly, only so that the answer reaches the client.
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
pub async fn read_body(body: Body, limits: BodyLimits) -> Result<Zeroizing<Vec<u8>>, Error> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let read = async {
        let mut buf = Zeroizing::new(Vec::new());
        loop {
            match stream.next().await {
                None => return Ok(buf),
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

/// A `200` whose body is `reply` (JSON), zeroized once the body has been sent.
pub fn json_reply(reply: crate::ops::Reply) -> Response {
    let mut resp = Response::new(Body::from(bytes::Bytes::from_owner(reply)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The native error body.
pub fn error_response(e: &Error, request_id: &str) -> Response {
    let mut resp = (
        e.status(),
        Json(json!({ "error": { "code": e.code(), "message": e.to_string() } })),
    )
        .into_response();
    if let Ok(v) = request_id.parse() {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn not_found(body: Body) -> Response {
    let _ = read_body(body, BodyLimits::refused(0)).await;
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": { "code": "NotFound", "message": "no such route; operations are POST /v1/<operation>" } })),
    )
        .into_response()
}

async fn method_not_allowed(body: Body) -> Response {
    let _ = read_body(body, BodyLimits::refused(0)).await;
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "error": { "code": "MethodNotAllowed", "message": "operations are POST /v1/<operation>" } })),
    )
        .into_response()
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let db = state.db.ping().await.is_ok();
    let hsm = {
        let hsm = state.keyring.hsm().clone();
        tokio::task::spawn_blocking(move || hsm.ready())
            .await
            .unwrap_or(false)
    };
    let status = if db && hsm {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if db && hsm { "ready" } else { "unavailable" },
            "database": if db { "ok" } else { "unavailable" },
            "hsm": if hsm { "ok" } else { "unavailable" },
            "token_label": state.keyring.hsm().token_label(),
            "policy_set": state.authz.current().hash,
        })),
    )
        .into_response()
}
