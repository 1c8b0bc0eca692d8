//! The `meta` table: small named values the node needs (e.g. the root-wrapped token-hash key).

use sqlx::SqliteConnection;

use crate::error::Result;

/// Read a value.
pub async fn get(conn: &mut SqliteConnection, name: &str) -> Result<Option<Vec<u8>>> {
    crate::telemetry::spans::db("SELECT", "meta", async move {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(name)
            .fetch_optional(conn)
            .await?)
    })
    .await
}

/// Insert a value (fails if present).
pub async fn insert(conn: &mut SqliteConnection, name: &str, value: &[u8]) -> Result<()> {
    crate::telemetry::spans::db("INSERT", "meta", async move {
        sqlx::query("INSERT INTO meta (name, value) VALUES (?, ?)")
            .bind(name)
            .bind(value)
            .execute(conn)
            .await?;
        Ok(())
    })
    .await
}
