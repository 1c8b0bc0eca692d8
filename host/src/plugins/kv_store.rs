//! The tenant-scoped key-value table behind the `kv` capability. The tenant is fixed by the
//! host when the store is created; every query is bound to it, so no key a plugin crafts can
//! reach another tenant's rows.

use sqlx::SqlitePool;

use super::bindings::v0_1_0::rotation::keyplane::plugin::types::StorageError;
use crate::store::Db;

/// Access to one tenant's rows.
#[derive(Clone)]
pub struct KvStore {
    db: Db,
    tenant: String,
}

fn unavailable(e: sqlx::Error) -> StorageError {
    tracing::error!(error = %e, "plugin kv query failed");
    StorageError::Unavailable("host key-value table unavailable".into())
}

impl KvStore {
    pub fn new(db: Db, tenant: String) -> Self {
        KvStore { db, tenant }
    }

    fn pool(&self) -> &SqlitePool {
        self.db.reader()
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        crate::telemetry::spans::db("SELECT", "plugin_kv", async {
            sqlx::query_scalar("SELECT value FROM plugin_kv WHERE tenant_id = ? AND key = ?")
                .bind(&self.tenant)
                .bind(key)
                .fetch_optional(self.pool())
                .await
                .map_err(unavailable)
        })
        .await
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        crate::telemetry::spans::db("UPSERT", "plugin_kv", async {
            let mut tx = self
                .db
                .begin()
                .await
                .map_err(|_| StorageError::Unavailable("busy".into()))?;
            sqlx::query(
                "INSERT INTO plugin_kv (tenant_id, key, value) VALUES (?, ?, ?) \
                 ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value",
            )
            .bind(&self.tenant)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)
        })
        .await
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StorageError> {
        crate::telemetry::spans::db("DELETE", "plugin_kv", async {
            let mut tx = self
                .db
                .begin()
                .await
                .map_err(|_| StorageError::Unavailable("busy".into()))?;
            let n = sqlx::query("DELETE FROM plugin_kv WHERE tenant_id = ? AND key = ?")
                .bind(&self.tenant)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
            tx.commit().await.map_err(unavailable)?;
            Ok(n > 0)
        })
        .await
    }

    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StorageError> {
        crate::telemetry::spans::db("SELECT", "plugin_kv", async {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT key FROM plugin_kv WHERE tenant_id = ? AND substr(key, 1, length(?)) = ? AND key > ? \
                 ORDER BY key LIMIT ?",
            )
            .bind(&self.tenant)
            .bind(prefix)
            .bind(prefix)
            .bind(after.unwrap_or(""))
            .bind(limit as i64)
            .fetch_all(self.pool())
            .await
            .map_err(unavailable)?;
            Ok(rows)
        })
        .await
    }
}
