//! The native front: `POST /v1/<operation>` with a JSON body and `Authorization: Bearer`.
//! Decodes the body into the operation of that name (every operation of
//! [`crate::ops::operations!`], in the JSON shape of its type), runs it through the [`Gate`],
//! and encodes the output as JSON or the error as `{"error": {"code", "message"}}` with the
//! status [`status`] maps it to.
//!
//! `POST /v1/batch` carries `{"operation": <name>, "items": [<that operation's body>, …]}`
//! for the operations of [`BATCHABLE`]: each item is decoded on its own, the batch runs
//! through [`Gate::run_many`], and the answer is `200 {"results": [{"output": …} |
//! {"error": {"code", "message"}}, …], "failed": <n>}` in item order. A batch refused as a
//! whole (no credentials, too large, not JSON, an operation that is unknown or cannot be
//! batched, no items or too many) gets the error alone, with its status; one refused before
//! its operation is known is audited under the action `batch`.
//!
//! No request carries another principal's credential: a second admin approves a key's
//! deletion with `approve-key-deletion`, under their own token. `context.mfa` is a client
//! certificate that names the principal, beside its token (`ClientCertificate::names`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::bounded::AtMost;
use super::gate::{BodyLimits, Gate};
use super::secret_buf::SecretBuf;
use crate::authn::Principal;
use crate::error::{Error, Result};
use crate::ops::{Front, Operation, MAX_BATCH_ITEMS};
use crate::state::AppState;

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

/// Decode `body` as the operation numbered `selector` (modulo their number) and validate it:
/// the native front's decoding, for the fuzz targets (`crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_decode(selector: usize, body: &[u8]) {
    macro_rules! decoders {
        ($($op:ty),* $(,)?) => {
            &[$(|body: &[u8]| {
                if let Ok(op) = decode::<$op>(body) {
                    let _ = op.validate();
                }
            }),*]
        };
    }
    const DECODERS: &[fn(&[u8])] = crate::ops::operations!(decoders);
    DECODERS[selector % DECODERS.len()](body);
    let _ = decode::<BatchRequest>(body);
}

/// Every operation: (name, Cedar action, handler).
const OPERATIONS: &[(&str, &str, Handler)] = crate::ops::operations!(native_table);

/// Decode each item of a batch, run them, and encode each result.
type BatchHandler = for<'a> fn(&'a Gate, Principal, Vec<&'a RawValue>) -> BoxFuture<'a, Response>;

fn batch_handler<'a, O>(
    gate: &'a Gate,
    principal: Principal,
    items: Vec<&'a RawValue>,
) -> BoxFuture<'a, Response>
where
    O: Operation + DeserializeOwned,
    O::Output: Serialize,
{
    Box::pin(async move {
        // At most one item past the limit reaches here (`BatchRequest::items`): such a batch
        // is refused whatever its length.
        let items = items
            .into_iter()
            .map(|item| decode::<O>(item.get().as_bytes()))
            .collect();
        match gate.run_many(principal, items).await {
            Ok(results) => json_reply(&BatchReply::of(&results)),
            Err(e) => error_response(&e),
        }
    })
}

macro_rules! batch_table {
    ($($op:ty),* $(,)?) => {
        &[$( (<$op>::NAME, batch_handler::<$op> as BatchHandler) ),*]
    };
}

/// The operations a batch may hold: uses of a key that change nothing (each item's audit
/// record then goes through the group commit with the others'). `(name, handler)`.
pub const BATCHABLE: &[(&str, BatchHandler)] = batch_table!(
    crate::ops::encrypt::Encrypt,
    crate::ops::decrypt::Decrypt,
    crate::ops::generate_data_key::GenerateDataKey,
    crate::ops::generate_data_key::GenerateDataKeyWithoutPlaintext,
    crate::ops::sign::Sign,
    crate::ops::sign::Verify,
    crate::ops::mac::GenerateMac,
    crate::ops::mac::VerifyMac,
    crate::ops::rewrap::Rewrap,
);

/// The path of batches, `POST /v1/batch` (no operation has this name).
const BATCH: &str = "batch";

