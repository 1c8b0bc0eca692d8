//! Pieces several operations share: resolving a key into a Cedar resource, state checks,
//! sealing under a key's primary version and key metadata for answers.

use std::collections::BTreeMap;

use serde::Serialize;
use zeroize::Zeroizing;

use super::{plugin_config, OpContext};
use crate::authz::ResourceRef;
use crate::crypto::ciphertext::{self, Algorithm, MAX_KEY_ID_LEN};
use crate::crypto::context::{canonical, EncryptionContext};
use crate::crypto::Protection;
use crate::error::{Error, Result};
use crate::plugins::{StorageOp, StorageReply};
use crate::state::AppState;
use crate::store::keys::{self, KeyRow, KeyVersionRow};
use crate::store::plugins;

pub const KEY_SPEC_AES_256_GCM: &str = "AES_256_GCM";
pub const USAGE_ENCRYPT_DECRYPT: &str = "encrypt-decrypt";
pub const STATE_ENABLED: &str = "enabled";

/// Check a key id's shape before touching the database.
pub fn validate_key_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > MAX_KEY_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::validation("key_id is not a valid key id"));
    }
    Ok(())
}

/// Load a key and build its Cedar resource.
pub async fn resolve_key(ctx: &OpContext<'_>, key_id: &str) -> Result<ResourceRef> {
    let pool = ctx.state.db.reader();
    let row = keys::get(pool, key_id)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "key",
            id: key_id.to_string(),
        })?;
    let users = keys::grantees(pool, key_id).await?;
    let tags: BTreeMap<String, String> = serde_json::from_str(&row.tags).unwrap_or_default();
    Ok(ResourceRef::Key {
        row: Box::new(row),
        users,
        tags,
    })
}

/// The key row of a resolved key resource.
pub fn key_row(resource: &ResourceRef) -> Result<&KeyRow> {
    match resource {
        ResourceRef::Key { row, .. } => Ok(row),
        _ => Err(Error::Internal),
    }
}

/// Refuse use of a key that is not enabled or not for encryption.
pub fn check_usable_for_encryption(key: &KeyRow) -> Result<Protection> {
    if key.state != STATE_ENABLED {
        return Err(Error::InvalidState(format!(
            "key {} is {}",
            key.id, key.state
        )));
    }
    if key.usage != USAGE_ENCRYPT_DECRYPT {
        return Err(Error::validation(format!(
            "key {} is not for encrypt-decrypt",
            key.id
        )));
    }
    Protection::parse(&key.protection).ok_or(Error::Internal)
}

/// The enabled version `v` of `key`.
pub async fn usable_version(ctx: &OpContext<'_>, key: &KeyRow, v: i64) -> Result<KeyVersionRow> {
    let version = keys::version(ctx.state.db.reader(), &key.id, v)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "key version",
            id: format!("{}/{v}", key.id),
        })?;
    if version.state != STATE_ENABLED {
        return Err(Error::InvalidState(format!(
            "version {v} of key {} is {}",
            key.id, version.state
        )));
    }
    let mut version = version;
    load_blob(ctx.state, key, &mut version).await?;
    Ok(version)
}

/// The name of a version's wrapped blob in a storage backend (the host adds the tenant).
pub fn blob_name(key_id: &str, version: i64) -> String {
    format!("keys/{key_id}/{version}")
}

/// A tenant's attached storage backend and its configuration.
pub type Backend = (plugins::PluginRow, Vec<(String, String)>);

/// A tenant's storage backend, if one is attached.
pub async fn tenant_backend(state: &AppState, tenant: &str) -> Result<Option<Backend>> {
    let pool = state.db.reader();
    let Some(b) = plugins::storage_backend(pool, tenant).await? else {
        return Ok(None);
    };
    let p = plugins::get(pool, tenant, &b.plugin_name)
        .await?
        .ok_or(Error::Internal)?;
    let config = plugin_config::open(&state.keyring, tenant, &p.name, &b.config).await?;
    Ok(Some((p, config)))
}

