//! A SQLite connection driven on the caller's own thread, for the audit group commit.
//!
//! sqlx runs every SQLite connection on a thread of its own, so each statement is a hand-off
//! to that thread and back: two thread switches, which on the machines we measured cost more
//! than SQLite's work for a small `INSERT`. The audit group commit runs one statement per
//! batch under every cryptographic request, so it drives a connection of its own in place:
//! sqlx opens it (same options and pragmas as the writer pool), [`Inline::take`] takes it from
//! sqlx's worker for good (`lock_handle`, sqlx's own way to reach the raw handle), and
//! `rusqlite` runs the statements on the calling tokio worker, as SoftHSM2 calls already are.
//!
//! Nothing may block that worker on another connection, so this connection never waits for
//! a lock: its busy timeout is zero and [`Inline::run`] retries a busy statement after an
//! asynchronous sleep. For the same reason it never checkpoints the WAL itself (a checkpoint
//! syncs the database file: 7 ms median on our machines); [`crate::store::checkpoint_wal`]
//! does that on a connection of its own, on sqlx's thread. One sync remains possible here:
//! when this connection is the first writer after a checkpoint copied back the whole WAL,
//! SQLite starts the WAL over and syncs its new header (0.3 ms median, 1.5 ms at most, on a
//! tokio worker). Under sustained writes that never happens by itself, and the checkpoint
//! task's [`crate::store::restart_wal`] takes that sync on its own connection; it remains
//! for a node whose writes pause long enough for a `PASSIVE` checkpoint to catch up.
//!
//! It is the database's second writer, which is why the writer pool begins its transactions
//! with `BEGIN IMMEDIATE` (see the parent module). Such a transaction that meets a batch
//! holding the lock waits in SQLite's busy handler (1 ms at first, then longer pauses).

use std::time::{Duration, Instant};

use sqlx::sqlite::LockedSqliteHandle;
use sqlx::SqliteConnection;

use crate::error::{Error, Result};

/// Prepared statements kept (sqlx's default; the group commit's `INSERT` differs per batch size).
const STATEMENT_CACHE: usize = 100;
/// Pause between retries of a busy statement.
const BUSY_RETRY: Duration = Duration::from_millis(1);

/// A connection taken from sqlx's worker thread and driven in place.
pub struct Inline<'conn> {
    // Field order matters: `conn` must be dropped (finalizing its cached statements) while
    // `_locked` still keeps sqlx's worker away from the handle.
    conn: rusqlite::Connection,
    _locked: LockedSqliteHandle<'conn>,
    /// How long [`Inline::run`] keeps retrying while another connection holds the write lock
    /// (the writer pool's busy timeout, [`crate::store::Db::busy_wait`]).
    busy_wait: Duration,
}

impl<'conn> Inline<'conn> {
    /// Take `conn` from its sqlx worker (parked until this value is dropped) and prepare it:
    /// no busy waiting, no automatic checkpoints.
    pub async fn take(
        conn: &'conn mut SqliteConnection,
        busy_wait: Duration,
    ) -> Result<Inline<'conn>> {
        let mut locked = conn.lock_handle().await?;
        let raw = locked.as_raw_handle().as_ptr();
        // SAFETY: `raw` is the open handle of `conn`. The lock guard stored next to the new
        // `rusqlite::Connection` keeps sqlx's worker from touching the handle for as long as
        // it lives, and is dropped only after it (field order above); the borrow of `conn`
        // keeps the handle from being closed meanwhile; `from_handle` never closes it.
        let conn = unsafe { rusqlite::Connection::from_handle(raw) }.map_err(database)?;
        conn.busy_timeout(Duration::ZERO).map_err(database)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(database)?;
        Ok(Inline {
            conn,
            _locked: locked,
            busy_wait,
        })
    }

    /// Run `statements` on this thread. While another connection holds the write lock
    /// (`SQLITE_BUSY`) it is run again after an asynchronous pause, for up to its busy wait;
    /// `statements` must therefore leave nothing half done when it fails busy, and no
    /// transaction open. One left open anyway (a `ROLLBACK` that failed) is rolled back first,
    /// and if that fails too nothing runs: a statement inside it would never commit.
    pub async fn run<T>(
        &mut self,
        mut statements: impl FnMut(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        if !self.conn.is_autocommit() {
            tracing::warn!("rolling back a transaction left open on the inline connection");
            self.conn.execute_batch("ROLLBACK")?;
        }
        let started = Instant::now();
        loop {
            match statements(&self.conn) {
                Err(e) if is_busy(&e) && started.elapsed() < self.busy_wait => {
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                other => return other,
            }
        }
    }
}

/// Whether `e` is SQLite's "another connection holds the lock".
fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

/// Whether `e` is a constraint violation (for the audit log: a `seq` already taken).
pub fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
}

/// Log a driver error and report the database as unavailable (as for sqlx errors).
fn database(e: rusqlite::Error) -> Error {
    tracing::error!(error = %e, "database error");
    Error::DatabaseUnavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer connection of a fresh database (kept while the guard lives).
    async fn separate_writer() -> (tempfile::TempDir, SqliteConnection) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = crate::store::Db::open(&url).await.unwrap();
        (dir, db.sqlite().unwrap().separate_writer().await.unwrap())
    }

    /// The connection taken over keeps the writer's durability (WAL, `synchronous = NORMAL`)
    /// and WAL size limit, never waits for a lock and never checkpoints by itself.
    #[tokio::test]
    async fn taken_connection_neither_waits_nor_checkpoints() {
        let (_dir, mut conn) = separate_writer().await;
        let mut inline = Inline::take(&mut conn, Duration::from_secs(10))
            .await
            .unwrap();
        let pragma = |name: &str| {
            inline
                .conn
                .query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        assert_eq!(pragma("busy_timeout"), 0);
        assert_eq!(pragma("wal_autocheckpoint"), 0);
        assert_eq!(pragma("synchronous"), 1);
        assert_eq!(
            pragma("journal_size_limit"),
            crate::store::sqlite::WAL_SIZE_LIMIT
        );
        let journal: String = inline
            .run(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(journal, "wal");
    }

    /// A transaction left open by earlier statements is rolled back before the next run, so
    /// nothing runs inside it (its statements would never commit).
    #[tokio::test]
    async fn run_never_starts_inside_a_transaction_left_open() {
        let (_dir, mut conn) = separate_writer().await;
        let mut inline = Inline::take(&mut conn, Duration::from_secs(10))
            .await
            .unwrap();
        inline.conn.execute_batch("BEGIN").unwrap();
        let autocommit = inline.run(|c| Ok(c.is_autocommit())).await.unwrap();
        assert!(autocommit);
    }
}
