//! Making key versions: material from the HSM (an `hsm` token object, or `envelope` material
//! sealed by the tenant KEK and written to the tenant's storage backend), registered with the
//! write scope so a request that fails destroys what it made. Shared by `create-key`,
//! `rotate-key`, the scheduler's rotations and (placing imported material) `import-key-material`.

use super::checks::check_key_enabled;
use super::storage::{new_blob_name, tenant_backend, TenantBackend};
use super::WriteScope;
use crate::algorithms::{KeySpec, KeyUsage};
use crate::crypto::NewVersion;
use crate::error::{Error, Result};
use crate::model::Protection;
use crate::plugins::StorageOp;
use crate::state::AppState;
use crate::store::imports;
use crate::store::keys::{self, KeyRow, KeyVersionRow};

/// What a key's versions are: protection, spec and usage (fixed at creation).
pub type VersionKind = (Protection, KeySpec, KeyUsage);

/// The [`VersionKind`] of a stored key.
pub fn version_kind(key: &KeyRow) -> Result<VersionKind> {
    let protection = key.protection;
    let usage = key.usage;
    Ok((protection, key.spec, usage))
}

/// Material for version `v` of key `key_id` (a new AES or ChaCha20 key, HMAC key or key pair
/// as `kind` says), stored where the tenant keeps blobs. The row is not inserted yet; the
/// caller does that in `scope`'s transaction.
pub async fn make_version(
    state: &AppState,
    scope: &mut WriteScope,
    tenant: &str,
    key_id: &str,
    v: i64,
    kind: VersionKind,
    exportable: bool,
) -> Result<KeyVersionRow> {
    let material = state
        .keyring
        .new_version(tenant, key_id, v as u32, kind, exportable)
        .await?;
    place_version(state, scope, tenant, key_id, v, material).await
}

/// Register new `material` for version `v` with `scope` (undone if the request fails) and put
/// envelope material in the tenant's storage backend, if it has one. Returns the row to insert.
pub async fn place_version(
    state: &AppState,
    scope: &mut WriteScope,
    tenant: &str,
    key_id: &str,
    v: i64,
    material: NewVersion,
) -> Result<KeyVersionRow> {
    let mut version = KeyVersionRow::new(key_id, v, state.clock.now_rfc3339(), state.clock.now());
    version.hsm_object_id = material.hsm_object_id.clone();
    version.wrapped_material = material.wrapped_material.clone();
    version.hsm_wrapped = material.hsm_wrapped.clone();
    scope.created(material);
    // Envelope material goes to the tenant's storage backend, if it has one, before the
    // transaction opens (a plugin's kv writes need the writer); undone if the request fails.
    // The row carries the configuration the blob was put with: it commits only if that is
    // still the plugin's (a `set-storage-backend` meanwhile would leave the blob where the
    // new one does not look), else the rollback deletes the blob with the same configuration.
    if let (Some(wrapped), Some(backend)) = (
        version.wrapped_material.clone(),
        tenant_backend(state, tenant).await?,
    ) {
        let TenantBackend {
            plugin,
            config,
            stored,
        } = backend;
        let name = new_blob_name(key_id, v);
        let op = StorageOp::Put {
            name: name.clone(),
            data: wrapped,
            expected_version: Some(0),
        };
        state.plugins.storage(&plugin, &config, op).await?;
        version.wrapped_material = None;
        version.blob_store = Some(plugin.name.clone());
        version.blob_name = Some(name.clone());
        version.blob_config = stored;
        scope.created_blob(plugin, config, name);
    }
    Ok(version)
}

/// Add a new primary version to an enabled key, recording how (`rotation`: automatic or on
/// demand). Fails with a conflict if the key was rotated meanwhile (by another request or
/// node), so one due rotation never runs twice.
pub async fn rotate(
    state: &AppState,
    scope: &mut WriteScope,
    key: &KeyRow,
    rotation: &'static str,
) -> Result<i64> {
    crate::pause::point("rotate:start", &key.id).await;
    check_key_enabled(key)?;
    let kind = version_kind(key)?;
    let next = key.primary_version + 1;
    let origin = imports::material(&state.db, &key.id)
        .await?
        .ok_or(Error::Internal)?;
    // Unsupported, as enable-key-rotation answers it (and AWS): no state of the key allows it.
    if origin.origin == imports::ORIGIN_EXTERNAL {
        return Err(Error::Unsupported(format!(
            "key {} holds imported material, which keyplane cannot renew; create a new key and import new material into it",
            key.id
        )));
    }
    let mut version = make_version(
        state,
        scope,
        &key.tenant_id,
        &key.id,
        next,
        kind,
        origin.exportable,
    )
    .await?;
    version.rotation = Some(rotation.into());
    crate::pause::point("rotate:version-made", &key.id).await;
    let conn = scope.conn(state).await?;
    if !keys::swap_primary(conn, &key.id, key.primary_version, next).await? {
        return Err(Error::InvalidState(format!(
            "key {} was rotated concurrently, or changed state, while this request ran; read it again and retry",
            key.id
        )));
    }
    keys::insert_version(conn, &version).await?;
    // Inside the open transaction: on SQLite a test pausing here holds the write lock.
    crate::pause::point("rotate:version-inserted", &key.id).await;
    Ok(next)
}
