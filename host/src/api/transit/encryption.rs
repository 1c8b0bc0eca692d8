//! Transit's `encrypt`, `decrypt`, `rewrap` and `datakey/{plaintext,wrapped}` on keyplane's
//! `encrypt`, `decrypt`, `rewrap` and `generate-data-key(-without-plaintext)`, with
//! `batch_input` as one batch of operations. A ciphertext is `vault:v<N>:` and the base64 of
//! keyplane's own ciphertext (which names the key and version N), so the same bytes decrypt
//! through the native API and the AWS front. `context` and `associated_data` are the
//! encryption context (`vault:context`, `vault:associated_data`).
//!
//! Encrypting under a name that has no key creates it first (Transit's upsert: a key of a type
//! that encrypts, see [`upsert_type`]), as `create-key` authorizes it; keyplane encrypts with
//! the latest version only.

use serde::{Deserialize, Serialize};

use super::error::TransitError;
use super::wire::{encryption_context, parse_versioned, versioned, weak, ItemB64};
use super::{done, err, key_of, pinned, Call, Failure, Reply};
use crate::api::bounded::AtMost;
use crate::crypto::ciphertext::Ciphertext;
use crate::error::{Error, Result};
use crate::ops::MAX_BATCH_ITEMS;
use crate::ops::{self, Base64};

type Answer = std::result::Result<Reply, Failure>;

/// One item of a request, or the request itself when it has no `batch_input`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Item {
    plaintext: Option<ItemB64>,
    ciphertext: Option<String>,
    context: Option<ItemB64>,
    associated_data: Option<ItemB64>,
    #[serde(default, deserialize_with = "weak::opt_int")]
    key_version: Option<u32>,
    nonce: Option<String>,
    reference: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Request {
    /// One past the limit at most (see `api::bounded`): more is refused as too many.
    batch_input: Option<AtMost<Item, { MAX_BATCH_ITEMS + 1 }>>,
    #[serde(default, deserialize_with = "weak::opt_int")]
    partial_failure_response_code: Option<u16>,
    /// Encrypt: the type of the key created when the name has none.
    #[serde(rename = "type")]
    key_type: Option<String>,
    /// Encrypt: whether a key created when the name has none is convergent (refused: keyplane
    /// has no convergent keys, and must not make a randomized one in its place).
    #[serde(default, deserialize_with = "weak::opt_bool")]
    convergent_encryption: Option<bool>,
    /// Data keys: 128, 256 (default) or 512.
    #[serde(default, deserialize_with = "weak::opt_int")]
    bits: Option<u32>,
}

fn refuse_nonce(item: &Item) -> Result<()> {
    if item.nonce.as_deref().is_some_and(|n| !n.is_empty()) {
        return Err(Error::Unsupported(
            "nonce is not supported: keyplane never reuses a nonce (no convergent encryption)"
                .into(),
        ));
    }
    Ok(())
}

/// The keyplane ciphertext of a Transit one, checked against its `vault:v<N>:` prefix.
fn ciphertext_of(value: Option<&str>) -> Result<Base64> {
    let value = value.ok_or_else(|| Error::validation("missing ciphertext"))?;
    let (version, blob) = parse_versioned("ciphertext", value, false)?;
    let parsed = Ciphertext::parse(&blob)?;
    if parsed.key_version != version {
        return Err(Error::MalformedCiphertext(
            "the ciphertext's vault:v<N> prefix does not name the version that made it",
        ));
    }
    Ok(Base64::new(blob))
}

#[derive(Serialize)]
struct Sealed {
    ciphertext: String,
    key_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

#[derive(Serialize)]
struct Opened {
    plaintext: Base64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

/// One result of a batch: the item's answer or its error, with its reference (and the
/// fields Transit still writes for a failed item of that endpoint, see [`BatchForm`]).
#[derive(Serialize)]
#[serde(untagged)]
pub enum BatchResult<T> {
    Ok(T),
    Err {
        #[serde(flatten)]
        blank: serde_json::Map<String, serde_json::Value>,
        error: String,
        reference: String,
    },
}

#[derive(Serialize)]
pub struct BatchData<T> {
    pub batch_results: Vec<BatchResult<T>>,
}

/// How a Transit endpoint answers a batch, as Vault's does: its status, and what a failed
/// item carries besides `error` and `reference`.
pub struct BatchForm {
    statuses: Statuses,
    /// The fields a failed item keeps with their empty values (Vault's response structs
    /// leave them without `omitempty`): `plaintext: ""` in decrypt, `valid: false` in
    /// verify, `key_version: 0` in sign. Clients index them without checking.
    blank: &'static [(&'static str, Blank)],
}

