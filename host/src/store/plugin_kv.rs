//! The `plugin_kv` table: the tenant-scoped key-value rows behind the plugins' `kv`
//! capability. Every function takes the tenant; callers fix it per plugin instance.

use super::{on, Db};
use crate::error::Result;
use crate::telemetry::spans;

/// The value of `key`.
pub async fn get(db: &Db, tenant: &str, key: &str) -> Result<Option<Vec<u8>>> {
    spans::db("SELECT", "plugin_kv", async {
        Ok(on!(db => |c| sqlx::query_scalar(
            "SELECT value FROM plugin_kv WHERE tenant_id = $1 AND key = $2"
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(c)
        .await?))
    })
    .await
}

/// A write to one row, run in a transaction of its own.
pub enum Write<'a> {
    /// Set the value, whatever it was.
    Set { value: &'a [u8] },
    /// Set it if its value is `expected` now (`None`: if it is absent), in one statement, so
    /// two plugin calls racing on one key cannot both succeed.
    SetIf {
        expected: Option<&'a [u8]>,
        value: &'a [u8],
    },
    /// Delete it if its value is `expected` now.
    DeleteIf { expected: &'a [u8] },
    /// Delete it.
    Delete,
}

/// Apply `write` to `key`; returns the rows it changed.
pub async fn write(db: &Db, tenant: &str, key: &str, write: Write<'_>) -> Result<u64> {
    let operation = match write {
        Write::Set { .. } => "UPSERT",
        Write::SetIf { .. } => "UPDATE",
        Write::DeleteIf { .. } | Write::Delete => "DELETE",
    };
    spans::db(operation, "plugin_kv", async {
        let mut tx = db.begin().await?;
        let tx_ = &mut tx;
        let n = on!(tx_, {
            match write {
                Write::Set { value } => sqlx::query(
                    "INSERT INTO plugin_kv (tenant_id, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value",
                )
                .bind(tenant)
                .bind(key)
                .bind(value)
                .execute(tx_)
                .await?
                .rows_affected(),
                Write::SetIf {
                    expected: None,
                    value,
                } => sqlx::query(
                    "INSERT INTO plugin_kv (tenant_id, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant_id, key) DO NOTHING",
                )
                .bind(tenant)
                .bind(key)
                .bind(value)
                .execute(tx_)
                .await?
                .rows_affected(),
                Write::SetIf {
                    expected: Some(expected),
                    value,
                } => sqlx::query(
                    "UPDATE plugin_kv SET value = $1 WHERE tenant_id = $2 AND key = $3 AND value = $4",
                )
                .bind(value)
                .bind(tenant)
                .bind(key)
                .bind(expected)
                .execute(tx_)
                .await?
                .rows_affected(),
                Write::DeleteIf { expected } => sqlx::query(
                    "DELETE FROM plugin_kv WHERE tenant_id = $1 AND key = $2 AND value = $3",
                )
                .bind(tenant)
                .bind(key)
                .bind(expected)
                .execute(tx_)
                .await?
                .rows_affected(),
                Write::Delete => {
                    sqlx::query("DELETE FROM plugin_kv WHERE tenant_id = $1 AND key = $2")
                        .bind(tenant)
                        .bind(key)
                        .execute(tx_)
                        .await?
                        .rows_affected()
                }
            }
        });
        tx.commit().await?;
        Ok(n)
    })
    .await
}

/// Keys starting with `prefix`, after `after`, in order, at most `limit`.
pub async fn list(
    db: &Db,
    tenant: &str,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>> {
    spans::db("SELECT", "plugin_kv", async {
        Ok(on!(db => |c| sqlx::query_scalar(
            "SELECT key FROM plugin_kv WHERE tenant_id = $1 AND substr(key, 1, length($2)) = $2 \
             AND key > $3 ORDER BY key LIMIT $4",
        )
        .bind(tenant)
        .bind(prefix)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(c)
        .await?))
    })
    .await
}
