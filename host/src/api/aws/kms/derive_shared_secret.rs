//! `DeriveSharedSecret` → `derive-shared-secret` (ECDH with the peer's DER
//! SubjectPublicKeyInfo).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{no_recipient, required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length_of, one_of, Cx};
use crate::error::Result;
use crate::ops::derive_shared_secret as op;
use crate::ops::{Base64, Operation};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecret {
    key_id: Option<String>,
    key_agreement_algorithm: Option<String>,
    public_key: Option<Base64>,
    recipient: Option<serde_json::Value>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeriveSharedSecretResponse {
    key_id: String,
    shared_secret: Base64,
    key_agreement_algorithm: &'static str,
    key_origin: &'static str,
}

impl KmsAction for DeriveSharedSecret {
    type Op = op::DeriveSharedSecret;
    type Response = DeriveSharedSecretResponse;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        no_recipient(self.recipient.as_ref())?;
        let algorithm = required("keyAgreementAlgorithm", self.key_agreement_algorithm)?;
        one_of("keyAgreementAlgorithm", &algorithm, &["ECDH"])?;
        let public_key = required("publicKey", self.public_key)?;
        length_of("publicKey", public_key.len(), 1, 8192)?;
        Ok(op::DeriveSharedSecret {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            peer_public_key: STANDARD.encode(public_key.0.as_slice()),
            key_agreement_algorithm: Some(algorithm),
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(DeriveSharedSecretResponse {
            key_id: cx.key_arn(&out.key_id),
            shared_secret: out.shared_secret,
            key_agreement_algorithm: out.key_agreement_algorithm,
            key_origin: "AWS_KMS",
        })
    }
}
