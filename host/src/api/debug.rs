//! Test hooks: endpoints under `/debug/` that only debug builds with the `test-hooks` feature
//! have (the router adds them in no other build), and only the operator may call. Tests use
//! them to see what the API must never show (an envelope key's plaintext material, the HSM
//! objects of a version), to move the service clock, and to pause a request at a chosen step.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::native::error_response;
use crate::error::Error;
use crate::state::AppState;

/// The caller of a test hook, authenticated as the operator; anyone else is refused.
pub struct Operator;

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let auth_header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match state.tokens.authenticate(&state.rows, auth_header).await {
            Ok(p) if p.operator => Ok(Operator),
            Ok(_) => Err(error_response(&Error::AccessDenied {
                action: "debug".into(),
                resource: "-".into(),
            })),
            Err(e) => Err(error_response(&e)),
        }
    }
}

/// The `key_id` a test hook's body names ("" if none).
fn key_id_in(req: &serde_json::Value) -> String {
    req.get("key_id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

/// Whether this node's envelope cache holds version `version` of key `key_id` (its
/// material unwrapped in memory), so tests can prove it goes when it must.
pub async fn envelope_cached(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Json(req): Json<serde_json::Value>,
) -> Response {
    let key_id = key_id_in(&req);
    let version = req.get("version").and_then(|v| v.as_u64()).unwrap_or(1) as u32;
    let cached = state.keyring.cached_wrapped(&key_id, version).is_some();
    Json(serde_json::json!({ "cached": cached })).into_response()
}

/// The plaintext material of an envelope key's primary version, so tests can prove it is
/// absent from storage.
pub async fn envelope_material(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Json(req): Json<serde_json::Value>,
) -> Response {
    use crate::store::keys;
    let key_id = key_id_in(&req);
    let result = async {
        let key = keys::get(&state.db, &key_id)
            .await?
            .ok_or(Error::NotFound {
                kind: "key",
                id: key_id.clone(),
            })?;
        let mut version = keys::version(&state.db, &key_id, key.primary_version)
            .await?
            .ok_or(Error::Internal)?;
        crate::ops::load_blob(&state, &key, &mut version).await?;
        let spec = key.spec;
        state
            .keyring
            .debug_envelope_material(&key.tenant_id, spec, &version)
            .await
    }
    .await;
    match result {
        Ok(m) => {
            Json(serde_json::json!({ "material": crate::ops::Base64::new(m) })).into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// How many objects carrying a key version's `CKA_ID` this node's HSM session sees, and
/// how many of them are session objects (the data plane's copies). The version is named
/// by `key_id` and `version`, or by its `object_id` (a destroyed version's row keeps none).
/// It also answers how many session copies of that object the data plane has made
/// ([`crate::crypto::SESSION_COPIES_MADE`], recorded as each is made) and how many of those
/// are still live, checked by handle (`C_GetAttributeValue`), not by another search: after
/// crypto-shredding that must be none, whatever a search would find.
pub async fn hsm_objects(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Json(req): Json<serde_json::Value>,
) -> Response {
    let key_id = key_id_in(&req);
    let version = req.get("version").and_then(|v| v.as_i64()).unwrap_or(1);
    let named = req.get("object_id").and_then(|v| v.as_str());
    let counted = async {
        let id = match named {
            Some(id) => id.as_bytes().to_vec(),
            None => crate::store::keys::version(&state.db, &key_id, version)
                .await?
                .and_then(|v| v.hsm_object_id)
                .ok_or(Error::NotFound {
                    kind: "key version",
                    id: format!("{key_id}/{version}"),
                })?,
        };
        let hsm = state.keyring.hsm().clone();
        let found = id.clone();
        let counts = tokio::task::spawn_blocking(move || {
            let all = hsm.find_all(&found)?.len();
            let session = hsm.find_session_objects(&found)?.len();
            let made = crate::crypto::SESSION_COPIES_MADE
                .lock()
                .map_err(|_| Error::Internal)?
                .get(&found)
                .cloned()
                .unwrap_or_default();
            let mut live = 0;
            for h in &made {
                live += usize::from(hsm.is_live(*h)?);
            }
            Ok::<_, Error>((all, session, made.len(), live))
        })
        .await
        .map_err(|_| Error::Internal)??;
        Ok::<_, Error>((String::from_utf8_lossy(&id).into_owned(), counts))
    }
    .await;
    match counted {
        Ok((id, (objects, session, made, live))) => Json(serde_json::json!({
            "object_id": id,
            "objects": objects,
            "session_objects": session,
            "session_copies_made": made,
            "session_copies_made_live": live,
        }))
        .into_response(),
        Err(e) => error_response(&e),
    }
}

/// Pause points ([`crate::pause`]): `{"point", "key_id", "action"}` with action `arm`,
/// `wait` (until a request is paused there, at most 10 s: `{"reached": bool}`) or `release`.
pub async fn pause(_: Operator, Json(req): Json<serde_json::Value>) -> Response {
    let field = |name: &str| req.get(name).and_then(|v| v.as_str()).unwrap_or_default();
    let (point, key_id) = (field("point"), field("key_id"));
    let answer = match field("action") {
        "arm" => {
            crate::pause::arm(point, key_id);
            serde_json::json!({ "armed": true })
        }
        "wait" => {
            let timeout = std::time::Duration::from_secs(10);
            let reached = crate::pause::wait_reached(point, key_id, timeout).await;
            serde_json::json!({ "reached": reached })
        }
        "release" => serde_json::json!({ "released": crate::pause::release(point, key_id) }),
        other => return error_response(&Error::validation(format!("unknown action {other:?}"))),
    };
    Json(answer).into_response()
}

/// Move the service clock forward by `advance_seconds`, so tests pass deletion windows and
/// rotation periods without waiting.
pub async fn clock(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Json(req): Json<serde_json::Value>,
) -> Response {
    let secs = req
        .get("advance_seconds")
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let now = state.clock.advance(secs);
    Json(serde_json::json!({ "now": now })).into_response()
}

/// Faults of the HSM (`{"action": "close-sessions"}`): every session of the token closed and
/// its login ended through a second handle to the module ([`crate::hsm::Hsm::check`] must
/// notice and log in again).
pub async fn hsm_fault(
    State(state): State<Arc<AppState>>,
    _: Operator,
    Json(req): Json<serde_json::Value>,
) -> Response {
    match req.get("action").and_then(|v| v.as_str()) {
        Some("close-sessions") => {
            let hsm = state.keyring.hsm().clone();
            let done = tokio::task::spawn_blocking(move || hsm.close_all_sessions_elsewhere())
                .await
                .map_err(|_| Error::Internal)
                .and_then(|r| r);
            match done {
                Ok(()) => Json(serde_json::json!({ "closed": true })).into_response(),
                Err(e) => error_response(&e),
            }
        }
        other => error_response(&Error::validation(format!("unknown action {other:?}"))),
    }
}