/// The status of a batch answer.
#[derive(Clone, Copy)]
enum Statuses {
    /// Encrypt, decrypt: the status follows the items (see [`batch_status`]), with the
    /// `partial_failure_response_code` the request asked for.
    FollowItems { partial_failure_code: Option<u16> },
    /// Rewrap, sign, verify, hmac: `200` whatever the items' input, each item saying how it
    /// went; `500` if an item failed on the server's side (HSM or database away), as Vault's
    /// rewrap answers an internal error, so that a job re-wrapping a column retries rather
    /// than taking it as done.
    AlwaysOk,
}

/// An empty value of a field of a failed batch item.
#[derive(Clone, Copy)]
pub enum Blank {
    Text,
    False,
    Zero,
}

impl BatchForm {
    /// Encrypt and decrypt: the status follows the items.
    pub const fn follow_items(
        partial_failure_code: Option<u16>,
        blank: &'static [(&'static str, Blank)],
    ) -> BatchForm {
        BatchForm {
            statuses: Statuses::FollowItems {
                partial_failure_code,
            },
            blank,
        }
    }

    /// Rewrap, sign, verify and hmac: `200` whatever the items' input.
    pub const fn always_ok(blank: &'static [(&'static str, Blank)]) -> BatchForm {
        BatchForm {
            statuses: Statuses::AlwaysOk,
            blank,
        }
    }

    fn blank(&self) -> serde_json::Map<String, serde_json::Value> {
        self.blank
            .iter()
            .map(|(name, b)| {
                let v = match b {
                    Blank::Text => serde_json::Value::from(""),
                    Blank::False => serde_json::Value::from(false),
                    Blank::Zero => serde_json::Value::from(0),
                };
                (name.to_string(), v)
            })
            .collect()
    }
}

