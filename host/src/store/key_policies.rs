//! The `key_policies` table: the key policy documents AWS clients read and write. Stored and
//! returned; Cedar, not these documents, authorizes.

use super::{on, Conn, Tx};

use crate::error::Result;

/// A key's policy document of one name.
pub async fn get(pool: impl Into<Conn<'_>>, key_id: &str, name: &str) -> Result<Option<String>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "key_policies", async move {
            Ok(sqlx::query_scalar(
                "SELECT document FROM key_policies WHERE key_id = $1 AND name = $2",
            )
            .bind(key_id)
            .bind(name)
            .fetch_optional(&mut *pool)
            .await?)
        })
        .await
    })
}

/// Store (or replace) a key's policy document of one name.
pub async fn put(
    conn: &mut Tx,
    key_id: &str,
    name: &str,
    document: &str,
    (now, by): (&str, &str),
) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "key_policies", async move {
            sqlx::query(
                "INSERT INTO key_policies (key_id, name, document, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id, name) DO UPDATE SET \
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
    })
}
