//! The Vault Transit front: the paths of Vault's (and OpenBao's) Transit secrets engine
//! under `/v1/<mount>/` (`transit.mount`, default `transit`), for the clients people already
//! have (hvac, the vault CLI, sops `--hc-vault-transit`, Vault's Go client).
//!
//! - A keyplane bearer token in `X-Vault-Token` (or `Authorization: Bearer`); `X-Vault-Request`
//!   and `X-Vault-Namespace` are accepted and change nothing. `POST` and `PUT` are the same
//!   (the Go client writes with `PUT`); lists answer `LIST` and `GET ?list=true`.
//! - A Transit key is the keyplane key its tenant's alias `alias/<name>` names, so one key
//!   is reachable from every front: a key made here is a keyplane key, and a key made
//!   natively or through the AWS front is a Transit key once it has an alias.
//! - Every endpoint becomes one or more operations of `ops` through the [`Gate`] (the same
//!   Cedar decision and audit record as the native API; the record says `vault-transit`);
//!   `batch_input` becomes one `ops::execute_many` call; a request the front refuses before
//!   any operation runs (see [`Failure`]) is recorded as a refusal of the endpoint's action. Files: [`keys`] (create, read, list,
//!   delete, config, rotate, trim), [`encryption`] (encrypt, decrypt, rewrap, data keys),
//!   [`signing`] (sign, verify, hmac), [`utility`] (random, hash), [`sys`] (`sys/health`,
//!   `sys/seal-status`, `sys/leader`, `auth/token/lookup-self`); [`wire`] holds the `vault:v<N>:` values and the envelope,
//!   [`error`] the one mapping of keyplane's errors to Vault's.
//!
//! Where Transit and keyplane differ, the request is refused with a message that says so
//! (docs/vault-transit.md lists each difference), never silently changed.

mod encryption;
mod error;
mod keys;
mod signing;
mod sys;
mod utility;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::api::gate::{BodyLimits, Gate};
use crate::api::secret_buf::SecretBuf;
use crate::authn::Principal;
use crate::error::{Error, Result};
use crate::ops::{Front, Operation};
use crate::state::AppState;
pub use error::TransitError;
pub use sys::{health, init, leader, lookup_self, mounts, seal_status};

/// What a Transit endpoint answers: data, warnings, and its status.
pub struct Reply {
    pub status: StatusCode,
    pub data: Option<Zeroizing<Vec<u8>>>,
    pub warnings: Vec<String>,
}

impl Reply {
    /// `200` with `data`, serialized into a buffer zeroized once sent (data may hold
    /// plaintext or a data key).
    pub fn data<T: Serialize>(data: &T) -> std::result::Result<Self, Failure> {
        let mut buf = SecretBuf::default();
        serde_json::to_writer(&mut buf, data).map_err(|e| {
            tracing::error!(error = %e, "a Transit answer could not be encoded");
            done(Error::Internal)
        })?;
        Ok(Reply {
            status: StatusCode::OK,
            data: Some(buf.into_inner()),
            warnings: Vec::new(),
        })
    }

    /// `204` with no body at all (no envelope), as Vault answers a request that returns
    /// nothing (a key's deletion).
    pub fn no_content() -> Self {
        Reply {
            status: StatusCode::NO_CONTENT,
            data: None,
            warnings: Vec::new(),
        }
    }

    pub fn warn(mut self, w: impl Into<String>) -> Self {
        self.warnings.push(w.into());
        self
    }
}

/// Why an endpoint failed: an operation failed (the pipeline audited it), or the front
/// refused the request before any operation ran (a body that does not decode, a name that is
/// not one, a setting keyplane does not have): [`handle`] audits that as a refusal of the
/// endpoint's action, as the native front does.
pub enum Failure {
    Done(TransitError),
    Refused(Error),
}

impl From<TransitError> for Failure {
    fn from(e: TransitError) -> Self {
        Failure::Done(e)
    }
}

/// The front's own refusal (audited by [`handle`]).
pub fn err(e: Error) -> Failure {
    Failure::Refused(e)
}

/// An operation's error (audited by the pipeline).
pub fn done(e: Error) -> Failure {
    Failure::Done(TransitError::from(&e))
}

/// One request on its way through the front: the gate, the caller, the body.
pub struct Call<'a> {
    pub gate: &'a Gate,
    pub principal: Principal,
    pub body: &'a [u8],
}

