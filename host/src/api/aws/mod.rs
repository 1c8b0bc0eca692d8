//! The AWS fronts on `POST /`, for the clients people already have (boto3, the AWS CLI, the
//! AWS SDKs and what is built on them: the AWS Encryption SDK, sops, Terraform):
//! - AWS KMS: JSON 1.1, `X-Amz-Target: TrentService.<Action>`, signed for service `kms`
//!   ([`kms`]);
//! - STS `GetCallerIdentity`: the query protocol (`Action=GetCallerIdentity`, form-encoded),
//!   signed for service `sts` ([`sts`]), which the AWS CLI, Terraform and test fixtures call
//!   first.
//!
//! Every request is signed with Signature Version 4 by an access key of a keyplane principal
//! (`create-access-key`); the [`Gate`] checks the signature, and the request then goes through
//! the same operation, Cedar decision and audit record as the native one (the record names
//! the front). [`ids`] maps keyplane's identifiers to ARNs; [`error`] maps keyplane's errors to
//! AWS's names, in one place.

mod error;
mod ids;
mod kms;
mod sts;

#[cfg(feature = "fuzzing")]
pub(crate) use kms::fuzz_decode as kms_fuzz_decode;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::response::Response;

use crate::api::gate::Gate;
use crate::ops::{Front, RequestMeta};
use crate::state::AppState;
use error::KmsError;
use ids::Cx;

/// The target prefix of AWS KMS.
const KMS_TARGET_PREFIX: &str = "TrentService.";

/// The action an unknown target is audited under.
fn unknown_action(target: &str) -> String {
    let clean: String = target
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .take(64)
        .collect();
    format!("unknown:{clean}")
}

/// `POST /`.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let sts = target.is_none() && form;
    let front = if sts { Front::AwsSts } else { Front::AwsKms };
    let gate = Gate::new(state, front, peer, &parts);
    let mut response = if sts {
        sts::handle(&gate, &parts, body).await
    } else {
        kms_request(&gate, &parts, body, target.as_deref()).await
    };
    // AWS clients read the request id from `x-amzn-RequestId`.
    if let Ok(v) = gate.meta.request_id.parse() {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

async fn kms_request(
    gate: &Gate,
    parts: &axum::http::request::Parts,
    body: Body,
    target: Option<&str>,
) -> Response {
    let max_body = gate.state.config.limits.max_body_bytes;
    let signed = gate.sigv4(parts, body, "kms", max_body).await;
    let action = target.and_then(|t| t.strip_prefix(KMS_TARGET_PREFIX));
    let found = action.and_then(kms::lookup);
    let audited_as = match found {
        Some((cedar_action, _)) => cedar_action.to_string(),
        None => unknown_action(target.unwrap_or("-")),
    };
    let (signed, body) = match signed {
        Ok(s) => s,
        Err(e) => {
            let e = gate.refuse(None, &audited_as, e).await;
            return kms::error_response(&KmsError::from(&e));
        }
    };
    // Every record of the request from here names the access key that signed it.
    let gate = &gate.with_meta(RequestMeta {
        access_key_id: Some(signed.access_key_id.clone()),
        ..gate.meta.clone()
    });
    let Some((_, handler)) = found else {
        let e = kms::not_served(target);
        let e = gate.refuse(Some(&signed.principal), &audited_as, e).await;
        return kms::error_response(&KmsError::from(&e));
    };
    let cx = Cx {
        account_id: signed.account_id,
        region: signed.region,
        rsa_encryption: gate
            .state
            .keyring
            .hsm()
            .capabilities()
            .oaep_hash
            .map(|h| crate::algorithms::OaepAlgorithm(h).as_str()),
    };
    handler(gate, signed.principal, &cx, &body).await
}
