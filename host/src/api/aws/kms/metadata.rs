//! keyplane's key vocabulary as AWS KMS spells it: key specs, usages, states, origins, and the
//! `KeyMetadata` structure every key-describing action returns.

use serde::Serialize;

use super::epoch;
use crate::algorithms::{KeySpec, KeyUsage, MacAlgorithm};
use crate::api::aws::ids::{served_of, Cx};
use crate::error::{Error, Result};
use crate::model::KeyState;
use crate::ops::KeyMetadata as Native;
use crate::store::imports::ORIGIN_EXTERNAL;

/// (keyplane key spec, AWS key spec). AWS has no `AES_128_GCM` or `CHACHA20_POLY1305`:
/// such keys are reported as AWS reports symmetric keys (`SYMMETRIC_DEFAULT`, see
/// [`aws_spec`]), so AWS clients use them as any symmetric key; `SYMMETRIC_DEFAULT` in
/// `CreateKey` makes an `AES_256_GCM` key (the first entry).
const SPECS: &[(KeySpec, &str)] = &[
    (KeySpec::Aes256Gcm, "SYMMETRIC_DEFAULT"),
    (KeySpec::HmacSha256, "HMAC_256"),
    (KeySpec::HmacSha384, "HMAC_384"),
    (KeySpec::HmacSha512, "HMAC_512"),
    (KeySpec::EccNistP256, "ECC_NIST_P256"),
    (KeySpec::EccNistP384, "ECC_NIST_P384"),
    (KeySpec::Ed25519, "ECC_NIST_EDWARDS25519"),
    (KeySpec::Rsa2048, "RSA_2048"),
    (KeySpec::Rsa3072, "RSA_3072"),
    (KeySpec::Rsa4096, "RSA_4096"),
];

/// `KeySpec` of AWS's model, in its order: those [`SPECS`] lacks are unsupported.
pub const MODEL_KEY_SPECS: &[&str] = &[
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "SYMMETRIC_DEFAULT",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
    "SM2",
    "ML_DSA_44",
    "ML_DSA_65",
    "ML_DSA_87",
    "ECC_NIST_EDWARDS25519",
    "ML_KEM_512",
    "ML_KEM_768",
    "ML_KEM_1024",
];

/// `CustomerMasterKeySpec` of AWS's model (the deprecated name of `KeySpec`): the first 13
/// values of [`MODEL_KEY_SPECS`], in its order (AWS added the later ones to `KeySpec` only).
pub const MODEL_CUSTOMER_MASTER_KEY_SPECS: &[&str] = MODEL_KEY_SPECS.split_at(13).0;

/// `KeyUsageType` of AWS's model, in its order (keyplane has no `ENCAPSULATE_DECAPSULATE`:
/// no ML-KEM keys).
pub const MODEL_KEY_USAGES: &[&str] = &[
    "SIGN_VERIFY",
    "ENCRYPT_DECRYPT",
    "GENERATE_VERIFY_MAC",
    "KEY_AGREEMENT",
    "ENCAPSULATE_DECAPSULATE",
];

/// `SigningAlgorithmSpec` of AWS's model, in its order.
const MODEL_SIGNING: &[&str] = &[
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "ECDSA_SHA_256",
    "ECDSA_SHA_384",
    "ECDSA_SHA_512",
    "SM2DSA",
    "ML_DSA_SHAKE_256",
    "ED25519_SHA_512",
    "ED25519_PH_SHA_512",
];

/// (keyplane key usage, AWS key usage).
const USAGES: &[(KeyUsage, &str)] = &[
    (KeyUsage::EncryptDecrypt, "ENCRYPT_DECRYPT"),
    (KeyUsage::SignVerify, "SIGN_VERIFY"),
    (KeyUsage::GenerateVerifyMac, "GENERATE_VERIFY_MAC"),
    (KeyUsage::KeyAgreement, "KEY_AGREEMENT"),
];

/// (keyplane signing algorithm, AWS signing algorithm) where the names differ: AWS names
/// pure Ed25519 (over the message itself, `MessageType: RAW`) after its hash.
const SIGNING: &[(&str, &str)] = &[("ED25519", "ED25519_SHA_512")];

/// AWS's Ed25519ph (`MessageType: DIGEST`, the message's SHA-512): the PKCS#11 modules keyplane
/// meets sign pure Ed25519 only.
const ED25519_PREHASHED: &str = "ED25519_PH_SHA_512";