/// A request body as `T` (an empty body is `{}`, and so is `null`: Go's Vault client, as
/// `vault write -f` and `bao write -f` use it, sends `null` for a write without data, which
/// Vault reads as no data).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let body = if body.trim_ascii() == b"null" {
        b"{}".as_slice()
    } else {
        body
    };
    let body = crate::api::json_object(body)
        .map_err(|e| Error::validation(format!("invalid request: {e}")))?;
    serde_json::from_slice(body).map_err(|e| Error::validation(format!("invalid request: {e}")))
}

impl Call<'_> {
    /// The body as `T` (an empty body is `{}`).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        decode(self.body)
    }

    /// The body as a request `R` and, apart, its single item `I` (the top-level fields an
    /// item has, when it has no `batch_input`): two decodings, each skipping the fields it
    /// does not know unread, rather than one with `#[serde(flatten)]`, which would keep the
    /// value of every unknown top-level field in memory (an 8 MiB array, over a hundred MiB).
    pub fn decode_split<R: DeserializeOwned, I: DeserializeOwned>(&self) -> Result<(R, I)> {
        Ok((decode(self.body)?, decode(self.body)?))
    }

    /// Run one operation.
    pub async fn run<O: Operation>(&self, op: Result<O>) -> Result<O::Output> {
        self.gate.run(self.principal.clone(), op).await
    }

    /// Run a batch of operations (`batch_input`), as the native `batch` does: each item
    /// decided and audited on its own, the batch as one task.
    pub async fn run_many<O: Operation>(
        &self,
        ops: Vec<Result<O>>,
    ) -> Result<Vec<Result<O::Output>>> {
        self.gate.run_many(self.principal.clone(), ops).await
    }
}

/// Route `<METHOD> <path>` (the first line of `input`) to its endpoint and decode the rest as
/// its body, down to the operations it becomes (validated); the rest is also read as a
/// Transit value (`vault:v<N>:<base64>`, both encodings): the Transit front's parsing, for the
/// fuzz targets (`crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_decode(input: &str) {
    let (head, body) = input.split_once('\n').unwrap_or((input, ""));
    let (method, path) = head.split_once(' ').unwrap_or(("POST", head));
    if let Ok(method) = Method::from_bytes(method.as_bytes()) {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let list = lists(&method, Some(query));
        if let Ok(endpoint) = Endpoint::route(&method, list, &segments) {
            endpoint.fuzz_translate(body.as_bytes());
        }
    }
    let _ = wire::parse_versioned("ciphertext", body, false);
    let _ = wire::parse_versioned("signature", body, true);
}

/// An operation as the pipeline would take it: translated, then validated.
#[cfg(feature = "fuzzing")]
fn fuzz_validate<O: Operation>(op: Result<O>) {
    if let Ok(op) = op {
        let _ = op.validate();
    }
}

