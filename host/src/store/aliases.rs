//! The `aliases` table: tenant-scoped names (`alias/...`) for keys.

use super::{on, Conn, Tx};

use crate::error::{Error, Result};

/// An alias row.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, schemars::JsonSchema)]
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

pub async fn get(pool: impl Into<Conn<'_>>, tenant: &str, name: &str) -> Result<Option<AliasRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "aliases", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM aliases WHERE tenant_id = $1 AND name = $2"
            ))
            .bind(tenant)
            .bind(name)
            .fetch_optional(&mut *pool)
            .await?)
        })
        .await
    })
}

/// A page of a tenant's aliases after `after`, optionally only those of `key_id`.
pub async fn list(
    pool: impl Into<Conn<'_>>,
    tenant: &str,
    key_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<AliasRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "aliases", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM aliases WHERE tenant_id = $1 AND name > $2 \
             AND ($3 IS NULL OR key_id = $4) ORDER BY name LIMIT $5"
            ))
            .bind(tenant)
            .bind(after.unwrap_or(""))
            .bind(key_id)
            .bind(key_id)
            .bind(limit)
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

pub async fn insert(conn: &mut Tx, a: &AliasRow) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "aliases", async move {
            let r = sqlx::query(&format!(
            "INSERT INTO aliases ({COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
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
    })
}

/// Point an existing alias that still names `from` at `to` (compare-and-set: false if it
/// names another key now, or is gone).
pub async fn retarget(
    conn: &mut Tx,
    tenant: &str,
    name: &str,
    from: &str,
    to: &str,
    now: &str,
) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "aliases", async move {
            let r = sqlx::query(
            "UPDATE aliases SET key_id = $1, updated_at = $2 WHERE tenant_id = $3 AND name = $4 \
             AND key_id = $5",
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
    })
}

/// Delete an alias that still names `key_id` (compare-and-set, as [`retarget`]: false if it
/// names another key now, or is gone).
pub async fn delete(conn: &mut Tx, tenant: &str, name: &str, key_id: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("DELETE", "aliases", async move {
            let r = sqlx::query(
                "DELETE FROM aliases WHERE tenant_id = $1 AND name = $2 AND key_id = $3",
            )
            .bind(tenant)
            .bind(name)
            .bind(key_id)
            .execute(&mut *conn)
            .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}

/// Remove every alias of a destroyed key.
pub async fn delete_for_key(conn: &mut Tx, key_id: &str) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("DELETE", "aliases", async move {
            sqlx::query("DELETE FROM aliases WHERE key_id = $1")
                .bind(key_id)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await
    })
}
