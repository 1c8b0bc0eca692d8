//! The AWS KMS actions: one [`KmsAction`] per action, translating its wire request (JSON 1.1,
//! PascalCase, blobs in base64, timestamps in epoch seconds) into an operation of `ops` and
//! the operation's output into its wire response. Files follow `ops`: the actions that
//! become the operations of one `ops` file live in the file of the same name.
//!
//! A request's shape is checked against AWS's model here (required members, lengths, enums),
//! with AWS's wording, before it becomes an operation; what the operation checks is checked
//! there, once, whichever front the request came through. A value of an enumeration of the
//! model that keyplane does not have is no malformed request but one for something keyplane
//! does not do: `UnsupportedOperationException`, as for the actions it does not serve (see
//! `ids::served_of`). Unknown members are ignored, as AWS does. `GrantTokens`, which every
//! action that uses a key takes, is read once for all (see [`grant_tokens`]) and goes to the
//! core with the request's facts.

mod aliases;
mod automatic_rotation;
mod create_key;
mod decrypt;
mod derive_shared_secret;
mod describe_key;
mod encrypt;
mod generate_data_key;
mod generate_data_key_pair;
mod generate_random;
mod get_public_key;
mod grants;
mod import;
mod key_deletion;
mod key_policies;
mod key_state;
mod key_tags;
mod list_keys;
mod mac;
mod metadata;
mod re_encrypt;
mod rotation;
mod sign;
mod update_key_description;

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::KmsError;
use super::ids::Cx;
use crate::api::gate::Gate;
use crate::api::secret_buf::SecretBuf;
use crate::authn::Principal;
use crate::error::{Error, Result};
use crate::ops::Operation;

/// The content type of the KMS JSON protocol.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// One AWS KMS action.
pub trait KmsAction: DeserializeOwned + Send + 'static {
    /// The operation it becomes.
    type Op: Operation;
    /// Its wire response.
    type Response: Serialize;

    /// `DryRun`: decide, do not do.
    fn dry_run(&self) -> bool {
        false
    }

    /// The operation this request asks for (checking the request against the model).
    fn into_op(self, cx: &Cx) -> Result<Self::Op>;

    /// The wire response of the operation's output (or the front's own error, e.g. a
    /// signature that does not verify).
    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError>;
}

/// Decode, run and encode one action.
type Handler = for<'a> fn(&'a Gate, Principal, &'a Cx, &'a [u8]) -> BoxFuture<'a, Response>;