/// The AWS name of a keyplane signing algorithm.
pub fn aws_signing(native: &'static str) -> &'static str {
    SIGNING
        .iter()
        .find(|(n, _)| *n == native)
        .map_or(native, |(_, a)| *a)
}

/// The keyplane signing algorithm an AWS name stands for (checked against the key by the
/// operation): a name outside AWS's model (keyplane's own `ED25519` too) is a validation
/// error, one of the model keyplane has no key for (`ECDSA_SHA_512`, `SM2DSA`,
/// `ML_DSA_SHAKE_256`, Ed25519ph) is unsupported.
pub fn signing_from_aws(aws: String) -> Result<String> {
    if aws == ED25519_PREHASHED {
        return Err(Error::Unsupported(format!(
            "signing algorithm {ED25519_PREHASHED}: keyplane signs Ed25519 over the message itself (ED25519_SHA_512, MessageType RAW)"
        )));
    }
    let mut served: Vec<&str> = Vec::new();
    for a in KeySpec::all().flat_map(KeySpec::signing_algorithms) {
        let name = aws_signing(a.as_str());
        if !served.contains(&name) {
            served.push(name);
        }
    }
    served_of(
        "signingAlgorithm",
        "SigningAlgorithm",
        &aws,
        MODEL_SIGNING,
        &served,
    )?;
    Ok(SIGNING
        .iter()
        .find(|(_, a)| *a == aws)
        .map_or(aws, |(n, _)| n.to_string()))
}

/// AWS key specs keyplane has.
pub fn aws_specs() -> Vec<&'static str> {
    SPECS.iter().map(|(_, n)| *n).collect()
}

/// AWS key usages.
pub fn aws_usages() -> Vec<&'static str> {
    USAGES.iter().map(|(_, n)| *n).collect()
}

/// A keyplane key spec named by AWS.
pub fn spec_from_aws(name: &str) -> Option<KeySpec> {
    SPECS.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
}

/// A keyplane key usage named by AWS.
pub fn usage_from_aws(name: &str) -> Option<KeyUsage> {
    USAGES.iter().find(|(_, n)| *n == name).map(|(u, _)| *u)
}

/// The AWS name of a stored key spec (`SYMMETRIC_DEFAULT` for the symmetric specs AWS does
/// not name; keyplane's own name for the FFDHE specs, which AWS has no counterpart of).
pub fn aws_spec(native: &str) -> Result<&'static str> {
    let spec = KeySpec::parse(native).map_err(|_| Error::Internal)?;
    if spec.is_symmetric_encryption() {
        return Ok("SYMMETRIC_DEFAULT");
    }
    // A spec AWS KMS does not have (FFDHE_2048/3072) keeps keyplane's name: AWS clients
    // read the field as a string, and the key is still listed and described.
    Ok(SPECS
        .iter()
        .find(|(s, _)| *s == spec)
        .map(|(_, n)| *n)
        .unwrap_or(spec.as_str()))
}

/// The AWS name of a stored key usage.
pub fn aws_usage(native: &str) -> Result<&'static str> {
    let usage = KeyUsage::parse(native).map_err(|_| Error::Internal)?;
    Ok(USAGES
        .iter()
        .find(|(u, _)| *u == usage)
        .map(|(_, n)| *n)
        .unwrap_or("ENCRYPT_DECRYPT"))
}

/// Whether a key is destroyed (its material shredded, its record kept for the audit trail):
/// to AWS clients a deleted key, which AWS forgets (`DescribeKey` answers
/// `NotFoundException`, `ListKeys` leaves it out).
pub fn is_destroyed(native_state: &str) -> bool {
    native_state == KeyState::Destroyed.as_str()
}

/// The AWS `KeyState` of a keyplane key state (a destroyed key, where one is still shown, is
/// `Unavailable`). A key whose imported material is being deleted (`expiring`) is
/// `PendingImport`, as AWS shows a key once `DeleteImportedKeyMaterial` answered.
pub fn aws_state(native: &str) -> &'static str {
    match native {
        "enabled" => "Enabled",
        "disabled" => "Disabled",
        "pending-deletion" | "destroying" => "PendingDeletion",
        "pending-import" | "expiring" => "PendingImport",
        _ => "Unavailable",
    }
}

/// `KeyMetadata` as AWS KMS returns it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: String,
    pub key_id: String,
    pub arn: String,
    pub creation_date: i64,
    pub enabled: bool,
    pub description: String,
    pub key_usage: &'static str,
    pub key_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<i64>,
    pub origin: &'static str,
    pub key_manager: &'static str,
    pub customer_master_key_spec: &'static str,
    pub key_spec: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encryption_algorithms: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_algorithms: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_agreement_algorithms: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mac_algorithms: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<&'static str>,
    pub multi_region: bool,
}

