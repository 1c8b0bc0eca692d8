//! `Decrypt` → `decrypt`. `KeyId` is optional for keyplane ciphertexts (they name their key);
//! when given, a ciphertext of another key is refused with `IncorrectKeyException`.

use serde::{Deserialize, Serialize};

use super::encrypt::encryption_algorithm;
use super::{required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length_of, Cx};
use crate::crypto::context::EncryptionContext;
use crate::error::Result;
use crate::ops::decrypt as op;
use crate::ops::{Base64, Operation};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Decrypt {
    ciphertext_blob: Option<Base64>,
    #[serde(default)]
    encryption_context: EncryptionContext,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    key_id: String,
    plaintext: Base64,
    encryption_algorithm: &'static str,
}

impl KmsAction for Decrypt {
    type Op = op::Decrypt;
    type Response = DecryptResponse;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let blob = required("ciphertextBlob", self.ciphertext_blob)?;
        length_of("ciphertextBlob", blob.len(), 1, 6144)?;
        Ok(op::Decrypt {
            ciphertext_blob: blob,
            encryption_context: self.encryption_context,
            key_id: self.key_id.map(|k| cx.key_id("keyId", &k)).transpose()?,
            encryption_algorithm: encryption_algorithm(
                "encryptionAlgorithm",
                self.encryption_algorithm,
            )?,
            key_version: None,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(DecryptResponse {
            key_id: cx.key_arn(&out.key_id),
            plaintext: out.plaintext,
            encryption_algorithm: out.encryption_algorithm,
        })
    }
}
