//! The tenant-scoped key-value table behind the `kv` capability. The tenant is fixed by the
//! host when the store is created; every query is bound to it, so no key a plugin crafts can
//! reach another tenant's rows.

use sqlx::SqlitePool;

use super::bindings::v0_1::rotation::keyplane::plugin::types::StorageError;
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

    /// Run one write statement in a transaction of its own; returns the rows it changed.
    async fn write<'q>(
        &self,
        operation: &'static str,
        statement: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Result<u64, StorageError> {
        crate::telemetry::spans::db(operation, "plugin_kv", async {
            let mut tx = self
                .db
                .begin()
                .await
                .map_err(|_| StorageError::Unavailable("busy".into()))?;
            let n = statement
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
            tx.commit().await.map_err(unavailable)?;
            Ok(n)
        })
        .await
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        let statement = sqlx::query(
            "INSERT INTO plugin_kv (tenant_id, key, value) VALUES (?, ?, ?) \
             ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(&self.tenant)
        .bind(key)
        .bind(value);
        self.write("UPSERT", statement).await.map(|_| ())
    }

    /// Set `key` to `value` if its value is `expected` now (`None`: if it is absent), in one
    /// statement, so two plugin calls racing on one key cannot both succeed.
    pub async fn set_if(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, StorageError> {
        let statement = match expected {
            None => sqlx::query(
                "INSERT INTO plugin_kv (tenant_id, key, value) VALUES (?, ?, ?) \
                 ON CONFLICT (tenant_id, key) DO NOTHING",
            )
            .bind(&self.tenant)
            .bind(key)
            .bind(value),
            Some(expected) => sqlx::query(
                "UPDATE plugin_kv SET value = ? WHERE tenant_id = ? AND key = ? AND value = ?",
            )
            .bind(value)
            .bind(&self.tenant)
            .bind(key)
            .bind(expected),
        };
        Ok(self.write("UPDATE", statement).await? == 1)
    }

    /// Delete `key` if its value is `expected` now, in one statement.
    pub async fn delete_if(&self, key: &str, expected: &[u8]) -> Result<bool, StorageError> {
        let statement =
            sqlx::query("DELETE FROM plugin_kv WHERE tenant_id = ? AND key = ? AND value = ?")
                .bind(&self.tenant)
                .bind(key)
                .bind(expected);
        Ok(self.write("DELETE", statement).await? > 0)
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StorageError> {
        let statement = sqlx::query("DELETE FROM plugin_kv WHERE tenant_id = ? AND key = ?")
            .bind(&self.tenant)
            .bind(key);
        Ok(self.write("DELETE", statement).await? > 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, KvStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("kv.db").display());
        let db = Db::open(&url).await.unwrap();
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO tenants (id, created_at, kek_wrapped) VALUES ('t', '', x'00')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        (dir, KvStore::new(db, "t".into()))
    }

    /// Of many callers creating one key, or replacing the same value, exactly one succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conditional_writes_succeed_once() {
        let (_dir, kv) = store().await;
        let created = futures_util::future::join_all((0u8..16).map(|i| {
            let kv = kv.clone();
            async move { kv.set_if("k", None, &[i]).await.unwrap() }
        }))
        .await;
        assert_eq!(created.iter().filter(|c| **c).count(), 1);
        let current = kv.get("k").await.unwrap().unwrap();
        let replaced = futures_util::future::join_all((0u8..16).map(|i| {
            let (kv, current) = (kv.clone(), current.clone());
            async move { kv.set_if("k", Some(&current), &[100 + i]).await.unwrap() }
        }))
        .await;
        assert_eq!(replaced.iter().filter(|c| **c).count(), 1);
        let now = kv.get("k").await.unwrap().unwrap();
        assert!(
            !kv.delete_if("k", &current).await.unwrap(),
            "a stale value deletes nothing"
        );
        assert!(kv.delete_if("k", &now).await.unwrap());
        assert_eq!(kv.get("k").await.unwrap(), None);
    }
}
