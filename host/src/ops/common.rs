//! Pieces several operations share: resolving a key into a Cedar resource, state checks,
//! sealing under a key's primary version and key metadata for answers.

use std::collections::BTreeMap;

use serde::Serialize;
use zeroize::Zeroizing;

use super::{plugin_config, OpContext};
use crate::authz::ResourceRef;
use crate::crypto::ciphertext::{self, Algorithm, MAX_KEY_ID_LEN};
use crate::crypto::context::{canonical, EncryptionContext};
use crate::crypto::spec::{KeySpec, KeyUsage};
use crate::crypto::Protection;
use crate::error::{Error, Result};
use crate::plugins::{StorageOp, StorageReply};
use crate::state::AppState;
use crate::store::keys::{self, KeyRow, KeyVersionRow};
use crate::store::plugins;

pub const KEY_SPEC_AES_256_GCM: &str = "AES_256_GCM";
pub use crate::store::keys::{
    STATE_COMPROMISED, STATE_DESTROYED, STATE_DESTROYING, STATE_DISABLED, STATE_ENABLED,
    STATE_PENDING_DELETION,
};

/// The answer to a compare-and-set that found `what` (a key, a version of a key) no longer in
/// the state `was` the request was checked against: another request changed it meanwhile.
pub fn changed_meanwhile(what: &str, key_id: &str, was: &str) -> Error {
    Error::InvalidState(format!(
        "{what} {key_id} changed while this request ran (it was {was}); read it again and retry"
    ))
}

/// Prefix of alias names.
pub const ALIAS_PREFIX: &str = "alias/";
const MAX_ALIAS_LEN: usize = 256;

/// Check an alias name's shape (`alias/` then letters, digits, `/`, `_`, `-`).
pub fn validate_alias(name: &str) -> Result<()> {
    let ok = name.len() <= MAX_ALIAS_LEN
        && name.strip_prefix(ALIAS_PREFIX).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "alias names are {ALIAS_PREFIX}<name> (letters, digits, '/', '_', '-'; at most {MAX_ALIAS_LEN} characters)"
        )))
    }
}

/// Check a key id's shape (or an alias name, which every key_id field accepts) before
/// touching the database.
pub fn validate_key_id(id: &str) -> Result<()> {
    if id.starts_with(ALIAS_PREFIX) {
        return validate_alias(id);
    }
    if id.is_empty()
        || id.len() > MAX_KEY_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::validation("key_id is not a valid key id or alias"));
    }
    Ok(())
}

/// The key id a key_id field names: itself, or the key an alias of the caller's tenant
/// points to.
pub async fn key_id_of(ctx: &OpContext<'_>, key_id: &str) -> Result<String> {
    if !key_id.starts_with(ALIAS_PREFIX) {
        return Ok(key_id.to_string());
    }
    let target = ctx
        .state
        .rows
        .alias_target(&ctx.principal.tenant_id, key_id)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "alias",
            id: key_id.to_string(),
        })?;
    Ok(target.to_string())
}

/// Load a key (by id or alias, through the row cache) and build its Cedar resource.
pub async fn resolve_key(ctx: &OpContext<'_>, key_id: &str) -> Result<ResourceRef> {
    let key_id = &key_id_of(ctx, key_id).await?;
    let key = ctx
        .state
        .rows
        .key(key_id)
        .await?
        .ok_or_else(|| not_found(key_id))?;
    Ok(resource_of(key.row.clone(), key.users.clone()))
}

/// A key by id as a Cedar resource (row, grantees, tags), read from the database.
pub async fn key_resource(pool: &sqlx::SqlitePool, key_id: &str) -> Result<ResourceRef> {
    let row = keys::get(pool, key_id)
        .await?
        .ok_or_else(|| not_found(key_id))?;
    let users = keys::grantees(pool, key_id).await?;
    Ok(resource_of(row, users))
}

fn not_found(key_id: &str) -> Error {
    Error::NotFound {
        kind: "key",
        id: key_id.to_string(),
    }
}

