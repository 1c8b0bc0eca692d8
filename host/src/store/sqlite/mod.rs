//! The SQLite backend (the embedded default).
//!
//! Writes go through a single-connection writer pool, and the audit group commit has one more
//! writer connection of its own, driven in place ([`inline`], [`chain_writer`]). Every transaction of the writer
//! pool begins with `BEGIN IMMEDIATE`: it holds the write lock from its first statement, so its
//! reads cannot go stale before it writes, and the audit log can read its chain head inside
//! the transaction that appends to it (see `audit`). Reads use a separate pool and see
//! committed data (WAL mode).

pub mod chain_writer;
pub mod inline;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::error::Result;

/// How the writer pool begins a transaction: with the write lock, since the [`inline`]
/// connection also writes (a deferred transaction that read before that connection committed
/// would fail with `SQLITE_BUSY_SNAPSHOT` at its first write, which no busy timeout retries).
const BEGIN: &str = "BEGIN IMMEDIATE";

/// The pools of a SQLite database.
#[derive(Clone)]
pub struct Pools {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl Pools {
    /// Open (creating if needed) the database and run the migrations in `migrations/sqlite`.
    pub(super) async fn open(url: &str, busy_wait: Duration) -> anyhow::Result<Pools> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Destroyed key versions: deleted content is overwritten, not left in free pages.
            .pragma("secure_delete", "ON")
            // A WAL that grew while a long reader held restarts off is cut back to this
            // size when it next starts over (it otherwise keeps its largest size on disk).
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            .busy_timeout(busy_wait);
        // A connection to a local file cannot go stale the way a socket can, so the pools do
        // not ping it before handing it out (a round trip to sqlx's worker thread each time:
        // on the audit group commit that was one extra thread hand-off per batch).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Pools { reader, writer })
    }

    /// Open an existing database without migrating or writing (for offline tools).
    pub(super) async fn open_read_only(url: &str) -> anyhow::Result<Pools> {
        let opts = SqliteConnectOptions::from_str(url)?.read_only(true);
        let reader = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await?;
        Ok(Pools {
            writer: reader.clone(),
            reader,
        })
    }

    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// `BEGIN IMMEDIATE` on the writer connection. A transaction whose `COMMIT` failed and
    /// whose `ROLLBACK` failed too (SQLite rolls back by itself on a full disk, and then
    /// refuses the `ROLLBACK`) leaves sqlx counting the connection as inside a transaction,
    /// which makes every later `BEGIN` fail: such a connection is closed and replaced, so the
    /// node writes again once the fault is gone, without a restart.
    pub(super) async fn begin(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        use sqlx::Connection;
        let mut conn = self.writer.acquire().await?;
        if conn.is_in_transaction() {
            tracing::warn!("replacing a writer connection left inside a failed transaction");
            conn.close().await?;
            conn = self.writer.acquire().await?;
        }
        Transaction::begin(conn, Some(BEGIN.into())).await
    }

    /// A writer connection outside the pools, opened with the writer's options, for
    /// statements that change no row a cache holds: the audit group commit drives one in
    /// place ([`inline::Inline`]).
    pub async fn separate_writer(&self) -> Result<SqliteConnection> {
        use sqlx::Connection;
        Ok(SqliteConnection::connect_with(&self.writer.connect_options()).await?)
    }

    /// A writer connection for WAL checkpoints ([`checkpoint_wal`], [`restart_wal`]), whose
    /// busy handler gives up after [`RESTART_BUSY_WAIT`]. A restart holds every writer off
    /// while it waits for the readers of the WAL, and one can read for seconds (an export, or
    /// `keyplane audit verify` run against a live node's file), so it must not wait for them
    /// long: it gives up, and the next checkpoint tries again.
    pub async fn checkpoint_connection(&self) -> Result<SqliteConnection> {
        use sqlx::Connection;
        let opts = (*self.writer.connect_options())
            .clone()
            .busy_timeout(RESTART_BUSY_WAIT);
        Ok(SqliteConnection::connect_with(&opts).await?)
    }