/// Fetch a version's wrapped material from its storage backend unless it is inline or its
/// unwrapped material is already cached.
pub async fn load_blob(state: &AppState, key: &KeyRow, version: &mut KeyVersionRow) -> Result<()> {
    let Some(store) = version.blob_store.clone() else {
        return Ok(());
    };
    if version.wrapped_material.is_some()
        || state.keyring.has_cached(&key.id, version.version as u32)
    {
        return Ok(());
    }
    let pool = state.db.reader();
    let plugin = plugins::get(pool, &key.tenant_id, &store).await?.ok_or_else(|| {
        tracing::error!(key = %key.id, plugin = %store, "storage plugin of a key version is gone");
        Error::Internal
    })?;
    let config: Vec<(String, String)> = match plugins::storage_backend(pool, &key.tenant_id).await?
    {
        Some(b) if b.plugin_name == store => {
            plugin_config::open(&state.keyring, &key.tenant_id, &store, &b.config).await?
        }
        _ => Vec::new(),
    };
    let op = StorageOp::Get {
        name: blob_name(&key.id, version.version),
    };
    match state.plugins.storage(&plugin, &config, op).await? {
        StorageReply::Blob(Some(data)) => {
            version.wrapped_material = Some(data);
            Ok(())
        }
        StorageReply::Blob(None) => Err(Error::PluginFailed {
            plugin: store,
            reason: format!(
                "has no blob for version {} of key {}",
                version.version, key.id
            ),
        }),
        _ => Err(Error::Internal),
    }
}

/// The AAD of a ciphertext: its header followed by the canonical encryption context.
pub fn aad(header: &[u8], ec: &EncryptionContext) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(&canonical(ec));
    aad
}

/// Encrypt under the key's primary version; returns (version, ciphertext blob).
pub async fn seal_with_primary(
    ctx: &OpContext<'_>,
    key: &KeyRow,
    ec: &EncryptionContext,
    plaintext: Zeroizing<Vec<u8>>,
) -> Result<(u32, Vec<u8>)> {
    let protection = check_usable_for_encryption(key)?;
    let version = usable_version(ctx, key, key.primary_version).await?;
    let v = version.version as u32;
    let nonce = ctx.state.keyring.nonce()?;
    let header = ciphertext::header(Algorithm::Aes256Gcm, &key.id, v, &nonce);
    let aad = aad(&header, ec);
    let sealed = ctx
        .state
        .keyring
        .seal(&key.tenant_id, protection, &version, nonce, aad, plaintext)
        .await?;
    let mut blob = header;
    blob.extend_from_slice(&sealed);
    Ok((v, blob))
}

/// A key version as answers show it.
#[derive(Debug, Serialize)]
pub struct VersionInfo {
    pub version: i64,
    pub state: String,
    pub created_at: String,
}

/// Key metadata as answers show it.
#[derive(Debug, Serialize)]
pub struct KeyMetadata {
    pub key_id: String,
    pub tenant_id: String,
    pub key_spec: String,
    pub key_usage: String,
    pub protection: String,
    pub state: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub primary_version: i64,
    pub created_at: String,
    pub created_by: String,
    pub grants: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionInfo>>,
}

impl KeyMetadata {
    pub fn new(row: &KeyRow, grants: Vec<String>, versions: Option<&[KeyVersionRow]>) -> Self {
        KeyMetadata {
            key_id: row.id.clone(),
            tenant_id: row.tenant_id.clone(),
            key_spec: row.spec.clone(),
            key_usage: row.usage.clone(),
            protection: row.protection.clone(),
            state: row.state.clone(),
            description: row.description.clone(),
            tags: serde_json::from_str(&row.tags).unwrap_or_default(),
            primary_version: row.primary_version,
            created_at: row.created_at.clone(),
            created_by: row.created_by.clone(),
            grants,
            versions: versions.map(|vs| {
                vs.iter()
                    .map(|v| VersionInfo {
                        version: v.version,
                        state: v.state.clone(),
                        created_at: v.created_at.clone(),
                    })
                    .collect()
            }),
        }
    }
}

/// Tenant and principal ids: lowercase letters, digits and dashes, 1–63 characters.
pub fn validate_name(field: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "{field} must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}
