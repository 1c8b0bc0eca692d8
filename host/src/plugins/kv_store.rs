//! The tenant-scoped key-value table behind the `kv` capability. The tenant is fixed by the
//! host when the store is created; every query is bound to it, so no key a plugin crafts can
//! reach another tenant's rows. A tenant holds at most
//! [`plugin_kv::MAX_ROWS_PER_TENANT`] rows and [`plugin_kv::MAX_BYTES_PER_TENANT`] bytes of
//! values: a write past either is answered
//! `storage-error::invalid` (saying so), which the plugin passes on.

use super::bindings::v0_1::rotation::keyplane::plugin::types::StorageError;
use crate::store::plugin_kv::{self, Write, Written};
use crate::store::Db;

/// Access to one tenant's rows.
#[derive(Clone)]
pub struct KvStore {
    db: Db,
    tenant: String,
}

fn unavailable(e: crate::error::Error) -> StorageError {
    tracing::error!(error = %e, "plugin kv query failed");
    StorageError::Unavailable("host key-value table unavailable".into())
}

impl KvStore {
    pub fn new(db: Db, tenant: String) -> Self {
        KvStore { db, tenant }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        plugin_kv::get(&self.db, &self.tenant, key)
            .await
            .map_err(unavailable)
    }

    async fn write(&self, key: &str, write: Write<'_>) -> Result<u64, StorageError> {
        match plugin_kv::write_within_cap(&self.db, &self.tenant, key, write).await {
            Ok(Written::Rows(n)) => Ok(n),
            Ok(Written::Full) => Err(StorageError::Invalid(plugin_kv::full_message())),
            Err(e) => Err(unavailable(e)),
        }
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.write(key, Write::Set { value }).await.map(|_| ())
    }

    /// Set `key` to `value` if its value is `expected` now (`None`: if it is absent), in one
    /// statement, so two plugin calls racing on one key cannot both succeed.
    pub async fn set_if(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, StorageError> {
        Ok(self.write(key, Write::SetIf { expected, value }).await? == 1)
    }

    /// Delete `key` if its value is `expected` now, in one statement.
    pub async fn delete_if(&self, key: &str, expected: &[u8]) -> Result<bool, StorageError> {
        Ok(self.write(key, Write::DeleteIf { expected }).await? > 0)
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.write(key, Write::Delete).await? > 0)
    }

    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StorageError> {
        plugin_kv::list(&self.db, &self.tenant, prefix, after, limit as i64)
            .await
            .map_err(unavailable)
    }
}
