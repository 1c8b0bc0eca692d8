//! RSA OAEP through `encrypt` and `decrypt`: an RSA `encrypt-decrypt` key encrypts with
//! `encryption_algorithm` `RSAES_OAEP_SHA_256` or `RSAES_OAEP_SHA_1` — whichever the token
//! accepts (detected at start, see [`crate::hsm::capabilities`]; `describe-hsm` and
//! `get-public-key` say which). The ciphertext is the plain RSAES-OAEP octet string (no
//! keyplane header, no encryption context), so anyone holding the public key can produce
//! one; `decrypt` then needs `key_id` and, for versions other than the primary,
//! `key_version`.

use zeroize::Zeroizing;

use super::checks::{check_usage, usable_version, version_to_open, VersionUse};
use super::OpContext;
use crate::algorithms::{KeySpec, KeyUsage, OaepAlgorithm};
use crate::error::{Error, Result};
use crate::store::keys::KeyRow;
use crate::usage::UseKind;

/// The algorithm name of the symmetric (keyplane ciphertext) path.
pub const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";

/// Largest RSA ciphertext accepted (RSA-4096).
pub const MAX_RSA_CIPHERTEXT: usize = 512;

/// Whether `encryption_algorithm` names RSA OAEP; an unknown name is a validation error.
pub fn is_oaep(algorithm: Option<&str>) -> Result<bool> {
    match algorithm {
        None | Some(SYMMETRIC_DEFAULT) => Ok(false),
        Some(a) if OaepAlgorithm::parse(a).is_some() => Ok(true),
        Some(_) => Err(Error::validation(
            "encryption_algorithm must be SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1",
        )),
    }
}

/// Check an RSA key and the requested algorithm against the token's OAEP hash.
fn oaep_for(
    ctx: &OpContext<'_>,
    key: &KeyRow,
    algorithm: Option<&str>,
    operation: &str,
) -> Result<(KeySpec, OaepAlgorithm)> {
    let spec = check_usage(key, KeyUsage::EncryptDecrypt, operation)?;
    let in_use = ctx
        .state
        .keyring
        .hsm()
        .capabilities()
        .oaep_hash
        .map(OaepAlgorithm)
        .ok_or_else(|| Error::validation("the HSM supports no RSA OAEP encryption"))?;
    // AWS's error and wording for an algorithm that does not fit the key (SDKs and sops
    // match on `InvalidKeyUsageException`), and what to use instead.
    let Some(asked) = algorithm.and_then(OaepAlgorithm::parse) else {
        return Err(Error::InvalidKeyUsage(format!(
            "Algorithm {} is incompatible with key spec {}: key {} encrypts with encryption_algorithm {}",
            algorithm.unwrap_or("SYMMETRIC_DEFAULT"),
            spec.as_str(),
            key.id,
            in_use.as_str()
        )));
    };
    if asked != in_use {
        return Err(Error::validation(format!(
            "encryption_algorithm {} is not supported by this HSM; use {}",
            asked.as_str(),
            in_use.as_str()
        )));
    }
    Ok((spec, in_use))
}

/// Refuse an RSAES algorithm for a non-RSA key (the symmetric path's check), after the
/// key's usage (a key that cannot encrypt at all says so first).
pub fn refuse_oaep_for_symmetric(
    key: &KeyRow,
    algorithm: Option<&str>,
    operation: &str,
) -> Result<()> {
    check_usage(key, KeyUsage::EncryptDecrypt, operation)?;
    if is_oaep(algorithm)? {
        return Err(Error::InvalidKeyUsage(format!(
            "Algorithm {} is incompatible with key spec {}: it needs an RSA key; key {} encrypts with SYMMETRIC_DEFAULT",
            algorithm.unwrap_or_default(),
            key.spec,
            key.id
        )));
    }
    Ok(())
}

/// OAEP-encrypt under the primary version; returns (version, ciphertext, algorithm).
pub async fn encrypt(
    ctx: &OpContext<'_>,
    key: &KeyRow,
    algorithm: Option<&str>,
    plaintext: Zeroizing<Vec<u8>>,
) -> Result<(i64, Vec<u8>, &'static str)> {
    let (spec, oaep) = oaep_for(ctx, key, algorithm, "encrypt")?;
    let bits = spec.rsa_bits().ok_or(Error::Internal)?;
    let max = oaep.max_plaintext(bits);
    if plaintext.len() > max {
        return Err(Error::validation(format!(
            "plaintext is {} bytes; {} with {} encrypts at most {max} bytes",
            plaintext.len(),
            oaep.as_str(),
            spec.as_str()
        )));
    }
    let version = usable_version(ctx, key, key.primary_version, VersionUse::Protect).await?;
    let ct = ctx
        .state
        .keyring
        .oaep_encrypt(&version, oaep.0, plaintext)
        .await?;
    ctx.state
        .usage
        .record(&key.id, version.version, UseKind::Encrypt);
    Ok((version.version, ct, oaep.as_str()))
}

/// OAEP-decrypt with `key_version` (default: the primary).
pub async fn decrypt(
    ctx: &OpContext<'_>,
    key: &KeyRow,
    algorithm: Option<&str>,
    key_version: Option<u32>,
    ciphertext: Vec<u8>,
) -> Result<(i64, Zeroizing<Vec<u8>>)> {
    let (spec, oaep) = oaep_for(ctx, key, algorithm, "decrypt")?;
    let bits = spec.rsa_bits().ok_or(Error::Internal)?;
    if ciphertext.len() != bits as usize / 8 {
        return Err(Error::DecryptionFailed);
    }
    let version = version_to_open(ctx, key, key_version).await?;
    let pt = ctx
        .state
        .keyring
        .oaep_decrypt(&version, oaep.0, ciphertext)
        .await?;
    ctx.state
        .usage
        .record(&key.id, version.version, UseKind::Decrypt);
    Ok((version.version, pt))
}