/// The status of an encrypt or decrypt batch, as Transit's `batchRequestResponse`: `200` if
/// every item succeeded; if an item failed on its input, `400`; else (an item failed on the
/// server's side: HSM or database away) `500`. Either way, when some items succeeded,
/// `partial_failure_response_code` if given.
fn batch_status(
    failed: usize,
    total: usize,
    user_error: bool,
    partial_failure_code: Option<u16>,
) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    if failed == 0 {
        return StatusCode::OK;
    }
    match partial_failure_code {
        Some(code) if failed < total => {
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
        }
        _ if user_error => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Refuse a `partial_failure_response_code` that is not a status a body can be answered
/// with (before any item runs, rather than answering another status than asked).
fn check_partial_code(code: Option<u16>) -> Result<()> {
    match code {
        Some(c) if !(200..=599).contains(&c) || c == 204 || c == 304 => {
            Err(Error::validation(format!(
                "partial_failure_response_code {c} is not supported: a status from 200 to 599 that carries a body"
            )))
        }
        _ => Ok(()),
    }
}

/// Run `items` (each already translated, or the error translating it) as one batch and
/// answer each with `encode`.
pub async fn run_batch<O, T>(
    call: &Call<'_>,
    items: Vec<(Result<O>, Option<String>)>,
    form: &BatchForm,
    encode: impl Fn(O::Output, Option<String>) -> Result<T>,
) -> Answer
where
    O: ops::Operation,
    T: Serialize,
{
    if let Statuses::FollowItems {
        partial_failure_code,
    } = form.statuses
    {
        check_partial_code(partial_failure_code).map_err(err)?;
    }
    if items.is_empty() {
        return Err(err(Error::validation("missing batch input to process")));
    }
    // Every item of a batch answer has `reference` ("" when the item had none), as Vault's
    // (clients index it); a single answer has none.
    let items = items
        .into_iter()
        .map(|(op, r)| (op, Some(r.unwrap_or_default())));
    let (ops, references): (Vec<_>, Vec<_>) = items.unzip();
    let outputs = call.run_many(ops).await.map_err(done)?;
    // Every item refused for the key (no such key, or Cedar's denial, whether of the key or
    // of each item's context): the request's answer, as Vault looks the key up and checks the
    // caller's policy before any item (400 "encryption key not found", or 403), rather than a
    // batch whose every item says the same. A version an item names that the key does not
    // have stays that item's error, as in Vault.
    let whole = |e: &Error| match e {
        Error::NotFound { kind, .. } => matches!(*kind, "key" | "alias"),
        Error::AccessDenied { .. } => true,
        _ => false,
    };
    if outputs.iter().all(|o| o.as_ref().is_err_and(whole)) {
        if let Some(Err(e)) = outputs.into_iter().next() {
            return Err(done(e));
        }
        return Err(done(Error::Internal));
    }
    let total = outputs.len();
    let (mut failed, mut user_error, mut server_fault) = (0, false, false);
    let results = outputs
        .into_iter()
        .zip(references)
        .map(
            |(out, reference)| match out.and_then(|o| encode(o, reference.clone())) {
                Ok(t) => BatchResult::Ok(t),
                Err(e) => {
                    failed += 1;
                    user_error |= !e.is_server_fault();
                    server_fault |= e.is_server_fault();
                    BatchResult::Err {
                        blank: form.blank(),
                        error: TransitError::from(&e).message,
                        reference: reference.unwrap_or_default(),
                    }
                }
            },
        )
        .collect();
    let mut reply = Reply::data(&BatchData {
        batch_results: results,
    })?;
    reply.status = match form.statuses {
        Statuses::FollowItems {
            partial_failure_code,
        } => batch_status(failed, total, user_error, partial_failure_code),
        Statuses::AlwaysOk if server_fault => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        Statuses::AlwaysOk => axum::http::StatusCode::OK,
    };
    Ok(reply)
}

/// Answer a request that is one item or, with `batch_input`, many: each becomes an
/// operation (`op`), and its output an answer (`encode`), with the item's `reference`.
pub async fn one_or_many<I, O, T>(
    call: &Call<'_>,
    single: I,
    batch: Option<Vec<I>>,
    form: &BatchForm,
    reference: impl Fn(&I) -> Option<String>,
    op: impl Fn(I) -> Result<O>,
    encode: impl Fn(O::Output, Option<String>) -> Result<T>,
) -> Answer
where
    O: ops::Operation,
    T: Serialize,
{
    match batch {
        Some(items) => {
            let items = items
                .into_iter()
                .map(|i| {
                    let r = reference(&i);
                    (op(i), r)
                })
                .collect();
            run_batch(call, items, form, encode).await
        }
        None => {
            let out = call.run(op(single)).await.map_err(done)?;
            Reply::data(&encode(out, None).map_err(done)?)
        }
    }
}

/// The items of a `batch_input` (one past the limit at most: `execute_many` refuses that).
pub fn batch<I>(input: Option<AtMost<I, { MAX_BATCH_ITEMS + 1 }>>) -> Option<Vec<I>> {
    input.map(|b| b.items)
}

fn reference(i: &Item) -> Option<String> {
    i.reference.clone()
}

fn encrypt_op(alias: &str, item: Item) -> Result<ops::encrypt::Encrypt> {
    refuse_nonce(&item)?;
    let plaintext = item
        .plaintext
        .as_ref()
        .ok_or_else(|| Error::validation("missing plaintext to encrypt"))?
        .get("plaintext")?;
    Ok(ops::encrypt::Encrypt {
        key_id: alias.to_string(),
        plaintext: Base64(plaintext.0.clone()),
        encryption_context: encryption_context(
            item.context.as_ref(),
            item.associated_data.as_ref(),
        )?,
        encryption_algorithm: None,
        pinned_version: pinned(item.key_version),
    })
}

fn sealed(out: ops::encrypt::EncryptOutput, reference: Option<String>) -> Result<Sealed> {
    Ok(Sealed {
        ciphertext: versioned(out.key_version, &out.ciphertext_blob.0),
        key_version: out.key_version,
        reference,
    })
}

/// `POST encrypt/<name>`.
pub async fn encrypt(call: &Call<'_>, name: &str) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let (req, item): (Request, Item) = call.decode_split().map_err(err)?;
    let creation = Creation {
        key_type: req.key_type.as_deref(),
        convergent: req.convergent_encryption == Some(true),
    };
    match req.batch_input {
        Some(items) => {
            // Checked before a key may be created for the batch, which it would then refuse.
            check_partial_code(req.partial_failure_response_code).map_err(err)?;
            let cost = u32::try_from(items.items.len()).unwrap_or(u32::MAX);
            call.gate.batch_fits(&call.principal, cost).map_err(err)?;
            // A batch refused for its length (none, or too many) creates nothing.
            let derived = items.items.first().is_some_and(has_context);
            // A `type` that cannot encrypt creates nothing, and is otherwise ignored as for a
            // key that exists (Vault's rule): the items then find the key there is, or none.
            // Not refused up front: a caller that may not describe the key (a grantee of
            // Encrypt only) cannot tell the upsert that it exists.
            let created = if (1..=MAX_BATCH_ITEMS).contains(&items.items.len())
                && upsert_type(creation.key_type).is_ok()
            {
                upsert(call, name, &alias, &creation, derived).await?
            } else {
                None
            };
            let op = |i| encrypt_op(&alias, i);
            let form = BatchForm::follow_items(req.partial_failure_response_code, &[]);
            let reply =
                one_or_many(call, item, Some(items.items), &form, reference, op, sealed).await?;
            Ok(created.into_iter().fold(reply, Reply::warn))
        }
        None => {
            // The key is looked up only when the encryption does not find it: the common
            // case costs one operation.
            let first = call.run(encrypt_op(&alias, item.clone())).await;
            let (out, created) = match first {
                Err(Error::NotFound { .. }) => {
                    let derived = has_context(&item);
                    let created = upsert(call, name, &alias, &creation, derived).await?;
                    let out = call.run(encrypt_op(&alias, item)).await.map_err(done)?;
                    (out, created)
                }
                // Audited by the pipeline already (even a request the front could not
                // translate): not refused again.
                other => (other.map_err(done)?, None),
            };
            let reply = Reply::data(&sealed(out, None).map_err(done)?)?;
            Ok(created.into_iter().fold(reply, Reply::warn))
        }
    }
}

/// Whether an item has a context, as Transit reads it: an empty one is none (as
/// [`encryption_context`] drops it, a key made derived for it could not be used).
fn has_context(item: &Item) -> bool {
    item.context
        .as_ref()
        .is_some_and(|c| c.get("context").is_ok_and(|c| !c.0.is_empty()))
}

/// What an encrypt asks of the key it creates when the name has none.
struct Creation<'a> {
    /// `type` (default aes256-gcm96; see [`upsert_type`]).
    key_type: Option<&'a str>,
    /// `convergent_encryption`: refused when a key would be made with it (keyplane has no
    /// convergent keys, and must not make a randomized one in its place); ignored, as Vault
    /// ignores it, when the key exists.
    convergent: bool,
}

