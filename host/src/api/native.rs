//! The native front: `POST /v1/<operation>` with a JSON body and `Authorization: Bearer`.
//! Decodes the body into the operation of that name (every operation of
//! [`crate::ops::operations!`], in the JSON shape of its type), runs it through the [`Gate`],
//! and encodes the output as JSON or the error as `{"error": {"code", "message"}}` with the
//! status [`status`] maps it to.
//!
//! No request carries another principal's credential: a second admin approves a key's
//! deletion with `approve-key-deletion`, under their own token. `context.mfa` is `false`
//! until a front requests client certificates (bearer token + certificate = two factors).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::gate::{BodyLimits, Gate};
use crate::authn::Principal;
use crate::error::{Error, Result};
use crate::ops::{Front, Operation};
use crate::state::AppState;
use crate::telemetry::http::RequestId;

/// Decode, run and encode one operation.
type Handler = for<'a> fn(&'a Gate, Principal, &'a [u8]) -> BoxFuture<'a, Response>;

fn handler<'a, O>(gate: &'a Gate, principal: Principal, body: &'a [u8]) -> BoxFuture<'a, Response>
where
    O: Operation + DeserializeOwned,
    O::Output: Serialize,
{
    Box::pin(async move {
        let op = decode::<O>(body);
        match gate.run(principal, op).await {
            Ok(output) => json_reply(&output),
            Err(e) => error_response(&e),
        }
    })
}

macro_rules! native_table {
    ($($op:ty),* $(,)?) => {
        &[$( (<$op>::NAME, <$op>::ACTION, handler::<$op> as Handler) ),*]
    };
}

/// Every operation: (name, Cedar action, handler).
const OPERATIONS: &[(&str, &str, Handler)] = crate::ops::operations!(native_table);

/// The action an unknown operation is audited under.
fn unknown_action(op: &str) -> String {
    let clean: String = op
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    format!("unknown:{clean}")
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
    let request_id = request_id.map(|Extension(RequestId(id))| id);
    let gate = Gate::new(state, Front::Native, peer, request_id, &headers);
    let auth = gate.bearer(&headers).await;
    let entry = OPERATIONS.iter().find(|(name, _, _)| *name == operation);

    let max_body = gate.state.config.limits.max_body_bytes;
    let limits = match (&auth, entry) {
        (Ok(_), Some((name, _, _))) if *name == crate::ops::upload_plugin::UploadPlugin::NAME => {
            // base64 of the largest component, plus the JSON around it
            let max_upload = gate.state.config.plugins.max_upload_bytes;
            BodyLimits::authenticated(max_upload / 3 * 4 + 8192)
        }
        (Ok(_), Some(_)) => BodyLimits::authenticated(max_body),
        _ => BodyLimits::refused(max_body),
    };
    let read = gate.read_body(body, limits).await;

    let Some((_, action, handler)) = entry else {
        let action = unknown_action(&operation);
        let (principal, e) = match auth {
            Ok(p) => {
                let name = action.trim_start_matches("unknown:").to_string();
                (Some(p), Error::UnknownOperation(name))
            }
            Err(e) => (None, e),
        };
        return error_response(&gate.refuse(principal.as_ref(), &action, e).await);
    };
    let principal = match auth {
        Ok(p) => p,
        Err(e) => return error_response(&gate.refuse(None, action, e).await),
    };
    let body = match read {
        Ok(b) => b,
        Err(e) => return error_response(&gate.refuse(Some(&principal), action, e).await),
    };
    handler(&gate, principal, &body).await
}

fn decode<O: DeserializeOwned>(body: &[u8]) -> Result<O> {
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

/// A `200` whose body is `output` as JSON, written into a buffer that is zeroized once the
/// body has been sent (outputs may hold plaintext or a data key; the copies the HTTP and TLS
/// libraries make on the way out are theirs, not zeroized).
fn json_reply<T: Serialize>(output: &T) -> Response {
    let mut reply = Zeroizing::new(Vec::new());
    if let Err(e) = serde_json::to_writer(&mut *reply, output) {
        tracing::error!(error = %e, "an output could not be encoded");
        return error_response(&Error::Internal);
    }
    let mut resp = Response::new(Body::from(bytes::Bytes::from_owner(reply)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The native error body, with the status of [`status`].
pub fn error_response(e: &Error) -> Response {
    // One message for every failed authentication: which part was wrong is not told.
    let message = match e {
        Error::Unauthenticated(_) => "missing or invalid credentials".to_string(),
        e => e.to_string(),
    };
    (
        status(e),
        Json(json!({ "error": { "code": e.code(), "message": message } })),
    )
        .into_response()
}

/// The native front's status for each error.
pub fn status(e: &Error) -> StatusCode {
    match e {
        Error::MalformedJson(_)
        | Error::Validation(_)
        | Error::IncorrectKey(_)
        | Error::Unsupported(_)
        | Error::InvalidAliasName(_)
        | Error::InvalidMarker(_)
        | Error::MalformedPolicyDocument(_)
        | Error::MalformedCiphertext(_)
        | Error::DecryptionFailed
        | Error::InvalidKeyUsage(_)
        | Error::InvalidPlugin(_)
        | Error::InvalidPolicySet(_)
        | Error::IncorrectKeyMaterial(_)
        | Error::ExpiredImportToken(_) => StatusCode::BAD_REQUEST,
        Error::PluginFailed { .. } => StatusCode::BAD_GATEWAY,
        Error::PluginTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::AccessDenied { .. } => StatusCode::FORBIDDEN,
        Error::NotFound { .. } | Error::UnknownOperation(_) => StatusCode::NOT_FOUND,
        Error::AlreadyExists { .. } | Error::InvalidState(_) | Error::KeyDisabled(_) => {
            StatusCode::CONFLICT
        }
        Error::KeyDestroyed { .. } => StatusCode::GONE,
        Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        Error::HsmUnavailable | Error::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal | Error::PluginComponentCorrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
