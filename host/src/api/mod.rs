//! HTTP fronts. Each front only decodes a request into an operation of the table in `ops`
//! and encodes its result or error; none makes decisions of its own.
//! - `native`: `POST /v1/<operation>`, JSON, bearer token.
//! - health: `GET /healthz` (liveness) and `GET /readyz` (database and HSM answer).
//! - `debug`: test hooks under `/debug/` (debug builds with `test-hooks` only).

#[cfg(all(feature = "test-hooks", debug_assertions))]
pub mod debug;
pub mod native;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

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
        .route("/debug/pause", post(debug::pause));
    router
        .route_layer(axum::middleware::from_fn(
            crate::telemetry::http::trace_request,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
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

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": { "code": "NotFound", "message": "no such route; operations are POST /v1/<operation>" } })),
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
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
        tokio::task::spawn_blocking(move || hsm.ping())
            .await
            .map(|r| r.is_ok())
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