/// `/v1/<mount>/<path>`, any method.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Path(path): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let gate = Gate::new(state, Front::VaultTransit, peer, &parts);
    let auth = authenticate(&gate, &parts.headers).await;
    let body = match gate.admit_before_body(&auth, body).await {
        Ok(body) => body,
        Err(e) => return error_response(&(&e).into()),
    };
    let list = lists(&parts.method, parts.uri.query());
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let endpoint = Endpoint::route(&parts.method, list, &segments);
    let max_body = gate.state.config.limits.max_body_bytes;
    let limits = match (&auth, &endpoint) {
        // `batch_input` of up to 1,000 items: the batch limit, as for the native `batch`.
        (Ok(_), Ok(e)) if e.batches() => {
            BodyLimits::authenticated(gate.state.config.limits.max_batch_body_bytes)
        }
        // `hash` takes what its operation does, which is more than other bodies hold.
        (Ok(_), Ok(Endpoint::Hash { .. })) => {
            BodyLimits::authenticated(max_body.max(crate::api::gate::HASH_MAX_BODY))
        }
        (Ok(_), Ok(_)) => BodyLimits::authenticated(max_body),
        _ => BodyLimits::refused(max_body),
    };
    let read = gate.read_body(body, limits).await;
    let audited_as = match &endpoint {
        Ok(e) => e.action().to_string(),
        Err(_) => unknown_action(&path),
    };
    let principal = match auth {
        Ok(p) => p,
        Err(e) => return error_response(&(&gate.refuse(None, &audited_as, e).await).into()),
    };
    // Response wrapping hands the answer to whoever unwraps a single-use token, so that the
    // caller never sees it (a data key an orchestrator passes on): keyplane does not wrap,
    // and answering in the clear instead would give the caller what it asked not to see.
    let endpoint = match endpoint {
        Ok(_) if parts.headers.contains_key("x-vault-wrap-ttl") => Err(Error::Unsupported(
            "response wrapping (X-Vault-Wrap-TTL) is not supported: keyplane answers only in \
             the clear"
                .into(),
        )),
        e => e,
    };
    let endpoint = match endpoint {
        Ok(e) => e,
        Err(e) => {
            let e = gate.refuse(Some(&principal), &audited_as, e).await;
            let mut answer = TransitError::from(&e);
            if matches!(e, Error::UnknownOperation(_)) && Endpoint::exists(&segments) {
                // As Vault: a path served under another method is 405 "unsupported
                // operation" (hvac's `UnsupportedOperation`), not an unknown path.
                answer = TransitError::new(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation");
            }
            return error_response(&answer);
        }
    };
    let body = match read {
        Ok(b) => b,
        Err(e) => {
            let e = gate.refuse(Some(&principal), &audited_as, e).await;
            return error_response(&(&e).into());
        }
    };
    let call = Call {
        gate: &gate,
        principal,
        body: &body,
    };
    let action = endpoint.action();
    let reads = matches!(endpoint, Endpoint::ReadKey(_) | Endpoint::ListKeys);
    let answered = |e: TransitError| if reads { e } else { e.outside_reads() };
    match endpoint.serve(&call).await {
        Ok(reply) => reply_response(&gate, reply),
        Err(Failure::Done(e)) => error_response(&answered(e)),
        Err(Failure::Refused(e)) => {
            let e = gate.refuse(Some(&call.principal), action, e).await;
            error_response(&answered(TransitError::from(&e)))
        }
    }
}

/// Whether a request lists: `LIST`, or `GET` with `list=true`.
fn lists(method: &Method, query: Option<&str>) -> bool {
    method.as_str() == "LIST"
        || (*method == Method::GET && query.is_some_and(|q| q.split('&').any(list_param)))
}

/// `list=<true>` in a query, with Vault's spellings of true (Go's `strconv.ParseBool`):
/// hvac's `Client.list` sends `list=True`.
fn list_param(kv: &str) -> bool {
    kv.strip_prefix("list=")
        .is_some_and(|v| matches!(v, "1" | "t" | "T" | "true" | "True" | "TRUE"))
}

/// The caller's principal, from `X-Vault-Token` or `Authorization: Bearer`.
async fn authenticate(gate: &Gate, headers: &HeaderMap) -> Result<Principal> {
    match headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        Some(token) => {
            let header = Zeroizing::new(format!("Bearer {}", token.trim()));
            gate.bearer_value(Some(header.as_str())).await
        }
        None => gate.bearer(headers).await,
    }
}

/// The token a request presents, read as [`authenticate`] reads it (`X-Vault-Token`, else
/// `Authorization: Bearer`; trimmed), wrapped so that no `Debug` or log shows it. Only for
/// answering a caller that [`authenticate`] accepted with its own token (`lookup-self`).
fn presented_token(headers: &HeaderMap) -> Option<SecretString> {
    let token = match headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        Some(token) => token,
        None => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())?
            .strip_prefix("Bearer ")?,
    };
    Some(SecretString::from(token.trim().to_string()))
}

/// The action an unknown path is audited under.
fn unknown_action(path: &str) -> String {
    let clean: String = path
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_'))
        .take(64)
        .collect();
    format!("unknown:transit/{clean}")
}

/// A source `random/<source>` may name: Vault's (`platform`, `seal`, `all`; keyplane draws
/// on the HSM whichever is named), others refused as Vault refuses them.
fn entropy_source(source: &str) -> Result<()> {
    if matches!(source, "platform" | "seal" | "all") {
        return Ok(());
    }
    Err(Error::validation(format!(
        "unsupported entropy source {source:?}; must be \"platform\", \"seal\", or \"all\""
    )))
}