/// The type of the key an encrypt creates (`type`, default aes256-gcm96): one that encrypts,
/// as Vault's `path_encrypt.go` allows (aes128-gcm96, aes256-gcm96, chacha20-poly1305). Any
/// other is refused before anything is made: a key of it could not do the encryption that
/// made it, and would be left under the name.
fn upsert_type(key_type: Option<&str>) -> Result<&str> {
    match key_type.unwrap_or("aes256-gcm96") {
        t @ ("aes128-gcm96" | "aes256-gcm96" | "chacha20-poly1305") => Ok(t),
        t => Err(Error::validation(format!(
            "key type {t:?} not supported for this operation: an encrypt creates only \
             aes128-gcm96, aes256-gcm96 or chacha20-poly1305 keys"
        ))),
    }
}

/// Transit's upsert: a name without a key gets one (`type`, default aes256-gcm96; derived if
/// the request has a context) before the
/// encryption, authorized and audited as `create-key`. Returns a warning saying so.
async fn upsert(
    call: &Call<'_>,
    name: &str,
    alias: &str,
    creation: &Creation<'_>,
    derived: bool,
) -> std::result::Result<Option<String>, Failure> {
    let key_type = creation.key_type;
    let describe = ops::describe_key::DescribeKey {
        key_id: alias.to_string(),
    };
    match call.run(Ok(describe)).await {
        Ok(_) => return Ok(None),
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(done(e)),
    }
    if creation.convergent {
        return Err(err(Error::Unsupported(
            "convergent_encryption is not supported: keyplane never encrypts deterministically"
                .into(),
        )));
    }
    let key_type = upsert_type(key_type).map_err(err)?;
    // As Transit: a key made for a request with a context is a derived one (here: one that
    // requires a context).
    let body = serde_json::json!({ "type": key_type, "derived": derived }).to_string();
    let inner = Call {
        gate: call.gate,
        principal: call.principal.clone(),
        body: body.as_bytes(),
    };
    match super::keys::create(&inner, name).await {
        // The caller may create but not read the key, and so not see one already there
        // (created or not, the encryption decides on it).
        Ok(reply) if reply.status == axum::http::StatusCode::NO_CONTENT => Ok(None),
        Ok(_) => Ok(Some(format!(
            "key {name} did not exist and was created ({key_type})"
        ))),
        // The caller may not create a key (nor describe the one there may be: a caller with a
        // grant to encrypt under it, say): the operation itself decides, on a key there is or
        // is not (not found, as for a key the caller may not see).
        Err(Failure::Done(e)) if e.status == axum::http::StatusCode::FORBIDDEN => Ok(None),
        Err(e) => Err(e),
    }
}

