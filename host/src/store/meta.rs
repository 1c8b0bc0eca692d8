//! The `meta` table: small named values the node needs (e.g. the root-wrapped token-hash key).

use super::{on, Conn, Tx};

use crate::error::Result;

/// Read a value.
pub async fn get(conn: impl Into<Conn<'_>>, name: &str) -> Result<Option<Vec<u8>>> {
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "meta", async move {
            Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
                .bind(name)
                .fetch_optional(conn)
                .await?)
        })
        .await
    })
}

/// Insert a value (fails if present).
pub async fn insert(conn: &mut Tx, name: &str, value: &[u8]) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "meta", async move {
            sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2)")
                .bind(name)
                .bind(value)
                .execute(conn)
                .await?;
            Ok(())
        })
        .await
    })
}
