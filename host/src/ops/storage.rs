//! Where a version's wrapped material lives when a storage plugin holds it: blob names, the
//! tenant's backend and the plugin each version was written to, and fetching a blob.

use super::plugin_config;
use crate::error::{Error, Result};
use crate::plugins::{StorageOp, StorageReply};
use crate::state::AppState;
use crate::store::keys::{KeyRow, KeyVersionRow};
use crate::store::plugins;

/// The name a new creation attempt of version `version` gives its blob in a storage backend
/// (the host adds the tenant): `keys/<key>/<version>/<uuid v7>`. Each attempt writes its own
/// name, so an attempt that loses a race (two rotations, two imports) deletes only its own
/// blob; the version row stores the winner's. The UUID v7 carries the attempt's creation time,
/// which garbage collection reads to leave young blobs alone.
pub fn new_blob_name(key_id: &str, version: i64) -> String {
    format!("keys/{key_id}/{version}/{}", uuid::Uuid::now_v7().simple())
}

/// A tenant's storage backend and its configuration (opened; wiped when dropped).
pub type Backend = (plugins::PluginRow, plugin_config::PluginConfig);

/// A tenant's storage backend: the plugin, its configuration (opened; wiped when dropped), and
/// that configuration as stored (sealed; None if none is kept for the plugin), which a version
/// whose blob is put with it carries to its commit (`KeyVersionRow::blob_config`).
pub struct TenantBackend {
    pub plugin: plugins::PluginRow,
    pub config: plugin_config::PluginConfig,
    pub stored: Option<String>,
}

/// A tenant's storage backend, if one is attached. Its configuration is the one kept per
/// plugin, which [`version_store`] reads the blob with later and the commit compares (the
/// backend's own copy holds the same values, but may be sealed apart: configurations stored
/// in the clear by an older release are sealed at start one copy at a time).
pub async fn tenant_backend(state: &AppState, tenant: &str) -> Result<Option<TenantBackend>> {
    let pool = &state.db;
    let Some(b) = plugins::storage_backend(pool, tenant).await? else {
        return Ok(None);
    };
    let p = plugins::get(pool, tenant, &b.plugin_name)
        .await?
        .ok_or(Error::Internal)?;
    let stored = plugins::backend_config(pool, tenant, &p.name).await?;
    let sealed = stored.as_deref().unwrap_or(&b.config);
    let config = plugin_config::open(&state.keyring, tenant, &p.name, sealed).await?;
    Ok(Some(TenantBackend {
        plugin: p,
        config,
        stored,
    }))
}

/// The storage plugin a version's blob was written to, with the configuration to reach it:
/// the latest the tenant gave that plugin, whether or not it is still the tenant's backend.
pub async fn version_store(state: &AppState, tenant: &str, store: &str) -> Result<Backend> {
    let pool = &state.db;
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

/// Fetch a version's wrapped material from its storage backend unless it is inline or the
/// envelope cache holds the version (whose entry keeps the wrapped material too, so the request
/// has it even if the entry is evicted before it seals).
pub async fn load_blob(state: &AppState, key: &KeyRow, version: &mut KeyVersionRow) -> Result<()> {
    let Some(store) = version.blob_store.clone() else {
        return Ok(());
    };
    if version.wrapped_material.is_some() {
        return Ok(());
    }
    if let Some(wrapped) = state
        .keyring
        .cached_wrapped(&key.id, version.version as u32)
    {
        version.wrapped_material = Some(wrapped);
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
