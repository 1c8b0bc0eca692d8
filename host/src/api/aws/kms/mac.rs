//! `GenerateMac` → `generate-mac`, `VerifyMac` → `verify-mac`. A MAC that does not verify is
//! `KMSInvalidMacException`, as AWS answers it.

use serde::{Deserialize, Serialize};

use super::{required, KmsAction};
use crate::algorithms::{KeySpec, MacAlgorithm};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length_of, served_of, Cx};
use crate::error::Result;
use crate::ops::mac as op;
use crate::ops::{Base64, Operation};

/// `MacAlgorithmSpec` of AWS's model, in its order (keyplane has no `HMAC_224` keys).
const MODEL_MAC_ALGORITHMS: &[&str] = &[
    "HMAC_SHA_224",
    "HMAC_SHA_256",
    "HMAC_SHA_384",
    "HMAC_SHA_512",
];

/// A `MacAlgorithm` member: one of the model, of a key spec keyplane has (which one the key
/// takes is the operation's to check).
fn mac_algorithm(v: Option<String>) -> Result<String> {
    let a = required("macAlgorithm", v)?;
    let served: Vec<&str> = KeySpec::all()
        .filter_map(KeySpec::hmac_hash)
        .map(|h| MacAlgorithm(h).as_str())
        .collect();
    served_of(
        "macAlgorithm",
        "MacAlgorithm",
        &a,
        MODEL_MAC_ALGORITHMS,
        &served,
    )?;
    Ok(a)
}

fn message(v: Option<Base64>) -> Result<Base64> {
    let m = required("message", v)?;
    length_of("message", m.len(), 1, 4096)?;
    Ok(m)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateMac {
    key_id: Option<String>,
    message: Option<Base64>,
    mac_algorithm: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateMacResponse {
    mac: Base64,
    mac_algorithm: String,
    key_id: String,
}

impl KmsAction for GenerateMac {
    type Op = op::GenerateMac;
    type Response = GenerateMacResponse;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::GenerateMac {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            message: message(self.message)?,
            mac_algorithm: mac_algorithm(self.mac_algorithm)?,
            pinned_version: None,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(GenerateMacResponse {
            mac: out.mac,
            mac_algorithm: out.mac_algorithm,
            key_id: cx.key_arn(&out.key_id),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyMac {
    key_id: Option<String>,
    message: Option<Base64>,
    mac_algorithm: Option<String>,
    mac: Option<Base64>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyMacResponse {
    key_id: String,
    mac_valid: bool,
    mac_algorithm: String,
}

impl KmsAction for VerifyMac {
    type Op = op::VerifyMac;
    type Response = VerifyMacResponse;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let mac = required("mac", self.mac)?;
        length_of("mac", mac.len(), 1, 6144)?;
        Ok(op::VerifyMac {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            message: message(self.message)?,
            mac_algorithm: mac_algorithm(self.mac_algorithm)?,
            mac,
            key_version: None,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        if !out.mac_valid {
            return Err(KmsError::new("KMSInvalidMacException", ""));
        }
        Ok(VerifyMacResponse {
            key_id: cx.key_arn(&out.key_id),
            mac_valid: true,
            mac_algorithm: out.mac_algorithm,
        })
    }
}
