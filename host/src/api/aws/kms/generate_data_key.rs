//! `GenerateDataKey` → `generate-data-key`, `GenerateDataKeyWithoutPlaintext` →
//! `generate-data-key-without-plaintext`.

use serde::{Deserialize, Serialize};

use super::{no_recipient, required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{one_of, range, Cx};
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};
use crate::ops::generate_data_key::{self as op, DataKeyRequest};
use crate::ops::{Base64, Operation};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataKey {
    key_id: Option<String>,
    #[serde(default)]
    encryption_context: EncryptionContext,
    number_of_bytes: Option<i64>,
    key_spec: Option<String>,
    recipient: Option<serde_json::Value>,
    #[serde(default)]
    dry_run: bool,
}

impl DataKey {
    fn request(self, cx: &Cx) -> Result<DataKeyRequest> {
        let key_id = cx.key_id("keyId", &required("keyId", self.key_id)?)?;
        no_recipient(self.recipient.as_ref())?;
        if let Some(n) = self.number_of_bytes {
            range("numberOfBytes", n, 1, 1024)?;
        }
        if let Some(s) = &self.key_spec {
            one_of("keySpec", s, &["AES_256", "AES_128"])?;
        }
        // As AWS: exactly one of the two.
        if self.number_of_bytes.is_some() == self.key_spec.is_some() {
            return Err(Error::validation(
                "Please specify either number of bytes or key spec.",
            ));
        }
        Ok(DataKeyRequest {
            key_id,
            key_spec: self.key_spec,
            number_of_bytes: self.number_of_bytes.map(|n| n as usize),
            encryption_context: self.encryption_context,
            pinned_version: None,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct GenerateDataKey(DataKey);

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    ciphertext_blob: Base64,
    plaintext: Base64,
    key_id: String,
}

impl KmsAction for GenerateDataKey {
    type Op = op::GenerateDataKey;
    type Response = GenerateDataKeyResponse;

    fn dry_run(&self) -> bool {
        self.0.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::GenerateDataKey(self.0.request(cx)?))
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(GenerateDataKeyResponse {
            ciphertext_blob: out.ciphertext_blob,
            plaintext: out.plaintext,
            key_id: cx.key_arn(&out.key_id),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct GenerateDataKeyWithoutPlaintext(DataKey);

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyWithoutPlaintextResponse {
    ciphertext_blob: Base64,
    key_id: String,
}

impl KmsAction for GenerateDataKeyWithoutPlaintext {
    type Op = op::GenerateDataKeyWithoutPlaintext;
    type Response = GenerateDataKeyWithoutPlaintextResponse;

    fn dry_run(&self) -> bool {
        self.0.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::GenerateDataKeyWithoutPlaintext(self.0.request(cx)?))
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(GenerateDataKeyWithoutPlaintextResponse {
            ciphertext_blob: out.ciphertext_blob,
            key_id: cx.key_arn(&out.key_id),
        })
    }
}
