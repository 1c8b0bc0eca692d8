//! State checks: whether a key and a version may be used for what a request wants, each
//! refusal saying why, and the answer to a compare-and-set that lost to another request.

use super::storage::load_blob;
use super::OpContext;
use crate::algorithms::{KeySpec, KeyUsage};
use crate::error::{Error, Result};
use crate::model::KeyState;
use crate::model::Protection;
use crate::store::keys::{KeyRow, KeyVersionRow};

/// The answer to a compare-and-set that found `what` (a key, a version of a key) no longer in
/// the state `was` the request was checked against: another request changed it meanwhile.
pub fn changed_meanwhile(what: &str, key_id: &str, was: impl std::fmt::Display) -> Error {
    Error::InvalidState(format!(
        "{what} {key_id} changed while this request ran (it was {was}); read it again and retry"
    ))
}

/// The answer to a request whose plugin was deleted, or deleted and uploaded again, while it
/// ran ([`crate::store::plugins::hold`]): what it checked and called was another component.
pub fn plugin_changed(name: &str) -> Error {
    Error::InvalidState(format!(
        "plugin {name} was deleted or uploaded again while this request ran; try again"
    ))
}

/// Refuse any use of a key that is not enabled, saying why.
pub fn check_key_enabled(key: &KeyRow) -> Result<()> {
    match key.state {
        KeyState::Enabled => Ok(()),
        KeyState::Destroyed => Err(Error::KeyDestroyed {
            what: format!("key {}", key.id),
        }),
        KeyState::PendingDeletion => Err(Error::InvalidState(format!(
            "key {} is pending deletion (destroyed at {}); cancel-key-deletion to keep it",
            key.id,
            key.deletion_date
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        ))),
        KeyState::PendingImport => Err(Error::InvalidState(format!(
            "key {} is pending import: it has no key material until import-key-material",
            key.id
        ))),
        KeyState::Destroying => Err(Error::InvalidState(format!(
            "key {} is being destroyed: its deletion window has passed and its material is being shredded",
            key.id
        ))),
        KeyState::Disabled => Err(Error::KeyDisabled(format!("key {} is disabled", key.id))),
        other => Err(Error::InvalidState(format!("key {} is {other}", key.id))),
    }
}

/// Refuse a key that is not enabled or whose usage is not `wanted`, naming the key's usage
/// and what `operation` needs. Returns the key's spec.
pub fn check_usage(key: &KeyRow, wanted: KeyUsage, operation: &str) -> Result<KeySpec> {
    check_key_enabled(key)?;
    let spec = key.spec;
    if key.usage != wanted {
        return Err(Error::InvalidKeyUsage(format!(
            "key {} has key_usage {} (key_spec {}); {operation} needs a key with key_usage {}",
            key.id,
            key.usage,
            key.spec,
            wanted.as_str()
        )));
    }
    Ok(spec)
}

/// Refuse use of a key that is not enabled or not a symmetric encrypt-decrypt key (keyplane
/// ciphertexts are made with `AES_256_GCM`, `AES_128_GCM` and `CHACHA20_POLY1305` keys; RSA
/// keys encrypt through `encryption_algorithm`). Returns the key's protection and spec.
pub fn check_usable_for_encryption(key: &KeyRow) -> Result<(Protection, KeySpec)> {
    let spec = check_usage(key, KeyUsage::EncryptDecrypt, "symmetric encryption")?;
    if !spec.is_symmetric_encryption() {
        let symmetric: Vec<&str> = KeySpec::all()
            .filter(|s| s.is_symmetric_encryption())
            .map(KeySpec::as_str)
            .collect();
        return Err(Error::InvalidKeyUsage(format!(
            "key {} is an {} key: symmetric encryption needs key_spec {} (RSA keys encrypt and decrypt with encryption_algorithm RSAES_OAEP_*)",
            key.id,
            key.spec,
            symmetric.join(", ")
        )));
    }
    let protection = key.protection;
    Ok((protection, spec))
}

