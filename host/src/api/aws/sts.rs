//! STS `GetCallerIdentity` (query protocol: a form-encoded `Action=GetCallerIdentity`, an XML
//! answer) → `get-caller-identity`: the caller's account, principal ARN and id. Any other STS
//! action is `InvalidAction`: keyplane issues no temporary credentials.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use super::error::{sts_code, sts_message};
use super::ids::Cx;
use crate::api::gate::Gate;
use crate::error::Error;
use crate::ops::get_caller_identity::GetCallerIdentity;
use crate::ops::Operation;

const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// A request to the STS front.
pub async fn handle(gate: &Gate, parts: &axum::http::request::Parts, body: Body) -> Response {
    let max_body = gate.state.config.limits.max_body_bytes;
    let signed = gate.sigv4(parts, body, "sts", max_body).await;
    let request_id = gate.meta.request_id.clone();
    let (signed, body) = match signed {
        Ok(s) => s,
        Err(e) => {
            let e = gate.refuse(None, GetCallerIdentity::ACTION, e).await;
            return error_response(&e, &request_id);
        }
    };
    // Every record of the request from here names the access key that signed it.
    let gate = &gate.with_meta(crate::ops::RequestMeta {
        access_key_id: Some(signed.access_key_id.clone()),
        ..gate.meta.clone()
    });
    let action = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.into_owned());
    if action.as_deref() != Some("GetCallerIdentity") {
        let name = action.unwrap_or_default();
        let audited = format!(
            "unknown:sts.{}",
            name.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(64)
                .collect::<String>()
        );
        let e = Error::UnknownOperation(format!(
            "Could not find operation {name} for version 2011-06-15"
        ));
        let e = gate.refuse(Some(&signed.principal), &audited, e).await;
        return error_response(&e, &request_id);
    }
    let cx = Cx {
        account_id: signed.account_id,
        region: signed.region,
        rsa_encryption: None,
    };
    let principal = signed.principal.clone();
    match gate.run(signed.principal, Ok(GetCallerIdentity {})).await {
        Ok(identity) => xml_response(
            StatusCode::OK,
            format!(
                "<GetCallerIdentityResponse xmlns=\"{NAMESPACE}\">\
                 <GetCallerIdentityResult>\
                 <Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>\
                 </GetCallerIdentityResult>\
                 <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata>\
                 </GetCallerIdentityResponse>",
                escape(&cx.principal_arn(&principal)),
                escape(&identity.principal_id),
                escape(&cx.account_id),
                escape(&request_id),
            ),
        ),
        Err(e) => error_response(&e, &request_id),
    }
}

/// An STS error: `<ErrorResponse>` with the `<Code>` of [`sts_code`].
fn error_response(e: &Error, request_id: &str) -> Response {
    let (code, status) = sts_code(e);
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let mut resp = xml_response(
        status,
        format!(
            "<ErrorResponse xmlns=\"{NAMESPACE}\"><Error><Type>{kind}</Type><Code>{code}</Code>\
             <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            escape(&sts_message(e)),
            escape(request_id),
        ),
    );
    if let Some(secs) = e.retry_after_secs() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    resp
}

/// XML text content.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
