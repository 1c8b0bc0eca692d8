//! `Sign` → `sign`, `Verify` → `verify`. A signature that does not verify is
//! `KMSInvalidSignatureException`, as AWS answers it (the operation itself succeeded: its
//! audit record says `ok`, with the answer `false`).

use serde::{Deserialize, Serialize};

use super::metadata::{aws_signing, signing_from_aws};
use super::{required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length_of, served_of, Cx};
use crate::error::Result;
use crate::ops::sign as op;
use crate::ops::{Base64, Operation};

fn message(v: Option<Base64>) -> Result<Base64> {
    let m = required("message", v)?;
    length_of("message", m.len(), 1, 4096)?;
    Ok(m)
}

/// `MessageType` of AWS's model (`EXTERNAL_MU` is for ML-DSA keys, which keyplane has none
/// of).
const MODEL_MESSAGE_TYPES: &[&str] = &["RAW", "DIGEST", "EXTERNAL_MU"];

fn message_type(v: Option<String>) -> Result<String> {
    let t = v.unwrap_or_else(|| "RAW".into());
    served_of(
        "messageType",
        "MessageType",
        &t,
        MODEL_MESSAGE_TYPES,
        &["RAW", "DIGEST"],
    )?;
    Ok(t)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Sign {
    key_id: Option<String>,
    message: Option<Base64>,
    message_type: Option<String>,
    signing_algorithm: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SignResponse {
    key_id: String,
    signature: Base64,
    signing_algorithm: &'static str,
}

impl KmsAction for Sign {
    type Op = op::Sign;
    type Response = SignResponse;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::Sign {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            message: message(self.message)?,
            message_type: message_type(self.message_type)?,
            signing_algorithm: signing_from_aws(required(
                "signingAlgorithm",
                self.signing_algorithm,
            )?)?,
            pinned_version: None,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(SignResponse {
            key_id: cx.key_arn(&out.key_id),
            signature: out.signature,
            signing_algorithm: aws_signing(out.signing_algorithm),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Verify {
    key_id: Option<String>,
    message: Option<Base64>,
    message_type: Option<String>,
    signature: Option<Base64>,
    signing_algorithm: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyResponse {
    key_id: String,
    signature_valid: bool,
    signing_algorithm: &'static str,
}

impl KmsAction for Verify {
    type Op = op::Verify;
    type Response = VerifyResponse;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let signature = required("signature", self.signature)?;
        length_of("signature", signature.len(), 1, 6144)?;
        Ok(op::Verify {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            message: message(self.message)?,
            message_type: message_type(self.message_type)?,
            signing_algorithm: signing_from_aws(required(
                "signingAlgorithm",
                self.signing_algorithm,
            )?)?,
            signature,
            key_version: None,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        if !out.signature_valid {
            return Err(KmsError::new("KMSInvalidSignatureException", ""));
        }
        Ok(VerifyResponse {
            key_id: cx.key_arn(&out.key_id),
            signature_valid: true,
            signing_algorithm: aws_signing(out.signing_algorithm),
        })
    }
}
