//! The `keys`, `key_versions` and `key_grants` tables.

use sqlx::{SqliteConnection, SqlitePool};

use crate::error::Result;

/// A key row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: String,
    pub tenant_id: String,
    pub spec: String,
    pub usage: String,
    pub protection: String,
    pub state: String,
    pub description: String,
    /// JSON object of string -> string.
    pub tags: String,
    pub primary_version: i64,
    pub created_at: String,
    pub created_by: String,
}

/// A key version row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyVersionRow {
    pub key_id: String,
    pub version: i64,
    pub state: String,
    pub hsm_object_id: Option<Vec<u8>>,
    pub wrapped_material: Option<Vec<u8>>,
    pub created_at: String,
    /// Storage-backend plugin holding the wrapped material (None: inline).
    pub blob_store: Option<String>,
}

const KEY_COLUMNS: &str = "id, tenant_id, spec, usage, protection, state, description, tags, \
                           primary_version, created_at, created_by";
const VERSION_COLUMNS: &str =
    "key_id, version, state, hsm_object_id, wrapped_material, created_at, blob_store";

pub async fn get(pool: &SqlitePool, id: &str) -> Result<Option<KeyRow>> {
    crate::telemetry::spans::db("SELECT", "keys", async move {
        Ok(
            sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?"))
                .bind(id)
                .fetch_optional(pool)
                .await?,
        )
    })
    .await
}

pub async fn version(
    pool: &SqlitePool,
    key_id: &str,
    version: i64,
) -> Result<Option<KeyVersionRow>> {
    crate::telemetry::spans::db("SELECT", "keys", async move {
        Ok(sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS} FROM key_versions WHERE key_id = ? AND version = ?"
        ))
        .bind(key_id)
        .bind(version)
        .fetch_optional(pool)
        .await?)
    })
    .await
}

pub async fn versions(pool: &SqlitePool, key_id: &str) -> Result<Vec<KeyVersionRow>> {
    crate::telemetry::spans::db("SELECT", "keys", async move {
        Ok(sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS} FROM key_versions WHERE key_id = ? ORDER BY version"
        ))
        .bind(key_id)
        .fetch_all(pool)
        .await?)
    })
    .await
}

pub async fn grantees(pool: &SqlitePool, key_id: &str) -> Result<Vec<String>> {
    crate::telemetry::spans::db("SELECT", "keys", async move {
        Ok(sqlx::query_scalar(
            "SELECT principal_id FROM key_grants WHERE key_id = ? ORDER BY principal_id",
        )
        .bind(key_id)
        .fetch_all(pool)
        .await?)
    })
    .await
}

/// A page of a tenant's keys with ids strictly after `after`, ordered by id.
pub async fn list(
    pool: &SqlitePool,
    tenant: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<KeyRow>> {
    crate::telemetry::spans::db("SELECT", "keys", async move {
        Ok(sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?"
        ))
        .bind(tenant)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(pool)
        .await?)
    })
    .await
}

pub async fn insert(
    conn: &mut SqliteConnection,
    key: &KeyRow,
    version: &KeyVersionRow,
    grantees: &[String],
) -> Result<()> {
    crate::telemetry::spans::db("INSERT", "keys", async move {
        sqlx::query(&format!(
            "INSERT INTO keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(&key.spec)
        .bind(&key.usage)
        .bind(&key.protection)
        .bind(&key.state)
        .bind(&key.description)
        .bind(&key.tags)
        .bind(key.primary_version)
        .bind(&key.created_at)
        .bind(&key.created_by)
        .execute(&mut *conn)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO key_versions ({VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&version.key_id)
        .bind(version.version)
        .bind(&version.state)
        .bind(&version.hsm_object_id)
        .bind(&version.wrapped_material)
        .bind(&version.created_at)
        .bind(&version.blob_store)
        .execute(&mut *conn)
        .await?;
        for p in grantees {
            sqlx::query("INSERT INTO key_grants (key_id, principal_id) VALUES (?, ?)")
                .bind(&key.id)
                .bind(p)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    })
    .await
}
