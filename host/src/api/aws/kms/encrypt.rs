//! `Encrypt` → `encrypt`.

use serde::{Deserialize, Serialize};

use super::{required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length_of, served_of, Cx};
use crate::crypto::context::EncryptionContext;
use crate::error::Result;
use crate::ops::encrypt as op;
use crate::ops::{Base64, Operation};

/// `EncryptionAlgorithmSpec` of AWS's model, in its order.
const MODEL_ENCRYPTION_ALGORITHMS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "SM2PKE",
];

/// `EncryptionAlgorithm` values keyplane has (which RSA OAEP hash a key takes is the HSM's,
/// decided by the operation).
const ENCRYPTION_ALGORITHMS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
];

/// Check an `EncryptionAlgorithm` member (`field` in lowerCamelCase; `SM2PKE` is
/// unsupported).
pub fn encryption_algorithm(field: &str, v: Option<String>) -> Result<Option<String>> {
    if let Some(a) = &v {
        served_of(
            field,
            "EncryptionAlgorithm",
            a,
            MODEL_ENCRYPTION_ALGORITHMS,
            ENCRYPTION_ALGORITHMS,
        )?;
    }
    Ok(v)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Encrypt {
    key_id: Option<String>,
    plaintext: Option<Base64>,
    #[serde(default)]
    encryption_context: EncryptionContext,
    encryption_algorithm: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    ciphertext_blob: Base64,
    key_id: String,
    encryption_algorithm: &'static str,
}

impl KmsAction for Encrypt {
    type Op = op::Encrypt;
    type Response = EncryptResponse;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let key_id = cx.key_id("keyId", &required("keyId", self.key_id)?)?;
        let plaintext = required("plaintext", self.plaintext)?;
        length_of("plaintext", plaintext.len(), 1, 4096)?;
        Ok(op::Encrypt {
            key_id,
            plaintext,
            encryption_context: self.encryption_context,
            encryption_algorithm: encryption_algorithm(
                "encryptionAlgorithm",
                self.encryption_algorithm,
            )?,
            pinned_version: None,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(EncryptResponse {
            ciphertext_blob: out.ciphertext_blob,
            key_id: cx.key_arn(&out.key_id),
            encryption_algorithm: out.encryption_algorithm,
        })
    }
}
