//! The `meta` table: small named values the node needs (e.g. the root-wrapped token-hash key).

use super::{on, Conn, Dialect, Tx};

use crate::error::Result;

/// Key of the PostgreSQL advisory lock that orders first starts (see [`serialize_first_start`]);
/// not one of the audit chains' keys (`audit::CHAIN_LOCK` plus a chain id).
const FIRST_START_LOCK: i64 = 0x6b70_2d66_6972_7374; // "kp-first"

/// Make `conn` the only transaction, across every node, that creates what a node's first
/// start creates when it finds it missing (the token-hash key, the default tenant and its
/// admin), until it ends: each such transaction reads, then inserts what it did not find.
/// SQLite's writer transaction already excludes every other writer; PostgreSQL reads only
/// what was committed before each statement, so two nodes started at once on an empty
/// database would both find nothing, and the second's insert would fail its start. With the
/// lock, the second waits for the first to commit, then finds what it made.
pub async fn serialize_first_start(conn: &mut Tx) -> Result<()> {
    if conn.dialect() != Dialect::Postgres {
        return Ok(());
    }
    crate::telemetry::spans::db("SELECT", "pg_advisory_xact_lock", async {
        on!(&mut *conn => |c| sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FIRST_START_LOCK)
            .execute(c)
            .await?
            .rows_affected());
        Ok(())
    })
    .await
}

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