fn resource_of(row: KeyRow, users: Vec<String>) -> ResourceRef {
    let tags: BTreeMap<String, String> = serde_json::from_str(&row.tags).unwrap_or_default();
    ResourceRef::Key {
        row: Box::new(row),
        users,
        tags,
    }
}

/// The key row of a resolved key resource.
pub fn key_row(resource: &ResourceRef) -> Result<&KeyRow> {
    match resource {
        ResourceRef::Key { row, .. } => Ok(row),
        _ => Err(Error::Internal),
    }
}

/// Refuse any use of a key that is not enabled, saying why.
pub fn check_key_enabled(key: &KeyRow) -> Result<()> {
    match key.state.as_str() {
        STATE_ENABLED => Ok(()),
        STATE_DESTROYED => Err(Error::KeyDestroyed {
            what: format!("key {}", key.id),
        }),
        STATE_PENDING_DELETION => Err(Error::InvalidState(format!(
            "key {} is pending deletion (destroyed at {}); cancel-key-deletion to keep it",
            key.id,
            key.deletion_date
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        ))),
        crate::store::imports::STATE_PENDING_IMPORT => Err(Error::InvalidState(format!(
            "key {} is pending import: it has no key material until import-key-material",
            key.id
        ))),
        STATE_DESTROYING => Err(Error::InvalidState(format!(
            "key {} is being destroyed: its deletion window has passed and its material is being shredded",
            key.id
        ))),
        other => Err(Error::InvalidState(format!("key {} is {other}", key.id))),
    }
}

/// A stored key's spec.
pub fn key_spec(key: &KeyRow) -> Result<KeySpec> {
    KeySpec::parse(&key.spec).map_err(|_| {
        tracing::error!(key = %key.id, "stored key has an unknown key spec");
        Error::Internal
    })
}

