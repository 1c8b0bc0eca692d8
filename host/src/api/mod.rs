//! HTTP fronts. Each front only decodes a request into an operation of `ops` and encodes its
//! output or error; none makes decisions of its own.
//! - `gate`: what every front does around an operation (authentication, body limits,
//!   auditing of requests that never reach an operation, telemetry, running it as a task).
//! - `native`: `POST /v1/<operation>`, JSON, bearer token; `POST /v1/batch`, many requests of
//!   one operation (`ops::execute_many`).
//! - `openapi`: the native API's OpenAPI 3.1 document, generated from the operation types,
//!   at `GET /v1/openapi.json`.
//! - `aws`: `POST /`, AWS KMS (JSON 1.1) and STS `GetCallerIdentity` (query protocol), signed
//!   with Signature Version 4.
//! - `transit`: Vault's Transit engine under `/v1/<transit.mount>/`, with `sys/health`,
//!   `sys/seal-status`, `sys/leader` and `auth/token/lookup-self`, bearer token in `X-Vault-Token`.
//! - health: `GET /healthz` (liveness) and `GET /readyz` (the database answers and the HSM's
//!   root key works).
//! - `debug`: test hooks under `/debug/` (debug builds with `test-hooks` only).
//!
//! Every answer, the router's own included, is sent only once the request's body has been
//! read (up to a bound, see [`gate::read_body`]).

mod aws;
mod bounded;
#[cfg(all(feature = "test-hooks", debug_assertions))]
mod debug;
mod gate;
mod native;
mod openapi;
mod secret_buf;
mod transit;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;
use gate::{read_body, BodyLimits};

pub use openapi::document as openapi_document;

/// The fronts' decoding, for the fuzz targets (`crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz {
    pub(crate) use super::aws::kms_fuzz_decode as aws;
    pub(crate) use super::native::fuzz_decode as native;
    pub(crate) use super::transit::fuzz_decode as transit;
}

/// A request's JSON text, which must be an object; an empty body is `{}`. serde's derived
/// structs would also take an array, matching its elements to fields by position (`["k-1",
/// "aGk="]` as an `encrypt`); no front's contract allows that, so a request that is JSON but not
/// an object is refused before decoding. Text that is not JSON at all is passed on, for the
/// decoder to say where it fails. Only the request itself is checked (and each native batch
/// item, decoded as a request of its own), not the objects nested in it.
fn json_object(body: &[u8]) -> std::result::Result<&[u8], &'static str> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Ok(b"{}"),
        Some(b'{') => Ok(body),
        // Parsed twice only when it is not an object: a refusal anyway.
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
            Err("a request must be a JSON object")
        }
        Some(_) => Ok(body),
    }
}

/// The whole router.
pub fn router(state: Arc<AppState>) -> Router {
    let transit = format!("/v1/{}/{{*path}}", state.config.transit.mount);
    // Made once: the document depends on the code only.
    let openapi = bytes::Bytes::from(serde_json::to_vec(&openapi::document()).unwrap_or_default());
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/v1/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi,
                )
            }),
        )
        .route("/readyz", get(readyz))
        .route("/", post(aws::handle))
        .route("/v1/{operation}", post(native::handle))
        .route(&transit, any(transit::handle))
        .route("/v1/sys/health", get(transit::health).head(transit::health))
        .route("/v1/sys/seal-status", get(transit::seal_status))
        .route("/v1/sys/leader", get(transit::leader))
        .route("/v1/sys/init", get(transit::init))
        .route("/v1/sys/mounts", any(transit::mounts))
        .route("/v1/sys/mounts/{*path}", any(transit::mounts))
        .route("/v1/auth/token/lookup-self", any(transit::lookup_self));
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    let router = router
        .route("/debug/envelope-material", post(debug::envelope_material))
        .route("/debug/envelope-cached", post(debug::envelope_cached))
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

/// Whether the database answers and the HSM's root key works.
pub(crate) async fn ready(state: &AppState) -> bool {
    let (db, hsm) = readiness(state).await;
    db && hsm
}

/// How long a readiness probe may take before its part is taken as unavailable (a database
/// that does not answer would otherwise hold every health request for the pool's timeout).
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the database answers and the HSM's root key works, probed at most one at a time
/// (see [`crate::state::Readiness`]).
async fn readiness(state: &AppState) -> (bool, bool) {
    state
        .readiness
        .answer(|| async {
            let db = tokio::time::timeout(PROBE_TIMEOUT, state.db.ping())
                .await
                .is_ok_and(|pinged| pinged.is_ok());
            let hsm = {
                let hsm = state.keyring.hsm().clone();
                let probe = tokio::task::spawn_blocking(move || hsm.ready());
                matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, probe).await,
                    Ok(Ok(true))
                )
            };
            (db, hsm)
        })
        .await
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let (db, hsm) = readiness(&state).await;
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

/// A request of two optional fields, and bodies that are not JSON objects (though serde would
/// take the arrays as one): for the fronts' decoding tests.
#[cfg(test)]
mod not_objects {
    #[derive(Debug, serde::Deserialize)]
    pub struct Pair {
        #[serde(default)]
        pub a: Option<String>,
        #[serde(default)]
        pub b: Option<String>,
    }

    pub const BODIES: [&[u8]; 6] = [
        br#"["x", "y"]"#,
        b"[]",
        b" \n[\"x\"]",
        b"\"x\"",
        b"1",
        b"null",
    ];

    /// Bodies that are not JSON at all.
    pub const NOT_JSON: [&[u8]; 3] = [b"not json", b"<x/>", b"[\"x\","];
}