fn handler<'a, A: KmsAction>(
    gate: &'a Gate,
    principal: Principal,
    cx: &'a Cx,
    body: &'a [u8],
) -> BoxFuture<'a, Response> {
    Box::pin(async move {
        let request = decode::<A>(body);
        let dry_run = request.as_ref().is_ok_and(A::dry_run);
        let (tokens, bad_tokens) = match grant_tokens(body) {
            Ok(tokens) => (tokens, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let op = request.and_then(|r| match bad_tokens {
            Some(e) => Err(e),
            None => r.into_op(cx),
        });
        // The request's grant tokens go with it to the core (see `RequestMeta::grant_tokens`).
        let with_tokens;
        let gate = if tokens.is_empty() {
            gate
        } else {
            with_tokens = gate.with_meta(crate::ops::RequestMeta {
                grant_tokens: tokens,
                ..gate.meta.clone()
            });
            &with_tokens
        };
        if dry_run {
            return match gate.dry_run(principal, op).await {
                Ok(()) => error_response(&KmsError::new(
                    "DryRunOperationException",
                    "The request would have succeeded, but the DryRun option is set.",
                )),
                Err(e) => error_response(&KmsError::from(&e)),
            };
        }
        match gate.run(principal, op).await {
            Ok(out) => match A::response(out, cx) {
                Ok(response) => json_response(&response),
                Err(e) => error_response(&e),
            },
            Err(e) => error_response(&KmsError::from(&e)),
        }
    })
}

macro_rules! actions {
    ($($target:literal => $action:ty),* $(,)?) => {
        &[$(
            (
                $target,
                <<$action as KmsAction>::Op as Operation>::ACTION,
                handler::<$action> as Handler,
            )
        ),*]
    };
}

/// Calls `$callback` with every action keyplane serves (`target => type`).
macro_rules! every_action {
    ($callback:ident) => {
        $callback! {
            "CreateKey" => create_key::CreateKey,
            "DescribeKey" => describe_key::DescribeKey,
            "ListKeys" => list_keys::ListKeys,
            "EnableKey" => key_state::EnableKey,
            "DisableKey" => key_state::DisableKey,
            "ScheduleKeyDeletion" => key_deletion::ScheduleKeyDeletion,
            "CancelKeyDeletion" => key_deletion::CancelKeyDeletion,
            "CreateAlias" => aliases::CreateAlias,
            "UpdateAlias" => aliases::UpdateAlias,
            "DeleteAlias" => aliases::DeleteAlias,
            "ListAliases" => aliases::ListAliases,
            "Encrypt" => encrypt::Encrypt,
            "Decrypt" => decrypt::Decrypt,
            "ReEncrypt" => re_encrypt::ReEncrypt,
            "GenerateDataKey" => generate_data_key::GenerateDataKey,
            "GenerateDataKeyWithoutPlaintext" => generate_data_key::GenerateDataKeyWithoutPlaintext,
            "GenerateDataKeyPair" => generate_data_key_pair::GenerateDataKeyPair,
            "GenerateDataKeyPairWithoutPlaintext" => generate_data_key_pair::GenerateDataKeyPairWithoutPlaintext,
            "GenerateRandom" => generate_random::GenerateRandom,
            "Sign" => sign::Sign,
            "Verify" => sign::Verify,
            "GenerateMac" => mac::GenerateMac,
            "VerifyMac" => mac::VerifyMac,
            "GetPublicKey" => get_public_key::GetPublicKey,
            "DeriveSharedSecret" => derive_shared_secret::DeriveSharedSecret,
            "RotateKeyOnDemand" => rotation::RotateKeyOnDemand,
            "ListKeyRotations" => rotation::ListKeyRotations,
            "GetParametersForImport" => import::GetParametersForImport,
            "ImportKeyMaterial" => import::ImportKeyMaterial,
            "DeleteImportedKeyMaterial" => import::DeleteImportedKeyMaterial,
            "UpdateKeyDescription" => update_key_description::UpdateKeyDescription,
            "TagResource" => key_tags::TagResource,
            "UntagResource" => key_tags::UntagResource,
            "ListResourceTags" => key_tags::ListResourceTags,
            "EnableKeyRotation" => automatic_rotation::EnableKeyRotation,
            "DisableKeyRotation" => automatic_rotation::DisableKeyRotation,
            "GetKeyRotationStatus" => automatic_rotation::GetKeyRotationStatus,
            "GetKeyPolicy" => key_policies::GetKeyPolicy,
            "PutKeyPolicy" => key_policies::PutKeyPolicy,
            "ListKeyPolicies" => key_policies::ListKeyPolicies,
            "CreateGrant" => grants::CreateGrant,
            "ListGrants" => grants::ListGrants,
            "RevokeGrant" => grants::RevokeGrant,
            "RetireGrant" => grants::RetireGrant,
            "ListRetirableGrants" => grants::ListRetirableGrants,
        }
    };
}

/// Every action keyplane serves: (target, Cedar action, handler).
const ACTIONS: &[(&str, &str, Handler)] = every_action!(actions);

/// Decode `body` as the action numbered `selector` (modulo their number) and translate it to
/// its operation, validated: the AWS front's decoding, for the fuzz targets (`crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_decode(selector: usize, body: &[u8]) {
    macro_rules! decoders {
        ($($target:literal => $action:ty),* $(,)?) => {
            &[$(|body: &[u8], cx: &Cx| {
                if let Ok(a) = decode::<$action>(body) {
                    if let Ok(op) = a.into_op(cx) {
                        let _ = op.validate();
                    }
                }
            }),*]
        };
    }
    const DECODERS: &[fn(&[u8], &Cx)] = every_action!(decoders);
    let cx = Cx {
        account_id: "111122223333".into(),
        region: "eu-west-1".into(),
        rsa_encryption: None,
    };
    DECODERS[selector % DECODERS.len()](body, &cx);
}

/// The action of a target (`Encrypt` of `TrentService.Encrypt`): (Cedar action, handler).
pub fn lookup(target: &str) -> Option<(&'static str, Handler)> {
    ACTIONS
        .iter()
        .find(|(t, _, _)| *t == target)
        .map(|(_, action, h)| (*action, *h))
}

/// The actions of the AWS KMS API (2014-11-01, as botocore's model has it) that keyplane
/// does not serve, and why. They answer `UnsupportedOperationException`, a modeled error the
/// SDKs raise as such; a target that is no action of the API at all answers
/// `UnknownOperationException`, as AWS's JSON services do. With [`ACTIONS`] they are every
/// action of the model (the boto3 test checks it against the installed botocore's).
const NOT_SERVED: &[(&str, &str)] = &[
    ("ConnectCustomKeyStore", CUSTOM_KEY_STORES),
    ("CreateCustomKeyStore", CUSTOM_KEY_STORES),
    ("DeleteCustomKeyStore", CUSTOM_KEY_STORES),
    ("DescribeCustomKeyStores", CUSTOM_KEY_STORES),
    ("DisconnectCustomKeyStore", CUSTOM_KEY_STORES),
    ("UpdateCustomKeyStore", CUSTOM_KEY_STORES),
    ("ReplicateKey", MULTI_REGION),
    ("UpdatePrimaryRegion", MULTI_REGION),
    ("Encapsulate", ML_KEM),
    ("Decapsulate", ML_KEM),
    (
        "GetKeyLastUsage",
        "last-usage tracking: the audit log records every use of a key",
    ),
];
const CUSTOM_KEY_STORES: &str = "custom key stores";
const MULTI_REGION: &str = "multi-Region keys";
const ML_KEM: &str = "ML-KEM keys";