impl KeyMetadata {
    pub fn new(m: &Native, cx: &Cx) -> Result<Self> {
        let spec = KeySpec::parse(&m.key_spec).map_err(|_| Error::Internal)?;
        let usage = KeyUsage::parse(&m.key_usage).map_err(|_| Error::Internal)?;
        let aws_spec = aws_spec(&m.key_spec)?;
        let external = m.origin.as_deref() == Some(ORIGIN_EXTERNAL) || m.state == "pending-import";
        let (mut encryption, mut signing, mut agreement, mut mac) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        match usage {
            KeyUsage::EncryptDecrypt if spec.is_symmetric_encryption() => {
                encryption.push("SYMMETRIC_DEFAULT")
            }
            // The one OAEP hash the HSM takes, as `get-public-key` lists it (an algorithm
            // listed here that Encrypt then refuses would break SDKs that pick from it).
            KeyUsage::EncryptDecrypt => encryption.extend(cx.rsa_encryption),
            KeyUsage::SignVerify => signing.extend(
                spec.signing_algorithms()
                    .into_iter()
                    .map(|a| aws_signing(a.as_str())),
            ),
            KeyUsage::KeyAgreement => agreement.extend(spec.key_agreement_algorithm()),
            KeyUsage::GenerateVerifyMac => {
                if let Some(h) = spec.hmac_hash() {
                    mac.push(MacAlgorithm(h).as_str())
                }
            }
        }
        Ok(KeyMetadata {
            aws_account_id: cx.account_id.clone(),
            key_id: m.key_id.clone(),
            arn: cx.key_arn(&m.key_id),
            creation_date: epoch(&m.created_at).unwrap_or_default(),
            enabled: m.state == "enabled",
            description: m.description.clone(),
            key_usage: aws_usage(&m.key_usage)?,
            key_state: aws_state(&m.state),
            deletion_date: m.deletion_date.as_deref().and_then(epoch),
            valid_to: m.material_expires_at.as_deref().and_then(epoch),
            origin: if external { "EXTERNAL" } else { "AWS_KMS" },
            key_manager: "CUSTOMER",
            customer_master_key_spec: aws_spec,
            key_spec: aws_spec,
            encryption_algorithms: encryption,
            signing_algorithms: signing,
            key_agreement_algorithms: agreement,
            mac_algorithms: mac,
            expiration_model: external.then_some(if m.material_expires_at.is_some() {
                "KEY_MATERIAL_EXPIRES"
            } else {
                "KEY_MATERIAL_DOES_NOT_EXPIRE"
            }),
            multi_region: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_has_an_aws_name() {
        // DescribeKey and ListKeys of any key must answer; a spec AWS lacks keeps its own
        // name (it was an internal error).
        for spec in KeySpec::all() {
            let name = aws_spec(spec.as_str()).unwrap();
            assert!(!name.is_empty());
        }
        assert_eq!(aws_spec("FFDHE_2048").unwrap(), "FFDHE_2048");
        assert_eq!(aws_spec("AES_128_GCM").unwrap(), "SYMMETRIC_DEFAULT");
    }

    /// What keyplane has is all in AWS's model (else `served_of` would refuse it as
    /// malformed); the model's other signing algorithms are unsupported, names outside it
    /// (keyplane's own `ED25519`) malformed.
    #[test]
    fn keyplane_names_are_the_models() {
        for spec in aws_specs() {
            assert!(MODEL_KEY_SPECS.contains(&spec), "{spec}");
        }
        for usage in aws_usages() {
            assert!(MODEL_KEY_USAGES.contains(&usage), "{usage}");
        }
        for spec in KeySpec::all() {
            for a in spec.signing_algorithms() {
                let aws = aws_signing(a.as_str());
                assert!(MODEL_SIGNING.contains(&aws), "{aws}");
                assert_eq!(signing_from_aws(aws.to_string()).unwrap(), a.as_str());
            }
        }
        for unsupported in ["ED25519_PH_SHA_512", "ECDSA_SHA_512", "SM2DSA"] {
            let r = signing_from_aws(unsupported.to_string());
            assert!(matches!(r, Err(Error::Unsupported(m)) if m.contains(unsupported)));
        }
        for malformed in ["ED25519", "ECDSA_SHA_1"] {
            let r = signing_from_aws(malformed.to_string());
            assert!(matches!(r, Err(Error::Validation(m)) if m.contains("enum value set")));
        }
    }

    #[test]
    fn a_key_whose_material_is_being_deleted_awaits_import() {
        use crate::model::KeyState;
        assert_eq!(aws_state(KeyState::Expiring.as_str()), "PendingImport");
        assert_eq!(aws_state(KeyState::PendingImport.as_str()), "PendingImport");
        assert_eq!(aws_state(KeyState::Destroying.as_str()), "PendingDeletion");
    }
}