fn decrypt_op(alias: &str, item: Item) -> Result<ops::decrypt::Decrypt> {
    // A `nonce` is ignored here, as Vault ignores it for keys that are not convergent (none
    // of keyplane's is): a client that sends the encrypt's nonce back still decrypts.
    Ok(ops::decrypt::Decrypt {
        ciphertext_blob: ciphertext_of(item.ciphertext.as_deref())?,
        encryption_context: encryption_context(
            item.context.as_ref(),
            item.associated_data.as_ref(),
        )?,
        key_id: Some(alias.to_string()),
        encryption_algorithm: None,
        key_version: None,
    })
}

fn opened(out: ops::decrypt::DecryptOutput, reference: Option<String>) -> Result<Opened> {
    Ok(Opened {
        plaintext: out.plaintext,
        reference,
    })
}

/// `POST decrypt/<name>`.
pub async fn decrypt(call: &Call<'_>, name: &str) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let (req, item): (Request, Item) = call.decode_split().map_err(err)?;
    let op = |i| decrypt_op(&alias, i);
    let form = BatchForm::follow_items(
        req.partial_failure_response_code,
        &[("plaintext", Blank::Text)],
    );
    one_or_many(
        call,
        item,
        batch(req.batch_input),
        &form,
        reference,
        op,
        opened,
    )
    .await
}

fn rewrap_op(alias: &str, item: Item) -> Result<ops::rewrap::Rewrap> {
    // A `nonce` would be the new ciphertext's: refused as on encrypt (Vault refuses it too
    // for keys that are not convergent: `ErrNonceNotAllowed`).
    refuse_nonce(&item)?;
    Ok(ops::rewrap::Rewrap {
        ciphertext_blob: ciphertext_of(item.ciphertext.as_deref())?,
        source_encryption_context: encryption_context(
            item.context.as_ref(),
            item.associated_data.as_ref(),
        )?,
        source_key_id: Some(alias.to_string()),
        destination_key_id: None,
        destination_encryption_context: None,
        pinned_version: pinned(item.key_version),
    })
}

fn rewrapped(out: ops::rewrap::RewrapOutput, reference: Option<String>) -> Result<Sealed> {
    Ok(Sealed {
        ciphertext: versioned(out.key_version, &out.ciphertext_blob.0),
        key_version: out.key_version,
        reference,
    })
}