    /// Close both pools (flushes the WAL on the last connection).
    pub(super) async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// How long the busy handler of a [`Pools::checkpoint_connection`] waits for another writer or
/// for readers of the WAL (in [`restart_wal`]: once for the restart, once for its commit).
pub const RESTART_BUSY_WAIT: Duration = Duration::from_millis(25);

/// Size in bytes down to which a WAL is cut when it starts over (`journal_size_limit`): twice
/// what the audit group commit's restarts let it reach under full load.
pub const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Copy committed WAL frames back into the database file without waiting for readers or
/// writers (`PASSIVE`), on `conn` (a [`Pools::checkpoint_connection`], so state changes never
/// wait behind the sync of the database file that follows). Returns how many frames the WAL
/// holds, or -1 when another connection was checkpointing (the writer pool's automatic
/// checkpoints): then nothing was copied. The [`inline`] connection leaves checkpoints to
/// this; the writer pool's own commits still checkpoint automatically.
pub async fn checkpoint_wal(conn: &mut SqliteConnection) -> Result<i64> {
    let (_, frames) = wal_checkpoint(conn, "PRAGMA wal_checkpoint(PASSIVE)").await?;
    Ok(frames)
}

/// Run one `wal_checkpoint` pragma; returns whether it was blocked from completing, and how
/// many frames the WAL holds.
async fn wal_checkpoint(conn: &mut SqliteConnection, pragma: &'static str) -> Result<(bool, i64)> {
    let (busy, frames, _): (i64, i64, i64) = sqlx::query_as(pragma).fetch_one(conn).await?;
    Ok((busy != 0, frames))
}

/// Copy every WAL frame back, waiting for writers and for readers of the WAL (`RESTART`), so
/// that the next commit writes the WAL from its start again.
///
/// [`checkpoint_wal`] alone does not bound the WAL under sustained writes: SQLite starts the
/// WAL over only when a writer begins while every frame has been copied back, and with a
/// commit every few hundred µs some always arrive while the checkpoint syncs. In a 4 s
/// `encrypt` load the WAL grew to 137 MB, and every frame went to a new page of the file.
/// Writers wait for this one: its caller runs it when few frames are left to copy, and keeps
/// its own writers off until it returns. On a [`Pools::checkpoint_connection`] it waits at most
/// [`RESTART_BUSY_WAIT`] for other writers and for readers. Returns whether the WAL was
/// copied back whole; if not (a reader of the WAL, another writer or checkpoint), it was
/// copied as far as the readers allow, as by [`checkpoint_wal`].
///
/// The first commit into a WAL started over also syncs the new WAL header. So that this sync
/// never falls to the [`inline`] connection (on a tokio worker), this one commits first: it
/// counts the restart in `wal_restarts`. Should another writer get in first, that writer
/// starts the WAL over instead, as any writer would.
pub async fn restart_wal(conn: &mut SqliteConnection) -> Result<bool> {
    let (busy, _) = wal_checkpoint(conn, "PRAGMA wal_checkpoint(RESTART)").await?;
    if busy {
        return Ok(false);
    }
    match sqlx::query("UPDATE wal_restarts SET count = count + 1")
        .execute(conn)
        .await
    {
        Err(sqlx::Error::Database(e)) if is_busy(e.as_ref()) => {}
        other => {
            other?;
        }
    }
    Ok(true)
}

/// Whether `e` is SQLite's `SQLITE_BUSY` (any of its extended codes).
fn is_busy(e: &dyn sqlx::error::DatabaseError) -> bool {
    const SQLITE_BUSY: i32 = 5;
    e.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == SQLITE_BUSY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    const DB_FILE: &str = "t.db";

    /// A fresh database in a directory kept while the guard lives.
    async fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join(DB_FILE).display());
        (dir, Db::open(&url).await.unwrap())
    }

    /// Commit one write through the writer pool (one more WAL frame).
    async fn write(db: &Db) {
        let mut tx = db.begin_bookkeeping().await.unwrap();
        let t = &mut tx;
        let wrote: Result<()> = async {
            crate::store::on!(t, {
                sqlx::query("UPDATE wal_restarts SET count = count")
                    .execute(t)
                    .await?;
                Ok(())
            })
        }
        .await;
        wrote.unwrap();
        tx.commit().await.unwrap();
    }

    /// A restart leaves the WAL holding only its own counting commit (so it started the WAL
    /// over), and the next writer appends to the WAL instead of starting it over (and syncing
    /// its header) itself.
    #[tokio::test]
    async fn restart_wal_starts_the_wal_over_with_its_own_commit() {
        let (_dir, db) = temp_db().await;
        let mut conn = db.sqlite().unwrap().checkpoint_connection().await.unwrap();
        for _ in 0..20 {
            write(&db).await;
        }
        assert!(checkpoint_wal(&mut conn).await.unwrap() >= 20);
        assert!(restart_wal(&mut conn).await.unwrap());
        assert_eq!(checkpoint_wal(&mut conn).await.unwrap(), 1);
        let count: i64 = sqlx::query_scalar("SELECT count FROM wal_restarts")
            .fetch_one(db.sqlite().unwrap().reader())
            .await
            .unwrap();
        assert_eq!(count, 1);
    }

    /// A reader of the WAL holds a restart off (and every writer with it) for at most
    /// [`RESTART_BUSY_WAIT`] and some sleeping, not for the pools' busy timeout.
    #[tokio::test]
    async fn restart_wal_gives_up_soon_on_a_reader_of_the_wal() {
        let (_dir, db) = temp_db().await;
        write(&db).await;
        let mut reader = db.sqlite().unwrap().reader().acquire().await.unwrap();
        sqlx::query("BEGIN").execute(&mut *reader).await.unwrap();
        sqlx::query("SELECT count FROM wal_restarts")
            .fetch_one(&mut *reader)
            .await
            .unwrap();
        write(&db).await;
        let mut conn = db.sqlite().unwrap().checkpoint_connection().await.unwrap();
        let started = std::time::Instant::now();
        assert!(!restart_wal(&mut conn).await.unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "writers were held off for {:?}",
            started.elapsed()
        );
        write(&db).await;
        sqlx::query("COMMIT").execute(&mut *reader).await.unwrap();
        assert!(restart_wal(&mut conn).await.unwrap());
    }
}
