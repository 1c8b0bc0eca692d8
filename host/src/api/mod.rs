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

/// Most bytes of a body over its limit that are read and thrown away before the answer, and
/// how long that may take. A client that writes its whole body before reading (Python's
/// `http.client`, so `requests` and boto3) then reads the `413` instead of a connection reset,
/// and an HTTP/2 stream ends cleanly. A client sending more, or slower, is answered anyway.
pub const DRAIN_BYTES: usize = 16 << 20;
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Read a request body of at most `limit` bytes into a buffer that is zeroized when dropped
/// (bodies carry plaintext). Over the limit: `PayloadTooLarge`, after draining what is left
/// of the body within [`DRAIN_BYTES`] and [`DRAIN_TIME`].
pub async fn read_body(body: Body, limit: usize) -> Result<Zeroizing<Vec<u8>>, Error> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = Zeroizing::new(Vec::new());
    loop {
        match stream.next().await {
            None => return Ok(buf),
            Some(Err(e)) => {
                return Err(Error::validation(format!(
                    "the request body could not be read: {e}"
                )))
            }
            Some(Ok(chunk)) if buf.len() + chunk.len() <= limit => buf.extend_from_slice(&chunk),
            Some(Ok(chunk)) => {
                let mut drained = chunk.len();
                let drain = async {
                    while let Some(Ok(c)) = stream.next().await {
                        drained += c.len();
                        if drained > DRAIN_BYTES {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
                return Err(Error::PayloadTooLarge { limit });
            }
        }
    }
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
    let _ = read_body(body, 0).await;
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": { "code": "NotFound", "message": "no such route; operations are POST /v1/<operation>" } })),
    )
        .into_response()
}

async fn method_not_allowed(body: Body) -> Response {
    let _ = read_body(body, 0).await;
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
