//! `Decrypt` → `decrypt`. `KeyId` is optional for keyplane ciphertexts (they name their key);
//! when given, a ciphertext of another key is refused with `IncorrectKeyException`. A
//! `Recipient` (Nitro Enclaves) is refused (see [`no_recipient`]).

use serde::{Deserialize, Serialize};

use super::encrypt::encryption_algorithm;
use super::{no_recipient, required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length_of, one_of, Cx};
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};
use crate::ops::decrypt as op;
use crate::ops::{Base64, Operation};

/// `DryRunModifierType` of AWS's model.
const DRY_RUN_MODIFIERS: &[&str] = &["IGNORE_CIPHERTEXT"];

/// The `CiphertextBlob` of a `Decrypt` or `ReEncrypt` (`action`), its `DryRunModifiers`
/// checked against the model. AWS decides a dry run with `IGNORE_CIPHERTEXT` on the `KeyId`
/// alone, without a ciphertext; keyplane's `decrypt` and `rewrap` find the key to authorize
/// on in the ciphertext and have no form without one, so such a dry run is unsupported rather
/// than refused as a request missing its ciphertext. With a ciphertext the dry run is decided
/// from it, as any other.
pub fn ciphertext_blob(
    action: &str,
    blob: Option<Base64>,
    dry_run: bool,
    modifiers: &[String],
) -> Result<Base64> {
    for m in modifiers {
        one_of("dryRunModifiers", m, DRY_RUN_MODIFIERS)?;
    }
    let ignore_ciphertext = dry_run && modifiers.iter().any(|m| m == "IGNORE_CIPHERTEXT");
    let blob = match blob {
        None if ignore_ciphertext => {
            return Err(Error::Unsupported(format!(
                "DryRunModifiers IGNORE_CIPHERTEXT without a CiphertextBlob: keyplane decides a \
                 dry run of {action} from its ciphertext; send the CiphertextBlob"
            )))
        }
        blob => required("ciphertextBlob", blob)?,
    };
    length_of("ciphertextBlob", blob.len(), 1, 6144)?;
    Ok(blob)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Decrypt {
    ciphertext_blob: Option<Base64>,
    #[serde(default)]
    encryption_context: EncryptionContext,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
    recipient: Option<serde_json::Value>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    dry_run_modifiers: Vec<String>,
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
        no_recipient(self.recipient.as_ref())?;
        let blob = ciphertext_blob(
            "Decrypt",
            self.ciphertext_blob,
            self.dry_run,
            &self.dry_run_modifiers,
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Cx {
        Cx::sample()
    }

    fn decrypt(body: serde_json::Value) -> Result<op::Decrypt> {
        serde_json::from_value::<Decrypt>(body)
            .unwrap()
            .into_op(&cx())
    }

    /// A Recipient is never ignored: AWS would answer no plaintext for it.
    #[test]
    fn a_recipient_is_refused() {
        let r = decrypt(serde_json::json!({
            "CiphertextBlob": "AAAA",
            "Recipient": { "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": "AAAA" }
        }));
        assert!(matches!(r, Err(Error::Unsupported(m)) if m.contains("Recipient")));
        assert!(
            decrypt(serde_json::json!({ "CiphertextBlob": "AAAA", "Recipient": null })).is_ok()
        );
    }

    #[test]
    fn a_dry_run_without_its_ciphertext_is_unsupported() {
        let r = decrypt(serde_json::json!({
            "KeyId": "k-1", "DryRun": true, "DryRunModifiers": ["IGNORE_CIPHERTEXT"]
        }));
        assert!(matches!(r, Err(Error::Unsupported(m)) if m.contains("IGNORE_CIPHERTEXT")));
        // Not a dry run: the ciphertext is required, as AWS requires it.
        let r = decrypt(
            serde_json::json!({ "KeyId": "k-1", "DryRunModifiers": ["IGNORE_CIPHERTEXT"] }),
        );
        assert!(matches!(r, Err(Error::Validation(m)) if m.contains("'ciphertextBlob'")));
        let r = decrypt(serde_json::json!({
            "CiphertextBlob": "AAAA", "DryRun": true, "DryRunModifiers": ["IGNORE"]
        }));
        assert!(matches!(r, Err(Error::Validation(m)) if m.contains("[IGNORE_CIPHERTEXT]")));
    }
}
