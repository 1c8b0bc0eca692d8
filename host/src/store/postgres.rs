//! The PostgreSQL backend, for several keyplane nodes sharing one database.
//!
//! One pool serves reads and transactions alike. Transactions run at PostgreSQL's default
//! isolation (read committed): every state change in the store is a compare-and-set whose
//! `WHERE` names the state it was authorized for (PostgreSQL re-checks it against the newest
//! row version once a concurrent writer commits), and rows that must be unique are unique in
//! the schema, so no transaction relies on a lock held from its start as the SQLite backend's
//! `BEGIN IMMEDIATE` gives.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

/// Whether `url` names a PostgreSQL database.
pub fn is_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Connections one node keeps at most.
const MAX_CONNECTIONS: u32 = 16;

/// The pool of a PostgreSQL database.
#[derive(Clone)]
pub struct Pools {
    pool: PgPool,
}

impl Pools {
    /// Connect and run the migrations in `migrations/postgres` (PostgreSQL's advisory lock
    /// keeps nodes starting together from running them twice).
    pub(super) async fn open(url: &str, busy_wait: Duration) -> anyhow::Result<Pools> {
        let pool = Self::connect(url, busy_wait).await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Pools { pool })
    }

    /// Connect without migrating (for offline tools; they only read).
    pub(super) async fn open_read_only(url: &str) -> anyhow::Result<Pools> {
        Ok(Pools {
            pool: Self::connect(url, super::DEFAULT_BUSY_WAIT).await?,
        })
    }

    async fn connect(url: &str, busy_wait: Duration) -> anyhow::Result<PgPool> {
        // A lock another transaction holds is waited for as long as a SQLite writer waits
        // for the write lock; past it the statement fails and the request answers 503.
        let lock_timeout = busy_wait.as_millis().to_string();
        let opts = PgConnectOptions::from_str(url)?
            .application_name("keyplane")
            .options([("lock_timeout", lock_timeout.as_str())]);
        Ok(PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(busy_wait)
            .connect_with(opts)
            .await?)
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn begin(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.pool.begin().await
    }

    /// A read-only transaction on one snapshot (`REPEATABLE READ`).
    pub(super) async fn snapshot(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        Transaction::begin(
            self.pool.acquire().await?,
            Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into()),
        )
        .await
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}
