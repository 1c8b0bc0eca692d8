//! The `key_policies` table: the key policy documents AWS clients read and write. Stored and
//! returned; Cedar, not these documents, authorizes.

use sqlx::{SqliteConnection, SqlitePool};

use crate::error::Result;

/// A key's policy document of one name.
pub async fn get(pool: &SqlitePool, key_id: &str, name: &str) -> Result<Option<String>> {
    crate::telemetry::spans::db("SELECT", "key_policies", async move {
        Ok(
            sqlx::query_scalar("SELECT document FROM key_policies WHERE key_id = ? AND name = ?")
                .bind(key_id)
                .bind(name)
                .fetch_optional(pool)
                .await?,
        )
    })
    .await
}

/// Store (or replace) a key's policy document of one name.
pub async fn put(
    conn: &mut SqliteConnection,
    key_id: &str,
    name: &str,
    document: &str,
    (now, by): (&str, &str),
) -> Result<()> {
    crate::telemetry::spans::db("INSERT", "key_policies", async move {
        sqlx::query(
            "INSERT INTO key_policies (key_id, name, document, updated_at, updated_by) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id, name) DO UPDATE SET \
             document = excluded.document, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by",
        )
        .bind(key_id)
        .bind(name)
        .bind(document)
        .bind(now)
        .bind(by)
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
}