/// Every Transit endpoint keyplane serves.
enum Endpoint {
    ListKeys,
    CreateKey(String),
    ReadKey(String),
    DeleteKey(String),
    ConfigKey(String),
    RotateKey(String),
    TrimKey(String),
    Encrypt(String),
    Decrypt(String),
    Rewrap(String),
    DataKey {
        plaintext: bool,
        name: String,
    },
    Sign {
        name: String,
        hash: Option<String>,
    },
    Verify {
        name: String,
        hash: Option<String>,
    },
    Hmac {
        name: String,
        algorithm: Option<String>,
    },
    Random {
        bytes: Option<String>,
    },
    Hash {
        algorithm: Option<String>,
    },
}

impl Endpoint {
    fn route(method: &Method, list: bool, path: &[&str]) -> Result<Endpoint> {
        let write = *method == Method::POST || *method == Method::PUT;
        let read = *method == Method::GET;
        let name = |s: &str| s.to_string();
        let e = match path {
            ["keys"] | ["keys", ""] if list => Endpoint::ListKeys,
            ["keys", n] if write => Endpoint::CreateKey(name(n)),
            ["keys", n] if read && !list => Endpoint::ReadKey(name(n)),
            ["keys", n] if *method == Method::DELETE => Endpoint::DeleteKey(name(n)),
            ["keys", n, "config"] if write => Endpoint::ConfigKey(name(n)),
            ["keys", n, "rotate"] if write => Endpoint::RotateKey(name(n)),
            ["keys", n, "trim"] if write => Endpoint::TrimKey(name(n)),
            ["encrypt", n] if write => Endpoint::Encrypt(name(n)),
            ["decrypt", n] if write => Endpoint::Decrypt(name(n)),
            ["rewrap", n] if write => Endpoint::Rewrap(name(n)),
            ["datakey", kind @ ("plaintext" | "wrapped"), n] if write => Endpoint::DataKey {
                plaintext: *kind == "plaintext",
                name: name(n),
            },
            ["sign", n] if write => Endpoint::Sign {
                name: name(n),
                hash: None,
            },
            ["sign", n, h] if write => Endpoint::Sign {
                name: name(n),
                hash: Some(name(h)),
            },
            ["verify", n] if write => Endpoint::Verify {
                name: name(n),
                hash: None,
            },
            ["verify", n, h] if write => Endpoint::Verify {
                name: name(n),
                hash: Some(name(h)),
            },
            ["hmac", n] if write => Endpoint::Hmac {
                name: name(n),
                algorithm: None,
            },
            ["hmac", n, a] if write => Endpoint::Hmac {
                name: name(n),
                algorithm: Some(name(a)),
            },
            ["random"] if write => Endpoint::Random { bytes: None },
            // `random/<source>`, `random/<bytes>`, `random/<source>/<bytes>`: keyplane's only
            // source is the HSM, whichever is named.
            ["random", b] if write && b.bytes().all(|c| c.is_ascii_digit()) => Endpoint::Random {
                bytes: Some(name(b)),
            },
            ["random", source] if write => {
                entropy_source(source)?;
                Endpoint::Random { bytes: None }
            }
            ["random", source, b] if write => {
                entropy_source(source)?;
                Endpoint::Random {
                    bytes: Some(name(b)),
                }
            }
            ["hash"] if write => Endpoint::Hash { algorithm: None },
            ["hash", a] if write => Endpoint::Hash {
                algorithm: Some(name(a)),
            },
            _ => {
                return Err(Error::UnknownOperation(format!(
                    "unsupported path: {} {}",
                    method,
                    path.join("/")
                )))
            }
        };
        Ok(e)
    }

    /// Whether some method (a write, a read, a list or a delete) is served at `path`.
    fn exists(path: &[&str]) -> bool {
        [Method::POST, Method::GET, Method::DELETE]
            .iter()
            .any(|m| Endpoint::route(m, false, path).is_ok())
            || Endpoint::route(&Method::GET, true, path).is_ok()
    }

    /// Whether the endpoint takes `batch_input`.
    fn batches(&self) -> bool {
        matches!(
            self,
            Endpoint::Encrypt(_)
                | Endpoint::Decrypt(_)
                | Endpoint::Rewrap(_)
                | Endpoint::Sign { .. }
                | Endpoint::Verify { .. }
                | Endpoint::Hmac { .. }
        )
    }