/// A batch's body. The items stay raw JSON (borrowed from the body, which is zeroized) until
/// each is decoded as its operation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    operation: String,
    /// One past the limit at most: more is refused as too many (see `api::bounded`).
    #[serde(borrow)]
    items: AtMost<&'a RawValue, { MAX_BATCH_ITEMS + 1 }>,
}

/// A batch's answer.
#[derive(Serialize)]
struct BatchReply<'a, T> {
    results: Vec<ItemReply<'a, T>>,
    failed: usize,
}

/// One item's answer: `{"output": …}` or `{"error": {"code", "message"}}`.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum ItemReply<'a, T> {
    Output(&'a T),
    Error(ErrorBody),
}

impl<'a, T> BatchReply<'a, T> {
    fn of(results: &'a [Result<T>]) -> Self {
        let results: Vec<_> = results
            .iter()
            .map(|r| match r {
                Ok(output) => ItemReply::Output(output),
                Err(e) => ItemReply::Error(ErrorBody::of(e)),
            })
            .collect();
        let failed = results
            .iter()
            .filter(|r| matches!(r, ItemReply::Error(_)))
            .count();
        BatchReply { results, failed }
    }
}

/// `POST /v1/batch`, once its caller is known (or not) and its body read (or not).
async fn batch(gate: &Gate, auth: Result<Principal>, read: Result<Zeroizing<Vec<u8>>>) -> Response {
    let principal = match auth {
        Ok(p) => p,
        Err(e) => return refused(gate, None, BATCH, e).await,
    };
    let body = match read {
        Ok(b) => b,
        Err(e) => return refused(gate, Some(&principal), BATCH, e).await,
    };
    let request = match decode::<BatchRequest>(&body) {
        Ok(r) => r,
        Err(e) => return refused(gate, Some(&principal), BATCH, e).await,
    };
    let operation = request.operation.as_str();
    let Some((_, handler)) = BATCHABLE.iter().find(|(name, _)| *name == operation) else {
        let (action, e) = match OPERATIONS.iter().find(|(name, _, _)| *name == operation) {
            Some((name, action, _)) => {
                let batchable: Vec<&str> = BATCHABLE.iter().map(|(name, _)| *name).collect();
                let message = format!(
                    "{name} cannot be batched; a batch holds one of: {}",
                    batchable.join(", ")
                );
                (action.to_string(), Error::Unsupported(message))
            }
            None => unknown(operation),
        };
        return refused(gate, Some(&principal), &action, e).await;
    };
    handler(gate, principal, request.items.items).await
}

/// Record a request that never reached an operation, and answer it.
async fn refused(gate: &Gate, principal: Option<&Principal>, action: &str, e: Error) -> Response {
    error_response(&gate.refuse(principal, action, e).await)
}

/// The action an unknown operation is audited under, and its error.
fn unknown(op: &str) -> (String, Error) {
    let clean: String = op
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    (format!("unknown:{clean}"), Error::UnknownOperation(clean))
}

/// `POST /v1/{operation}` (and `POST /v1/batch`).
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Path(operation): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let gate = Gate::new(state, Front::Native, peer, &parts);
    let headers = parts.headers;
    let auth = gate.bearer(&headers).await;
    let entry = OPERATIONS.iter().find(|(name, _, _)| *name == operation);

    let limits = &gate.state.config.limits;
    let body = match gate.admit_before_body(&auth, body).await {
        Ok(body) => body,
        Err(e) => return error_response(&e),
    };
    let limits = match (&auth, entry) {
        (Ok(_), Some((name, _, _))) if *name == crate::ops::upload_plugin::UploadPlugin::NAME => {
            // base64 of the largest component, plus the JSON around it
            let max_upload = gate.state.config.plugins.max_upload_bytes;
            BodyLimits::authenticated(max_upload / 3 * 4 + 8192)
        }
        (Ok(_), Some((name, _, _))) if *name == crate::ops::hash::Hash::NAME => {
            BodyLimits::authenticated(limits.max_body_bytes.max(super::gate::HASH_MAX_BODY))
        }
        (Ok(_), Some(_)) => BodyLimits::authenticated(limits.max_body_bytes),
        (Ok(_), None) if operation == BATCH => {
            BodyLimits::authenticated(limits.max_batch_body_bytes)
        }
        _ => BodyLimits::refused(limits.max_body_bytes),
    };
    let read = gate.read_body(body, limits).await;

    let Some((_, action, handler)) = entry else {
        if operation == BATCH {
            return batch(&gate, auth, read).await;
        }
        let (action, e) = unknown(&operation);
        return match auth {
            Ok(p) => refused(&gate, Some(&p), &action, e).await,
            Err(e) => refused(&gate, None, &action, e).await,
        };
    };
    let principal = match auth {
        Ok(p) => p,
        Err(e) => return refused(&gate, None, action, e).await,
    };
    let body = match read {
        Ok(b) => b,
        Err(e) => return refused(&gate, Some(&principal), action, e).await,
    };
    handler(&gate, principal, &body).await
}

