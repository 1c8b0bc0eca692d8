//! Sealing under a key's primary version and opening a keyplane ciphertext: the header (which
//! names the key spec's algorithm) and the canonical encryption context are the AAD; each use
//! is counted, and a version that has sealed as many messages as random nonces allow seals no
//! more. A ciphertext whose algorithm is not its key's is refused as invalid.

use zeroize::Zeroizing;

use super::checks::{check_usable_for_encryption, usable_version, VersionUse};
use super::OpContext;
use crate::crypto::ciphertext::{self, Algorithm};
use crate::crypto::context::{canonical, EncryptionContext};
use crate::crypto::RANDOM_NONCE_SEAL_LIMIT;
use crate::error::{Error, Result};
use crate::store::keys::{KeyRow, KeyVersionRow};

/// The AAD of a ciphertext: its header followed by the canonical encryption context.
pub fn aad(header: &[u8], ec: &EncryptionContext) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(&canonical(ec));
    aad
}

/// Refuse an empty encryption context for a key created with `require_encryption_context`.
fn check_context_given(key: &KeyRow, ec: &EncryptionContext) -> Result<()> {
    if key.require_encryption_context && ec.is_empty() {
        return Err(Error::validation(format!(
            "key {} requires an encryption context (it was created with require_encryption_context)",
            key.id
        )));
    }
    Ok(())
}

/// Refuse to seal once `version` has sealed [`RANDOM_NONCE_SEAL_LIMIT`] messages (stored
/// counts and this node's counts not yet written): past it, random nonces would repeat with a
/// chance the AEAD's bound no longer covers. Its ciphertexts still open; a rotation gives the
/// key a fresh version.
fn check_seal_budget(ctx: &OpContext<'_>, key: &KeyRow, version: &KeyVersionRow) -> Result<()> {
    // The counts not yet written are at most the last second's: a version whose stored count
    // is far below the limit (every version but a worn-out one) costs no look at them, which
    // would take the usage lock on every encryption.
    if version.encryptions < RANDOM_NONCE_SEAL_LIMIT / 2 {
        return Ok(());
    }
    let sealed = version
        .encryptions
        .saturating_add(ctx.state.usage.pending(&key.id, version.version)[0]);
    if sealed >= RANDOM_NONCE_SEAL_LIMIT {
        return Err(Error::InvalidState(format!(
            "version {} of key {} has sealed {sealed} messages, the most one key may seal with \
             random 96-bit nonces (NIST SP 800-38D allows 2^32, keyplane keeps a margin); \
             rotate the key (its ciphertexts still decrypt)",
            version.version, key.id
        )));
    }
    Ok(())
}

/// Encrypt under the key's primary version; returns (version, ciphertext blob).
pub async fn seal_with_primary(
    ctx: &OpContext<'_>,
    key: &KeyRow,
    ec: &EncryptionContext,
    plaintext: Zeroizing<Vec<u8>>,
) -> Result<(u32, Vec<u8>)> {
    check_context_given(key, ec)?;
    let kind = check_usable_for_encryption(key)?;
    let algorithm = Algorithm::of(kind.1).ok_or(Error::Internal)?;
    let version = usable_version(ctx, key, key.primary_version, VersionUse::Protect).await?;
    check_seal_budget(ctx, key, &version)?;
    let v = version.version as u32;
    let nonce = ctx.state.keyring.nonce()?;
    let header = ciphertext::header(algorithm, &key.id, v, &nonce);
    let aad = aad(&header, ec);
    let sealed = ctx
        .state
        .keyring
        .seal(&key.tenant_id, kind, &version, nonce, aad, plaintext)
        .await?;
    let mut blob = header;
    blob.extend_from_slice(&sealed);
    ctx.state
        .usage
        .record(&key.id, version.version, crate::usage::UseKind::Encrypt);
    Ok((v, blob))
}

/// Decrypt a parsed ciphertext under `key` (the key its header names), if the key and the
/// version allow `purpose`; counts the decryption.
pub async fn open_ciphertext(
    ctx: &OpContext<'_>,
    key: &KeyRow,
    ct: &ciphertext::Ciphertext,
    ec: &EncryptionContext,
    purpose: VersionUse,
) -> Result<Zeroizing<Vec<u8>>> {
    check_context_given(key, ec)?;
    let kind = check_usable_for_encryption(key)?;
    // Every version of a key has the key's spec: a header naming another algorithm was not
    // made by this key (and its nonce or key length may not fit the key's algorithm).
    if Algorithm::of(kind.1) != Some(ct.algorithm) {
        return Err(Error::MalformedCiphertext(
            "the algorithm in its header is not its key's",
        ));
    }
    let version = usable_version(ctx, key, ct.key_version as i64, purpose)
        .await
        .map_err(|e| match e {
            Error::NotFound { .. } => Error::DecryptionFailed,
            e => e,
        })?;
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&ct.nonce);
    let aad = aad(&ct.header(), ec);
    let plaintext = ctx
        .state
        .keyring
        .open(
            &key.tenant_id,
            kind,
            &version,
            nonce,
            aad,
            ct.sealed.clone(),
        )
        .await?;
    ctx.state
        .usage
        .record(&key.id, version.version, crate::usage::UseKind::Decrypt);
    Ok(plaintext)
}