/// `POST rewrap/<name>`: the ciphertext re-encrypted under the key's latest version.
pub async fn rewrap(call: &Call<'_>, name: &str) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let (req, item): (Request, Item) = call.decode_split().map_err(err)?;
    let op = |i| rewrap_op(&alias, i);
    one_or_many(
        call,
        item,
        batch(req.batch_input),
        &BatchForm::always_ok(&[]),
        reference,
        op,
        rewrapped,
    )
    .await
}

#[derive(Serialize)]
struct DataKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext: Option<Base64>,
    ciphertext: String,
    key_version: u32,
}

/// `POST datakey/plaintext/<name>` and `datakey/wrapped/<name>`: a new data key of `bits`
/// (128, 256 or 512) sealed under the key, with (`plaintext`) or without it.
pub async fn data_key(call: &Call<'_>, name: &str, with_plaintext: bool) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let (req, item): (Request, Item) = call.decode_split().map_err(err)?;
    let request = data_key_request(alias, &req, &item).map_err(err)?;
    let data = if with_plaintext {
        let op = ops::generate_data_key::GenerateDataKey(request);
        let out = call.run(Ok(op)).await.map_err(done)?;
        DataKey {
            plaintext: Some(out.plaintext),
            ciphertext: versioned(out.key_version, &out.ciphertext_blob.0),
            key_version: out.key_version,
        }
    } else {
        let op = ops::generate_data_key::GenerateDataKeyWithoutPlaintext(request);
        let out = call.run(Ok(op)).await.map_err(done)?;
        DataKey {
            plaintext: None,
            ciphertext: versioned(out.key_version, &out.ciphertext_blob.0),
            key_version: out.key_version,
        }
    };
    Reply::data(&data)
}

fn data_key_request(
    alias: String,
    req: &Request,
    item: &Item,
) -> Result<ops::generate_data_key::DataKeyRequest> {
    refuse_nonce(item)?;
    let bits = req.bits.unwrap_or(256);
    if !matches!(bits, 128 | 256 | 512) {
        return Err(Error::validation("bits must be 128, 256 or 512"));
    }
    Ok(ops::generate_data_key::DataKeyRequest {
        key_id: alias,
        key_spec: None,
        number_of_bytes: Some(bits as usize / 8),
        encryption_context: encryption_context(
            item.context.as_ref(),
            item.associated_data.as_ref(),
        )?,
        pinned_version: pinned(item.key_version),
    })
}

/// Which endpoint of this file a fuzzed body is for.
#[cfg(feature = "fuzzing")]
pub(super) enum Kind {
    Encrypt,
    Decrypt,
    Rewrap,
    DataKey,
}

/// A body of `kind` decoded and translated, item by item, into its operations (validated),
/// by the functions the endpoints use.
#[cfg(feature = "fuzzing")]
pub(super) fn fuzz(name: &str, body: &[u8], kind: Kind) {
    use super::fuzz_validate as check;
    let (Ok(alias), Ok(req), Ok(item)) = (
        key_of(name),
        super::decode::<Request>(body),
        super::decode::<Item>(body),
    ) else {
        return;
    };
    let _ = check_partial_code(req.partial_failure_response_code);
    if let Kind::DataKey = kind {
        if let Ok(request) = data_key_request(alias.clone(), &req, &item) {
            check(Ok(ops::generate_data_key::GenerateDataKey(request)));
        }
        return;
    }
    if let Ok(t) = upsert_type(req.key_type.as_deref()) {
        let _ = super::wire::spec_of_type(t, None);
    }
    let items = std::iter::once(item).chain(batch(req.batch_input).into_iter().flatten());
    for item in items.take(MAX_BATCH_ITEMS + 1) {
        match kind {
            Kind::Encrypt => check(encrypt_op(&alias, item)),
            Kind::Decrypt => check(decrypt_op(&alias, item)),
            Kind::Rewrap => check(rewrap_op(&alias, item)),
            Kind::DataKey => {}
        }
    }
}