    /// The Cedar action of the endpoint's (first) operation, for auditing a request refused
    /// before it reaches one.
    fn action(&self) -> &'static str {
        use crate::ops;
        match self {
            Endpoint::ListKeys => ops::aliases::ListAliases::ACTION,
            Endpoint::CreateKey(_) => ops::create_key::CreateKey::ACTION,
            Endpoint::ReadKey(_) => ops::describe_key::DescribeKey::ACTION,
            Endpoint::DeleteKey(_) => ops::key_deletion::ScheduleKeyDeletion::ACTION,
            Endpoint::ConfigKey(_) => ops::describe_key::DescribeKey::ACTION,
            Endpoint::RotateKey(_) | Endpoint::TrimKey(_) => ops::rotate_key::RotateKey::ACTION,
            Endpoint::Encrypt(_) => ops::encrypt::Encrypt::ACTION,
            Endpoint::Decrypt(_) => ops::decrypt::Decrypt::ACTION,
            Endpoint::Rewrap(_) => ops::rewrap::Rewrap::ACTION,
            Endpoint::DataKey {
                plaintext: true, ..
            } => ops::generate_data_key::GenerateDataKey::ACTION,
            Endpoint::DataKey { .. } => {
                ops::generate_data_key::GenerateDataKeyWithoutPlaintext::ACTION
            }
            Endpoint::Sign { .. } => ops::sign::Sign::ACTION,
            Endpoint::Verify { .. } => ops::sign::Verify::ACTION,
            Endpoint::Hmac { .. } => ops::mac::GenerateMac::ACTION,
            Endpoint::Random { .. } => ops::generate_random::GenerateRandom::ACTION,
            Endpoint::Hash { .. } => ops::hash::Hash::ACTION,
        }
    }

    /// The endpoint's body decoded and translated into its operations, each validated, by
    /// the functions [`Endpoint::serve`] uses; where the operations depend on the key (a
    /// signature's algorithm on its spec), for every kind of key.
    #[cfg(feature = "fuzzing")]
    fn fuzz_translate(self, body: &[u8]) {
        match self {
            Endpoint::ListKeys
            | Endpoint::ReadKey(_)
            | Endpoint::DeleteKey(_)
            | Endpoint::RotateKey(_) => {}
            Endpoint::TrimKey(n) => {
                let _ = keys::trim(&n);
            }
            Endpoint::CreateKey(n) => keys::fuzz_create(&n, body),
            Endpoint::ConfigKey(n) => keys::fuzz_config(&n, body),
            Endpoint::Encrypt(n) => encryption::fuzz(&n, body, encryption::Kind::Encrypt),
            Endpoint::Decrypt(n) => encryption::fuzz(&n, body, encryption::Kind::Decrypt),
            Endpoint::Rewrap(n) => encryption::fuzz(&n, body, encryption::Kind::Rewrap),
            Endpoint::DataKey { name, .. } => {
                encryption::fuzz(&name, body, encryption::Kind::DataKey)
            }
            Endpoint::Sign { name, hash } => signing::fuzz(&name, body, hash, signing::Kind::Sign),
            Endpoint::Verify { name, hash } => {
                signing::fuzz(&name, body, hash, signing::Kind::Verify)
            }
            Endpoint::Hmac { name, algorithm } => {
                signing::fuzz(&name, body, algorithm, signing::Kind::Hmac)
            }
            Endpoint::Random { bytes } => utility::fuzz_random(body, bytes),
            Endpoint::Hash { algorithm } => utility::fuzz_hash(body, algorithm),
        }
    }

    async fn serve(self, call: &Call<'_>) -> std::result::Result<Reply, Failure> {
        match self {
            Endpoint::ListKeys => keys::list(call).await,
            Endpoint::CreateKey(n) => keys::create(call, &n).await,
            Endpoint::ReadKey(n) => keys::read(call, &n).await,
            Endpoint::DeleteKey(n) => keys::delete(call, &n).await,
            Endpoint::ConfigKey(n) => keys::config(call, &n).await,
            Endpoint::RotateKey(n) => keys::rotate(call, &n).await,
            Endpoint::TrimKey(n) => keys::trim(&n),
            Endpoint::Encrypt(n) => encryption::encrypt(call, &n).await,
            Endpoint::Decrypt(n) => encryption::decrypt(call, &n).await,
            Endpoint::Rewrap(n) => encryption::rewrap(call, &n).await,
            Endpoint::DataKey { plaintext, name } => {
                encryption::data_key(call, &name, plaintext).await
            }
            Endpoint::Sign { name, hash } => signing::sign(call, &name, hash).await,
            Endpoint::Verify { name, hash } => signing::verify(call, &name, hash).await,
            Endpoint::Hmac { name, algorithm } => signing::hmac(call, &name, algorithm).await,
            Endpoint::Random { bytes } => utility::random(call, bytes).await,
            Endpoint::Hash { algorithm } => utility::hash(call, algorithm).await,
        }
    }
}