/// Refuse unless `key`'s primary version is `pinned` (when given): a client that names the
/// version to encrypt, sign or MAC with (Transit's `key_version`) gets it, or a refusal,
/// since keyplane protects with the primary version only.
pub fn check_pinned_primary(key: &KeyRow, pinned: Option<u32>) -> Result<()> {
    match pinned {
        Some(v) if i64::from(v) != key.primary_version => Err(Error::Unsupported(format!(
            "key_version {v}: keyplane uses only the latest version of key {} ({}) to encrypt, sign or MAC",
            key.id, key.primary_version
        ))),
        _ => Ok(()),
    }
}

/// What a version is about to be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionUse {
    /// New ciphertexts or signatures (the primary version).
    Protect,
    /// Decrypting or verifying.
    Open,
    /// Decrypting inside `rewrap` (also allowed for compromised versions; the minimum
    /// decryption version holds as for `Open`).
    Rewrap,
}

/// Refuse a version whose state does not allow `purpose`, saying why.
pub fn check_version(key: &KeyRow, v: &KeyVersionRow, purpose: VersionUse) -> Result<()> {
    let n = v.version;
    match v.state {
        KeyState::Enabled => {}
        KeyState::Destroyed => {
            return Err(Error::KeyDestroyed {
                what: format!("version {n} of key {}", key.id),
            })
        }
        KeyState::Compromised if purpose == VersionUse::Rewrap => {}
        KeyState::Compromised if purpose == VersionUse::Protect => {
            return Err(Error::InvalidState(format!(
                "the primary version {n} of key {} is compromised; rotate-key first",
                key.id
            )))
        }
        KeyState::Compromised => {
            return Err(Error::InvalidState(format!(
                "version {n} of key {} is compromised ({}); its ciphertexts can only be rewrapped",
                key.id,
                v.state_reason.as_deref().unwrap_or("revoked")
            )))
        }
        other => {
            return Err(Error::InvalidState(format!(
                "version {n} of key {} is {other}",
                key.id
            )))
        }
    }
    if purpose != VersionUse::Protect && n < key.min_decryption_version {
        return Err(Error::InvalidState(format!(
            "version {n} of key {} is below its minimum decryption version {}",
            key.id, key.min_decryption_version
        )));
    }
    Ok(())
}

/// Refuse a key whose imported material has expired. The scheduler deletes such material at
/// its next pass (and may not run for a while, or at all on a node configured without it),
/// but the material is not to be used from its expiry on, as AWS KMS promises.
fn check_material_current(key: &KeyRow, now: i64) -> Result<()> {
    match key.material_expires_at {
        Some(t) if t <= now => Err(Error::InvalidState(format!(
            "key {}: its imported material expired at {}; the scheduler deletes it at its next pass, and it can then be imported again (or delete it now: delete-imported-key-material)",
            key.id,
            chrono::DateTime::from_timestamp(t, 0)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        ))),
        _ => Ok(()),
    }
}

/// Version `v` of `key`, if its state allows `purpose` and its material has not expired, with
/// its blob loaded.
pub async fn usable_version(
    ctx: &OpContext<'_>,
    key: &KeyRow,
    v: i64,
    purpose: VersionUse,
) -> Result<KeyVersionRow> {
    check_material_current(key, ctx.state.clock.now())?;
    let version = ctx
        .state
        .rows
        .version(&key.id, v)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "key version",
            id: format!("{}/{v}", key.id),
        })?;
    check_version(key, &version, purpose)?;
    let mut version = KeyVersionRow::clone(&version);
    load_blob(ctx.state, key, &mut version).await?;
    crate::pause::point("version:loaded", &key.id).await;
    Ok(version)
}

/// The version a verifying or decrypting request names (default: the primary), if its state
/// allows opening.
pub async fn version_to_open(
    ctx: &OpContext<'_>,
    key: &KeyRow,
    key_version: Option<u32>,
) -> Result<KeyVersionRow> {
    let v = key_version.map(i64::from).unwrap_or(key.primary_version);
    usable_version(ctx, key, v, VersionUse::Open).await
}
