//! `GenerateDataKeyPair` → `generate-data-key-pair`, `GenerateDataKeyPairWithoutPlaintext` →
//! `generate-data-key-pair-without-plaintext`.
//!
//! `KeyPairSpec` is checked against the model's enumeration first (`ValidationException`);
//! the specs of the model keyplane does not generate (`ECC_NIST_P521`, `ECC_SECG_P256K1`,
//! `SM2`, `ECC_NIST_EDWARDS25519`, `ML_KEM_*`) are `UnsupportedOperationException`, as are
//! Nitro Enclaves recipients. The native names of the five keyplane has are AWS's.

use serde::{Deserialize, Serialize};

use super::{no_recipient, required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{served_of, Cx};
use crate::crypto::context::EncryptionContext;
use crate::error::Result;
use crate::ops::generate_data_key_pair::{self as op, DataKeyPairRequest, KEY_PAIR_SPECS};
use crate::ops::{Base64, Operation};

/// `DataKeyPairSpec` of AWS's model, in its order.
const MODEL_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SM2",
    "ECC_NIST_EDWARDS25519",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataKeyPair {
    key_id: Option<String>,
    key_pair_spec: Option<String>,
    #[serde(default)]
    encryption_context: EncryptionContext,
    recipient: Option<serde_json::Value>,
    #[serde(default)]
    dry_run: bool,
}

impl DataKeyPair {
    fn request(self, cx: &Cx) -> Result<DataKeyPairRequest> {
        let key_id = cx.key_id("keyId", &required("keyId", self.key_id)?)?;
        let spec = required("keyPairSpec", self.key_pair_spec)?;
        let served: Vec<&str> = KEY_PAIR_SPECS.iter().map(|s| s.as_str()).collect();
        served_of("keyPairSpec", "KeyPairSpec", &spec, MODEL_SPECS, &served)?;
        no_recipient(self.recipient.as_ref())?;
        Ok(DataKeyPairRequest {
            key_id,
            key_pair_spec: spec,
            encryption_context: self.encryption_context,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct GenerateDataKeyPair(DataKeyPair);

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairResponse {
    private_key_ciphertext_blob: Base64,
    private_key_plaintext: Base64,
    public_key: Base64,
    key_id: String,
    key_pair_spec: &'static str,
}

impl KmsAction for GenerateDataKeyPair {
    type Op = op::GenerateDataKeyPair;
    type Response = GenerateDataKeyPairResponse;

    fn dry_run(&self) -> bool {
        self.0.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::GenerateDataKeyPair(self.0.request(cx)?))
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(GenerateDataKeyPairResponse {
            private_key_ciphertext_blob: out.private_key_ciphertext_blob,
            private_key_plaintext: out.private_key_plaintext,
            public_key: out.public_key,
            key_id: cx.key_arn(&out.key_id),
            key_pair_spec: out.key_pair_spec,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct GenerateDataKeyPairWithoutPlaintext(DataKeyPair);

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyPairWithoutPlaintextResponse {
    private_key_ciphertext_blob: Base64,
    public_key: Base64,
    key_id: String,
    key_pair_spec: &'static str,
}

impl KmsAction for GenerateDataKeyPairWithoutPlaintext {
    type Op = op::GenerateDataKeyPairWithoutPlaintext;
    type Response = GenerateDataKeyPairWithoutPlaintextResponse;

    fn dry_run(&self) -> bool {
        self.0.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        // The model has no Recipient here: like any member it does not have, it is ignored.
        let request = DataKeyPair {
            recipient: None,
            ..self.0
        };
        Ok(op::GenerateDataKeyPairWithoutPlaintext(
            request.request(cx)?,
        ))
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(GenerateDataKeyPairWithoutPlaintextResponse {
            private_key_ciphertext_blob: out.private_key_ciphertext_blob,
            public_key: out.public_key,
            key_id: cx.key_arn(&out.key_id),
            key_pair_spec: out.key_pair_spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn cx() -> Cx {
        Cx::sample()
    }

    fn request(body: serde_json::Value) -> Result<DataKeyPairRequest> {
        serde_json::from_value::<DataKeyPair>(body)
            .unwrap()
            .request(&cx())
    }

    /// Every spec of the model is either keyplane's (the same name natively) or unsupported;
    /// anything else is a validation error, in AWS's words.
    #[test]
    fn key_pair_specs_follow_the_model() {
        for spec in MODEL_SPECS {
            let r = request(serde_json::json!({ "KeyId": "k-1", "KeyPairSpec": spec }));
            match r {
                Ok(req) => {
                    assert_eq!(&req.key_pair_spec, spec);
                    assert!(KEY_PAIR_SPECS.iter().any(|s| s.as_str() == *spec));
                }
                Err(Error::Unsupported(m)) => {
                    assert!(m.contains(spec), "{m}");
                    assert!(!KEY_PAIR_SPECS.iter().any(|s| s.as_str() == *spec));
                }
                Err(e) => panic!("{spec}: {e}"),
            }
        }
        assert_eq!(
            MODEL_SPECS
                .iter()
                .filter(|s| request(serde_json::json!({ "KeyId": "k", "KeyPairSpec": s })).is_ok())
                .count(),
            KEY_PAIR_SPECS.len()
        );
        let Err(Error::Validation(m)) =
            request(serde_json::json!({ "KeyId": "k-1", "KeyPairSpec": "ED25519" }))
        else {
            panic!("a spec outside the model is a validation error")
        };
        assert!(m.starts_with("1 validation error detected: Value at 'keyPairSpec' failed to satisfy constraint: Member must satisfy enum value set: [RSA_2048, "), "{m}");
        let Err(Error::Validation(m)) = request(serde_json::json!({ "KeyId": "k-1" })) else {
            panic!("KeyPairSpec is required")
        };
        assert!(m.contains("'keyPairSpec'"), "{m}");
        let r = request(serde_json::json!({
            "KeyId": "k-1", "KeyPairSpec": "RSA_2048",
            "Recipient": { "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256" }
        }));
        assert!(matches!(r, Err(Error::Unsupported(_))));
    }
}