fn decode<'de, O: Deserialize<'de>>(body: &'de [u8]) -> Result<O> {
    let body = super::json_object(body).map_err(Error::validation)?;
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
    let mut reply = SecretBuf::default();
    if let Err(e) = serde_json::to_writer(&mut reply, output) {
        tracing::error!(error = %e, "an output could not be encoded");
        return error_response(&Error::Internal);
    }
    let mut resp = Response::new(Body::from(bytes::Bytes::from_owner(reply.into_inner())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The native error body, with the status of [`status`].
pub fn error_response(e: &Error) -> Response {
    let mut resp = (status(e), Json(json!({ "error": ErrorBody::of(e) }))).into_response();
    if let Some(secs) = e.retry_after_secs() {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// The native error's `{"code", "message"}`.
#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct ErrorBody {
    code: &'static str,
    message: String,
}

impl ErrorBody {
    fn of(e: &Error) -> Self {
        // One message for every failed authentication: which part was wrong is not told.
        let message = match e {
            Error::Unauthenticated(_) => "missing or invalid credentials".to_string(),
            e => e.to_string(),
        };
        ErrorBody {
            code: e.code(),
            message,
        }
    }
}

/// The native front's status for each error.
pub fn status(e: &Error) -> StatusCode {
    match e {
        Error::MalformedJson(_)
        | Error::Validation(_)
        | Error::IncorrectKey(_)
        | Error::Unsupported(_)
        | Error::InvalidAliasName(_)
        | Error::InvalidTag(_)
        | Error::InvalidMarker(_)
        | Error::InvalidGrantId(_)
        | Error::InvalidGrantToken(_)
        | Error::MalformedPolicyDocument(_)
        | Error::MalformedCiphertext(_)
        | Error::DecryptionFailed
        | Error::InvalidKeyUsage(_)
        | Error::InvalidPlugin(_)
        | Error::InvalidPolicySet(_)
        | Error::IncorrectKeyMaterial(_)
        | Error::InvalidImportToken(_)
        | Error::ExpiredImportToken(_) => StatusCode::BAD_REQUEST,
        Error::PluginFailed { .. } => StatusCode::BAD_GATEWAY,
        Error::PluginTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::AccessDenied { .. } => StatusCode::FORBIDDEN,
        Error::NotFound { .. } | Error::OtherTenant { .. } | Error::UnknownOperation(_) => {
            StatusCode::NOT_FOUND
        }
        Error::AlreadyExists { .. } | Error::InvalidState(_) | Error::KeyDisabled(_) => {
            StatusCode::CONFLICT
        }
        Error::KeyDestroyed { .. } => StatusCode::GONE,
        Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        Error::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::HsmUnavailable | Error::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal | Error::PluginComponentCorrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::not_objects::{Pair, BODIES, NOT_JSON};

    /// serde would take an array as a struct, its elements matched to the fields by position:
    /// the body must be an object (an empty one stands for `{}`).
    #[test]
    fn a_body_must_be_a_json_object() {
        for body in BODIES {
            let e = decode::<Pair>(body).unwrap_err();
            assert!(
                matches!(&e, Error::Validation(m) if m.contains("must be a JSON object")),
                "{e:?}"
            );
        }
        let p = decode::<Pair>(br#" {"a": "x"}"#).unwrap();
        assert_eq!((p.a.as_deref(), p.b), (Some("x"), None));
        assert!(decode::<Pair>(b" \r\n").is_ok());
        for body in NOT_JSON.iter().chain([&&b"{"[..]]) {
            assert!(matches!(decode::<Pair>(body), Err(Error::MalformedJson(_))));
        }
    }
}
