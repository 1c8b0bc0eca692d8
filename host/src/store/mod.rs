//! Metadata storage through sqlx (SQLite by default).
//!
//! Owns the connection pools and the migrations. Writes go through a single-connection
//! writer pool, so every write transaction is serialised; that is what lets the audit log
//! read its chain head inside the transaction that appends to it (see `audit`). Reads use a
//! separate pool and see committed data (WAL mode). Submodules hold the queries per table.

pub mod aliases;
pub mod imports;
pub mod keys;
pub mod leases;
pub mod meta;
pub mod plugins;
pub mod principals;
pub mod tenants;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::error::Result;

/// A write transaction.
pub type Tx = Transaction<'static, Sqlite>;

/// Handles to the database.
#[derive(Clone)]
pub struct Db {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl Db {
    /// Open (creating if needed) the database and run the migrations in `migrations/`.
    pub async fn open(url: &str) -> anyhow::Result<Db> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Destroyed key versions: deleted content is overwritten, not left in free pages.
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("../migrations").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Db { reader, writer })
    }

    /// Pool for reads.
    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Begin a write transaction (serialised with every other writer).
    pub async fn begin(&self) -> Result<Tx> {
        Ok(self.writer.begin().await?)
    }

    /// Readiness probe.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    /// Close both pools (flushes WAL on the last connection).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Current time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Db {
    /// Open an existing database without migrating or writing (for offline tools).
    pub async fn open_read_only(url: &str) -> anyhow::Result<Db> {
        let opts = SqliteConnectOptions::from_str(url)?.read_only(true);
        let reader = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await?;
        Ok(Db {
            writer: reader.clone(),
            reader,
        })
    }
}
