//! The `tenants` table.

use sqlx::{SqliteConnection, SqlitePool};

use crate::error::Result;

/// A tenant row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub id: String,
    pub created_at: String,
    pub kek_wrapped: Vec<u8>,
}

pub async fn get(pool: &SqlitePool, id: &str) -> Result<Option<TenantRow>> {
    crate::telemetry::spans::db("SELECT", "tenants", async move {
        Ok(
            sqlx::query_as("SELECT id, created_at, kek_wrapped FROM tenants WHERE id = ?")
                .bind(id)
                .fetch_optional(pool)
                .await?,
        )
    })
    .await
}

pub async fn exists(conn: &mut SqliteConnection, id: &str) -> Result<bool> {
    crate::telemetry::spans::db("SELECT", "tenants", async move {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE id = ?")
            .bind(id)
            .fetch_one(conn)
            .await?;
        Ok(n > 0)
    })
    .await
}

pub async fn insert(conn: &mut SqliteConnection, row: &TenantRow) -> Result<()> {
    crate::telemetry::spans::db("INSERT", "tenants", async move {
        sqlx::query("INSERT INTO tenants (id, created_at, kek_wrapped) VALUES (?, ?, ?)")
            .bind(&row.id)
            .bind(&row.created_at)
            .bind(&row.kek_wrapped)
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}
