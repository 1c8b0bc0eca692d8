//! The `aliases` table: tenant-scoped names (`alias/...`) for keys.

use sqlx::{SqliteConnection, SqlitePool};

use crate::error::{Error, Result};

/// An alias row.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AliasRow {
    pub tenant_id: String,
    #[serde(rename = "alias_name")]
    pub name: String,
    #[serde(rename = "target_key_id")]
    pub key_id: String,
    pub created_at: String,
    pub updated_at: String,
}

const COLUMNS: &str = "tenant_id, name, key_id, created_at, updated_at";

pub async fn get(pool: &SqlitePool, tenant: &str, name: &str) -> Result<Option<AliasRow>> {
    crate::telemetry::spans::db("SELECT", "aliases", async move {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM aliases WHERE tenant_id = ? AND name = ?"
        ))
        .bind(tenant)
        .bind(name)
        .fetch_optional(pool)
        .await?)
    })
    .await
}

/// A page of a tenant's aliases after `after`, optionally only those of `key_id`.
pub async fn list(
    pool: &SqlitePool,
    tenant: &str,
    key_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<AliasRow>> {
    crate::telemetry::spans::db("SELECT", "aliases", async move {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM aliases WHERE tenant_id = ? AND name > ? \
             AND (? IS NULL OR key_id = ?) ORDER BY name LIMIT ?"
        ))
        .bind(tenant)
        .bind(after.unwrap_or(""))
        .bind(key_id)
        .bind(key_id)
        .bind(limit)
        .fetch_all(pool)
        .await?)
    })
    .await
}

pub async fn insert(conn: &mut SqliteConnection, a: &AliasRow) -> Result<()> {
    crate::telemetry::spans::db("INSERT", "aliases", async move {
        let r = sqlx::query(&format!(
            "INSERT INTO aliases ({COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        ))
        .bind(&a.tenant_id)
        .bind(&a.name)
        .bind(&a.key_id)
        .bind(&a.created_at)
        .bind(&a.updated_at)
        .execute(&mut *conn)
        .await?;
        if r.rows_affected() == 0 {
            return Err(Error::AlreadyExists {
                kind: "alias",
                id: a.name.clone(),
            });
        }
        Ok(())
    })
    .await
}

/// Point an existing alias that still names `from` at `to` (compare-and-set: false if it
/// names another key now, or is gone).
pub async fn retarget(
    conn: &mut SqliteConnection,
    tenant: &str,
    name: &str,
    from: &str,
    to: &str,
    now: &str,
) -> Result<bool> {
    crate::telemetry::spans::db("UPDATE", "aliases", async move {
        let r = sqlx::query(
            "UPDATE aliases SET key_id = ?, updated_at = ? WHERE tenant_id = ? AND name = ? \
             AND key_id = ?",
        )
        .bind(to)
        .bind(now)
        .bind(tenant)
        .bind(name)
        .bind(from)
        .execute(&mut *conn)
        .await?;
        Ok(r.rows_affected() == 1)
    })
    .await
}

pub async fn delete(conn: &mut SqliteConnection, tenant: &str, name: &str) -> Result<bool> {
    crate::telemetry::spans::db("DELETE", "aliases", async move {
        let r = sqlx::query("DELETE FROM aliases WHERE tenant_id = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .execute(&mut *conn)
            .await?;
        Ok(r.rows_affected() == 1)
    })
    .await
}

/// Remove every alias of a destroyed key.
pub async fn delete_for_key(conn: &mut SqliteConnection, key_id: &str) -> Result<()> {
    crate::telemetry::spans::db("DELETE", "aliases", async move {
        sqlx::query("DELETE FROM aliases WHERE key_id = ?")
            .bind(key_id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    })
    .await
}
