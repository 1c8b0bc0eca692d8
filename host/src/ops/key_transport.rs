//! What the import and export operations share: which keys await import, the wrapping
//! algorithms keyplane accepts and the sizes of import wrapping keys. (RSA public keys in and
//! out go through `algorithms::public_key`.)

use crate::algorithms::KeySpec;
use crate::error::{Error, Result};
use crate::hsm::wrapping::{OaepHash, Transport};
use crate::model::KeyState;
use crate::state::AppState;
use crate::store::imports::{self, KeyMaterialRow};
use crate::store::keys::KeyRow;

/// Refuse an import into a key that was not created `external` or already has material.
pub async fn awaiting_import(state: &AppState, key: &KeyRow) -> Result<KeyMaterialRow> {
    let material = imports::material(&state.db, &key.id)
        .await?
        .ok_or(Error::Internal)?;
    // AWS: UnsupportedOperationException (the key's origin does not allow it).
    if material.origin != imports::ORIGIN_EXTERNAL {
        return Err(Error::Unsupported(format!(
            "key {} was not created with origin \"external\"; its material comes from the HSM",
            key.id
        )));
    }
    if key.state != KeyState::PendingImport {
        return Err(Error::InvalidState(format!(
            "key {} is {}; material can be imported only while it is pending-import",
            key.id, key.state
        )));
    }
    Ok(material)
}

/// The wrapping algorithms, by their AWS KMS names.
pub const WRAPPING_ALGORITHMS: &[&str] = &["RSAES_OAEP_SHA_1", "RSA_AES_KEY_WRAP_SHA_1"];

/// Parse a wrapping algorithm name. SHA-256 variants are refused with the reason: SoftHSM2
/// implements RSA-OAEP with SHA-1 only.
pub fn transport(name: &str) -> Result<Transport> {
    match name {
        "RSAES_OAEP_SHA_1" => Ok(Transport {
            hash: OaepHash::Sha1,
            with_aes_key_wrap: false,
        }),
        "RSA_AES_KEY_WRAP_SHA_1" => Ok(Transport {
            hash: OaepHash::Sha1,
            with_aes_key_wrap: true,
        }),
        // A well-formed request for what this deployment cannot do (AWS clients get
        // `UnsupportedOperationException`), not a malformed one.
        "RSAES_OAEP_SHA_256" | "RSA_AES_KEY_WRAP_SHA_256" => Err(Error::Unsupported(format!(
            "{name} is not available: the PKCS#11 module implements RSA-OAEP with SHA-1 only; use {}",
            WRAPPING_ALGORITHMS.join(" or ")
        ))),
        other => Err(Error::validation(format!(
            "wrapping_algorithm {other:?} is not one of {}",
            WRAPPING_ALGORITHMS.join(", ")
        ))),
    }
}

/// The spec of an import wrapping key (`RSA_2048`, `RSA_3072` or `RSA_4096`).
pub fn wrapping_key_spec(spec: &str) -> Result<KeySpec> {
    KeySpec::parse(spec)
        .ok()
        .filter(|s| s.rsa_bits().is_some())
        .ok_or_else(|| {
            Error::validation(format!(
                "wrapping_key_spec {spec:?} is not RSA_2048, RSA_3072 or RSA_4096"
            ))
        })
}