/// Refuse a key that is not enabled or whose usage is not `wanted`, naming the key's usage
/// and what `operation` needs. Returns the key's spec.
pub fn check_usage(key: &KeyRow, wanted: KeyUsage, operation: &str) -> Result<KeySpec> {
    check_key_enabled(key)?;
    let spec = key_spec(key)?;
    if key.usage != wanted.as_str() {
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

/// Refuse use of a key that is not enabled or not an AES encrypt-decrypt key (the keyplane
/// ciphertext format is AES-256-GCM; RSA keys encrypt through `encryption_algorithm`).
pub fn check_usable_for_encryption(key: &KeyRow) -> Result<Protection> {
    let spec = check_usage(key, KeyUsage::EncryptDecrypt, "symmetric encryption")?;
    if spec != KeySpec::Aes256Gcm {
        return Err(Error::InvalidKeyUsage(format!(
            "key {} is an {} key: symmetric encryption needs key_spec {KEY_SPEC_AES_256_GCM} (RSA keys encrypt and decrypt with encryption_algorithm RSAES_OAEP_*)",
            key.id, key.spec
        )));
    }
    Protection::parse(&key.protection).ok_or(Error::Internal)
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
    match v.state.as_str() {
        STATE_ENABLED => {}
        STATE_DESTROYED => {
            return Err(Error::KeyDestroyed {
                what: format!("version {n} of key {}", key.id),
            })
        }
        STATE_COMPROMISED if purpose == VersionUse::Rewrap => {}
        STATE_COMPROMISED if purpose == VersionUse::Protect => {
            return Err(Error::InvalidState(format!(
                "the primary version {n} of key {} is compromised; rotate-key first",
                key.id
            )))
        }
        STATE_COMPROMISED => {
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

/// Version `v` of `key`, if its state allows `purpose`, with its blob loaded.
pub async fn usable_version(
    ctx: &OpContext<'_>,
    key: &KeyRow,
    v: i64,
    purpose: VersionUse,
) -> Result<KeyVersionRow> {
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
    Ok(version)
}

/// The name a new creation attempt of version `version` gives its blob in a storage backend
/// (the host adds the tenant): `keys/<key>/<version>/<uuid v7>`. Each attempt writes its own
/// name, so an attempt that loses a race (two rotations, two imports) deletes only its own
/// blob; the version row stores the winner's. The UUID v7 carries the attempt's creation time,
/// which garbage collection reads to leave young blobs alone.
pub fn new_blob_name(key_id: &str, version: i64) -> String {
    format!("keys/{key_id}/{version}/{}", uuid::Uuid::now_v7().simple())
}

/// A tenant's storage backend and its configuration.
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

/// The storage plugin a version's blob was written to, with the configuration to reach it:
/// the latest the tenant gave that plugin, whether or not it is still the tenant's backend.
pub async fn version_store(state: &AppState, tenant: &str, store: &str) -> Result<Backend> {
    let pool = state.db.reader();
    let plugin = plugins::get(pool, tenant, store).await?.ok_or_else(|| {
        tracing::error!(plugin = %store, "storage plugin of a key version is gone");
        Error::Internal
    })?;
    // None kept (a database from before configurations were kept per plugin, whose migration
    // found no plugin row): reached with an empty one, as it was then.
    let sealed = plugins::backend_config(pool, tenant, store)
        .await?
        .unwrap_or_else(|| "{}".into());
    let config = plugin_config::open(&state.keyring, tenant, store, &sealed).await?;
    Ok((plugin, config))
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
    let (plugin, config) = version_store(state, &key.tenant_id, &store).await?;
    let op = StorageOp::Get {
        name: version.blob(),
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
    let version = usable_version(ctx, key, key.primary_version, VersionUse::Protect).await?;
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
    let protection = check_usable_for_encryption(key)?;
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
            protection,
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

/// A key version as answers show it.
#[derive(Debug, Serialize)]
pub struct VersionInfo {
    pub version: i64,
    pub state: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_changed_at: Option<String>,
    pub encryptions: i64,
    pub decryptions: i64,
    pub signatures: i64,
}

impl VersionInfo {
    /// A version with its stored usage plus what is counted but not yet written.
    pub fn new(v: &KeyVersionRow, pending: [i64; 3]) -> Self {
        VersionInfo {
            version: v.version,
            state: v.state.clone(),
            created_at: v.created_at.clone(),
            state_reason: v.state_reason.clone(),
            state_changed_at: v.state_changed_at.clone(),
            encryptions: v.encryptions + pending[0],
            decryptions: v.decryptions + pending[1],
            signatures: v.signatures + pending[2],
        }
    }
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
    pub min_decryption_version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destroyed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionInfo>>,
    /// `keyplane` or `external` (imported material).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
    /// When imported material expires (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub material_expires_at: Option<String>,
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl KeyMetadata {
    /// Add the usage counted in memory but not yet written.
    pub fn with_pending_usage(mut self, usage: &crate::usage::Usage) -> Self {
        for v in self.versions.iter_mut().flatten() {
            let p = usage.pending(&self.key_id, v.version);
            v.encryptions += p[0];
            v.decryptions += p[1];
            v.signatures += p[2];
        }
        self
    }

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
            min_decryption_version: row.min_decryption_version,
            deletion_date: row.deletion_date.map(rfc3339),
            destroyed_at: row.destroyed_at.map(rfc3339),
            versions: versions.map(|vs| vs.iter().map(|v| VersionInfo::new(v, [0; 3])).collect()),
            origin: None,
            exportable: None,
            material_expires_at: None,
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

/// Largest message `sign`, `verify`, `generate-mac` and `verify-mac` accept (as AWS KMS).
pub const MAX_MESSAGE: usize = 4096;

/// Check a message field: 1 to [`MAX_MESSAGE`] bytes.
pub fn validate_message(field: &str, len: usize) -> Result<()> {
    if len == 0 || len > MAX_MESSAGE {
        return Err(Error::validation(format!(
            "{field} must be 1 to {MAX_MESSAGE} bytes (got {len})"
        )));
    }
    Ok(())
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
