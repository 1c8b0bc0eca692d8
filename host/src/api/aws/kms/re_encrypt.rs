//! `ReEncrypt` → `rewrap`. As in AWS, the new ciphertext carries the destination encryption
//! context given (none when none is given), not the source's.

use serde::{Deserialize, Serialize};

use super::decrypt::ciphertext_blob;
use super::encrypt::encryption_algorithm;
use super::{required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::Cx;
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};
use crate::ops::rewrap as op;
use crate::ops::{Base64, Operation};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncrypt {
    ciphertext_blob: Option<Base64>,
    #[serde(default)]
    source_encryption_context: EncryptionContext,
    source_key_id: Option<String>,
    destination_key_id: Option<String>,
    #[serde(default)]
    destination_encryption_context: EncryptionContext,
    source_encryption_algorithm: Option<String>,
    destination_encryption_algorithm: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    dry_run_modifiers: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptResponse {
    ciphertext_blob: Base64,
    source_key_id: String,
    key_id: String,
    source_encryption_algorithm: &'static str,
    destination_encryption_algorithm: &'static str,
}

/// keyplane re-encrypts its own (symmetric) ciphertexts only.
fn symmetric(field: &str, v: Option<String>) -> Result<()> {
    match encryption_algorithm(field, v)? {
        Some(a) if a != "SYMMETRIC_DEFAULT" => {
            Err(Error::Unsupported(format!("ReEncrypt with {a}")))
        }
        _ => Ok(()),
    }
}

impl KmsAction for ReEncrypt {
    type Op = op::Rewrap;
    type Response = ReEncryptResponse;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let blob = ciphertext_blob(
            "ReEncrypt",
            self.ciphertext_blob,
            self.dry_run,
            &self.dry_run_modifiers,
        )?;
        let destination = required("destinationKeyId", self.destination_key_id)?;
        symmetric(
            "sourceEncryptionAlgorithm",
            self.source_encryption_algorithm,
        )?;
        symmetric(
            "destinationEncryptionAlgorithm",
            self.destination_encryption_algorithm,
        )?;
        Ok(op::Rewrap {
            ciphertext_blob: blob,
            source_encryption_context: self.source_encryption_context,
            source_key_id: self
                .source_key_id
                .map(|k| cx.key_id("sourceKeyId", &k))
                .transpose()?,
            destination_key_id: Some(cx.key_id("destinationKeyId", &destination)?),
            destination_encryption_context: Some(self.destination_encryption_context),
            pinned_version: None,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(ReEncryptResponse {
            ciphertext_blob: out.ciphertext_blob,
            source_key_id: cx.key_arn(&out.source_key_id),
            key_id: cx.key_arn(&out.key_id),
            source_encryption_algorithm: "SYMMETRIC_DEFAULT",
            destination_encryption_algorithm: "SYMMETRIC_DEFAULT",
        })
    }
}
