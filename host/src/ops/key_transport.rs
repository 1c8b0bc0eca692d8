//! What the import and export operations share: which keys await import, the wrapping
//! algorithms keyplane accepts, and RSA public keys in and out (SubjectPublicKeyInfo, PEM or DER, parsed and built by the `rsa`
//! crate, not by hand).

use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};

use crate::error::{Error, Result};
use crate::hsm::wrapping::{OaepHash, Transport};
use crate::state::AppState;
use crate::store::imports::{self, KeyMaterialRow};
use crate::store::keys::KeyRow;

/// Refuse an import into a key that was not created `external` or already has material.
pub async fn awaiting_import(state: &AppState, key: &KeyRow) -> Result<KeyMaterialRow> {
    let material = imports::material(state.db.reader(), &key.id)
        .await?
        .ok_or(Error::Internal)?;
    if material.origin != imports::ORIGIN_EXTERNAL {
        return Err(Error::validation(format!(
            "key {} was not created with origin \"external\"; its material comes from the HSM",
            key.id
        )));
    }
    if key.state != imports::STATE_PENDING_IMPORT {
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
        "RSAES_OAEP_SHA_256" | "RSA_AES_KEY_WRAP_SHA_256" => Err(Error::validation(format!(
            "{name} is not available: the PKCS#11 module implements RSA-OAEP with SHA-1 only; use {}",
            WRAPPING_ALGORITHMS.join(" or ")
        ))),
        other => Err(Error::validation(format!(
            "wrapping_algorithm {other:?} is not one of {}",
            WRAPPING_ALGORITHMS.join(", ")
        ))),
    }
}

/// Modulus sizes of import wrapping keys.
pub fn wrapping_key_bits(spec: &str) -> Result<u64> {
    match spec {
        "RSA_2048" => Ok(2048),
        "RSA_3072" => Ok(3072),
        "RSA_4096" => Ok(4096),
        other => Err(Error::validation(format!(
            "wrapping_key_spec {other:?} is not RSA_2048, RSA_3072 or RSA_4096"
        ))),
    }
}

/// A public key as SubjectPublicKeyInfo DER and PEM.
pub fn public_key_spki(modulus: &[u8], exponent: &[u8]) -> Result<(Vec<u8>, String)> {
    let key = RsaPublicKey::new(
        BigUint::from_bytes_be(modulus),
        BigUint::from_bytes_be(exponent),
    )
    .map_err(|_| Error::Internal)?;
    let der = key.to_public_key_der().map_err(|_| Error::Internal)?;
    let pem = key
        .to_public_key_pem(LineEnding::LF)
        .map_err(|_| Error::Internal)?;
    Ok((der.as_bytes().to_vec(), pem))
}

/// A recipient's RSA public key (SubjectPublicKeyInfo as PEM text or DER bytes): modulus and
/// exponent. At least 2048 bits.
pub fn recipient_key(bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let parsed = match std::str::from_utf8(bytes) {
        Ok(text) if text.trim_start().starts_with("-----BEGIN") => {
            RsaPublicKey::from_public_key_pem(text.trim())
        }
        _ => RsaPublicKey::from_public_key_der(bytes),
    }
    .map_err(|_| {
        Error::validation(
            "public_key must be an RSA SubjectPublicKeyInfo (PEM \"BEGIN PUBLIC KEY\" or DER)",
        )
    })?;
    if parsed.size() * 8 < 2048 {
        return Err(Error::validation(format!(
            "the recipient's RSA key has {} bits; at least 2048 are required",
            parsed.size() * 8
        )));
    }
    Ok((parsed.n().to_bytes_be(), parsed.e().to_bytes_be()))
}