/// Why `target` (with its `TrentService.` prefix, if it had one) names nothing keyplane
/// serves.
pub fn not_served(target: Option<&str>) -> Error {
    let action = target.and_then(|t| t.strip_prefix(super::KMS_TARGET_PREFIX));
    match NOT_SERVED.iter().find(|(a, _)| Some(*a) == action) {
        Some((action, why)) => {
            Error::Unsupported(format!("keyplane does not serve {action} ({why})"))
        }
        None => Error::UnknownOperation(format!(
            "keyplane does not know {}",
            target.unwrap_or("(no X-Amz-Target)")
        )),
    }
}

/// Most `GrantTokens` of a request, and the longest token (AWS's model).
const MAX_GRANT_TOKENS: usize = 10;
const MAX_GRANT_TOKEN_LEN: usize = 8192;

/// The `GrantTokens` member every action that uses a key takes (none: empty), checked against
/// AWS's model. Read on its own, once for all actions, rather than by each action's type.
fn grant_tokens(body: &[u8]) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Tokens {
        #[serde(rename = "GrantTokens", default)]
        grant_tokens: Option<Vec<String>>,
    }
    // Most requests carry none: their body is not decoded a second time.
    if !body.windows(13).any(|w| w == b"\"GrantTokens\"") {
        return Ok(Vec::new());
    }
    // A body that does not parse is the action's decoding's to report (it runs first); what
    // fails here is a `GrantTokens` of the wrong type.
    let Tokens { grant_tokens } = decode::<Tokens>(body)?;
    let tokens = grant_tokens.unwrap_or_default();
    if tokens.len() > MAX_GRANT_TOKENS {
        return Err(Error::validation(format!(
            "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: Member must have length less than or equal to {MAX_GRANT_TOKENS}"
        )));
    }
    if tokens
        .iter()
        .any(|t| t.is_empty() || t.len() > MAX_GRANT_TOKEN_LEN)
    {
        return Err(Error::validation(format!(
            "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to {MAX_GRANT_TOKEN_LEN}, Member must have length greater than or equal to 1]"
        )));
    }
    Ok(tokens)
}

fn decode<A: DeserializeOwned>(body: &[u8]) -> Result<A> {
    let body = crate::api::json_object(body).map_err(|e| Error::MalformedJson(e.into()))?;
    // AWS answers a body that does not parse, or a member of the wrong type, with a
    // SerializationException; missing members are checked by each action (AWS's wording).
    serde_json::from_slice(body).map_err(|e| Error::MalformedJson(e.to_string()))
}

/// A `200` with `response` as JSON, written into a buffer zeroized once sent (responses may
/// hold plaintext or a data key).
fn json_response<T: Serialize>(response: &T) -> Response {
    let mut body = SecretBuf::default();
    if let Err(e) = serde_json::to_writer(&mut body, response) {
        tracing::error!(error = %e, "a response could not be encoded");
        return error_response(&KmsError::from(&Error::Internal));
    }
    let mut resp = Response::new(Body::from(bytes::Bytes::from_owner(body.into_inner())));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// An error as the KMS JSON protocol sends it: `{"__type": ..., "message": ...}`.
pub fn error_response(e: &KmsError) -> Response {
    let body = serde_json::json!({ "__type": e.name, "message": e.message });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = e.status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if let Some(secs) = e.retry_after_secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// `Some` member, or AWS's "must not be null" (`field` in lowerCamelCase).
pub fn required<T>(field: &str, v: Option<T>) -> Result<T> {
    v.ok_or_else(|| {
        Error::validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

/// Refuse a `Recipient` (a Nitro Enclaves attestation document), for every action whose model
/// has one. With one, AWS answers the secret only sealed to the attested enclave's key
/// (`CiphertextForRecipient`, no plaintext); keyplane cannot check an attestation, and must
/// never answer the plaintext instead.
pub fn no_recipient(recipient: Option<&serde_json::Value>) -> Result<()> {
    match recipient {
        Some(_) => Err(Error::Unsupported(
            "Recipient (Nitro Enclaves attestation): keyplane answers no CiphertextForRecipient; \
             leave Recipient out"
                .into(),
        )),
        None => Ok(()),
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time, as AWS timestamps are sent.
pub fn epoch(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::not_objects::{Pair, BODIES};

    /// A body that is not an object is a SerializationException, as AWS answers.
    #[test]
    fn a_body_must_be_a_json_object() {
        for body in BODIES {
            assert!(
                matches!(decode::<Pair>(body), Err(Error::MalformedJson(m)) if m.contains("object"))
            );
        }
        assert!(decode::<Pair>(b"").is_ok());
    }
}