/// The version a request pins with `key_version` (0 is none, the latest): keyplane encrypts,
/// signs and MACs with a key's latest version only, so the operation refuses any other
/// (`ops::checks::check_pinned_primary`).
pub fn pinned(key_version: Option<u32>) -> Option<u32> {
    key_version.filter(|v| *v != 0)
}

/// The keyplane key id (an alias) of a Transit key name. No `/`: a Transit path has the name
/// in one segment (as Vault's names, which have none), so a name with one could never be
/// reached.
pub fn key_of(name: &str) -> Result<String> {
    let alias = format!("{}{name}", crate::ops::ALIAS_PREFIX);
    let refused = || {
        Error::validation(format!(
            "key name {name:?} is not supported: keyplane names Transit keys by alias, so a name is letters, digits, '_', '-', '.' and ':'"
        ))
    };
    if !is_transit_name(name) {
        return Err(refused());
    }
    crate::ops::validate_alias(&alias).map_err(|_| refused())?;
    Ok(alias)
}

/// Whether an alias's name (after `alias/`) can be a Transit key's (see [`key_of`]).
pub fn is_transit_name(name: &str) -> bool {
    !name.contains('/')
}

/// The answer: the envelope around the reply's data, `Content-Type: application/json`.
fn reply_response(gate: &Gate, reply: Reply) -> Response {
    if reply.status == StatusCode::NO_CONTENT {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        return resp;
    }
    let body = wire::envelope(
        &gate.meta.request_id,
        reply.data.as_deref().map(Vec::as_slice),
        &reply.warnings,
    );
    json(reply.status, Body::from(bytes::Bytes::from_owner(body)))
}

/// An error as Vault sends it: `{"errors": ["…"]}` (`[]` when there is nothing to say, as
/// Vault answers a list with no keys).
pub fn error_response(e: &TransitError) -> Response {
    let errors: &[&str] = if e.message.is_empty() {
        &[]
    } else {
        &[e.message.as_str()]
    };
    let body = serde_json::json!({ "errors": errors });
    let mut resp = json(e.status, Body::from(body.to_string()));
    if let Some(secs) = e.retry_after_secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn json(status: StatusCode, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // As Vault's API: answers carry plaintexts, data keys and (`auth/token/lookup-self`) the
    // caller's token, and the token travels in `X-Vault-Token`, not `Authorization`, so a
    // shared cache's rule for authenticated requests does not keep it from storing a GET's
    // answer and serving it to the next caller.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::not_objects::{Pair, BODIES};

    /// A body that is not an object is refused (Vault answers such a body 400 too).
    #[test]
    fn a_body_must_be_a_json_object() {
        for body in BODIES.iter().filter(|b| **b != b"null") {
            let e = decode::<Pair>(body).unwrap_err().to_string();
            assert!(e.contains("must be a JSON object"), "{e}");
        }
        assert!(decode::<Pair>(b"").is_ok());
        // What `vault write -f` sends.
        assert!(decode::<Pair>(b"null").is_ok());
    }

    /// `random/<source>` names one of Vault's sources; another is refused, as Vault does.
    #[test]
    fn random_sources_are_vaults() {
        for path in [
            ["random", "platform"],
            ["random", "seal"],
            ["random", "all"],
        ] {
            assert!(
                Endpoint::route(&Method::POST, false, &path).is_ok(),
                "{path:?}"
            );
        }
        assert!(Endpoint::route(&Method::POST, false, &["random", "64"]).is_ok());
        assert!(Endpoint::route(&Method::POST, false, &["random", "dice"]).is_err());
        assert!(Endpoint::route(&Method::POST, false, &["random", "dice", "64"]).is_err());
    }

    /// A Transit name is one path segment: no `/`, which no Transit path could reach.
    #[test]
    fn a_name_has_no_slash() {
        assert_eq!(key_of("payments").unwrap(), "alias/payments");
        assert!(key_of("team/payments").is_err());
    }
}
