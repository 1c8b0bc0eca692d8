//! The SQLite side of the audit group commit (`crate::audit::group_commit`): a connection of
//! its own that appends batches of rows to a hash chain ([`ChainWriter`]), and the task that
//! checkpoints the WAL beside it.
//!
//! The writer drives its connection in place ([`super::inline`]): sqlx would hand every
//! statement to the connection's own thread and back, and that hand-off cost more than the
//! `INSERT`. A batch is chained after the head as of the writer's last batch and inserted
//! with one statement; records of requests that change state are appended in their own
//! transactions on the same chain (SQLite has one), so that head can be stale: then the first
//! `seq` is taken, the statement fails as a whole, and the batch is chained again after the
//! head read inside a transaction that holds the write lock.
//!
//! That connection leaves WAL checkpoints to a second task, which checkpoints every
//! [`WAL_CHECKPOINT_EVERY`] on a connection of its own. Once the WAL holds
//! [`WAL_RESTART_AFTER`] frames, that task also starts it over ([`super::restart_wal`]),
//! which holds writers off: it first takes the *write gate* that the writer holds while it
//! writes a batch, so the batch waits for it on the gate and is woken as soon as the restart is
//! done (it would otherwise meet `SQLITE_BUSY` and poll, and the restart's busy handler would
//! sleep while a batch holds the lock).

use std::sync::Arc;
use std::time::Duration;

use sqlx::SqliteConnection;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::inline::{is_constraint, Inline};
use super::{checkpoint_wal, restart_wal, Pools};
use crate::error::{Error, Result};
use crate::store::bulk::{self, Value};
use crate::telemetry::spans;

/// How often the WAL is checkpointed while the writer runs.
pub const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// WAL frames (pages of 4 KiB) past which a checkpoint also starts the WAL over, holding
/// writers off meanwhile (5–9 ms here, most of it three syncs). At 25k `encrypt`s a second
/// the WAL grows by about 1600 frames between checkpoints: it then starts over about every
/// half second, records wait for that about 1.5% of the time, and the WAL stays under about
/// 32 MB (without restarts it grew by about 40 MB a second).
pub const WAL_RESTART_AFTER: i64 = 4096;

/// When the checkpoint task runs and when it starts the WAL over.
#[derive(Clone, Copy)]
pub struct WalCheckpoints {
    pub every: Duration,
    pub restart_after: i64,
}

/// The checkpoints of a node.
pub const WAL_CHECKPOINTS: WalCheckpoints = WalCheckpoints {
    every: WAL_CHECKPOINT_EVERY,
    restart_after: WAL_RESTART_AFTER,
};

/// A chain's head: the last row's `seq` and hash.
pub type Head = (i64, String);

/// How to read a chain's head: `sql` selects the last row's (seq, hash) between the two
/// bound values `bounds`; `empty` is the head while the chain has no row.
pub struct HeadQuery {
    pub sql: &'static str,
    pub bounds: [i64; 2],
    pub empty: Head,
}

/// The writer's connection, before its task takes it from sqlx's worker.
pub struct ChainWriter {
    conn: SqliteConnection,
    gate: WriteGate,
    busy_wait: Duration,
}

impl Pools {
    /// Open a chain writer's connection (a [`Pools::separate_writer`]) and start the WAL
    /// checkpoints beside it on a [`Pools::checkpoint_connection`], until `stop` says so.
    /// `busy_wait`: how long the writer retries while another connection holds the lock.
    pub async fn chain_writer(
        &self,
        busy_wait: Duration,
        wal: WalCheckpoints,
        stop: watch::Receiver<bool>,
    ) -> Result<(ChainWriter, JoinHandle<()>)> {
        let conn = self.separate_writer().await?;
        let checkpoints = self.checkpoint_connection().await?;
        let gate = WriteGate::default();
        let task = tokio::spawn(checkpoint_wal_until_stopped(
            checkpoints,
            wal,
            gate.clone(),
            stop,
        ));
        Ok((
            ChainWriter {
                conn,
                gate,
                busy_wait,
            },
            task,
        ))
    }
}

impl ChainWriter {
    /// Take the connection from sqlx's worker, for the rest of the writer's life.
    pub async fn take(&mut self) -> Result<Appender<'_>> {
        Ok(Appender {
            inline: Inline::take(&mut self.conn, self.busy_wait).await?,
            gate: self.gate.clone(),
        })
    }

    /// Close the connection (after the [`Appender`] is dropped).
    pub async fn close(self) {
        if let Err(e) = sqlx::Connection::close(self.conn).await {
            tracing::warn!(error = %e, "could not close the audit group commit's connection");
        }
    }
}

/// A [`ChainWriter`] whose connection is driven in place.
pub struct Appender<'c> {
    inline: Inline<'c>,
    gate: WriteGate,
}

impl Appender<'_> {
    /// Append the rows `chain` makes after a head, into `table`, as one statement (so at most
    /// `32766 / N` rows), holding the write gate: after `known` (the head as of this writer's
    /// last batch) if given and still the head, else after the head `head` reads inside one
    /// `BEGIN IMMEDIATE` transaction. Returns the rows.
    pub async fn append<T, const N: usize>(
        &mut self,
        known: Option<Head>,
        head: &HeadQuery,
        table: &bulk::Table,
        chain: impl Fn(Head) -> Vec<T>,
        values: impl for<'a> Fn(&'a T) -> [Value<'a>; N],
    ) -> Result<Vec<T>> {
        let _writing = self.gate.lock().await;
        if let Some(after) = known {
            let rows = chain(after);
            let insert = self.inline.run(|c| insert(c, table, &rows, &values));
            match spans::db("INSERT", table.name, insert).await {
                Ok(()) => return Ok(rows),
                Err(e) if is_constraint(&e) => {}
                Err(e) => return Err(database(e)),
            }
        }
        let transaction = self.inline.run(|c| {
            c.execute_batch("BEGIN IMMEDIATE")?;
            let written = read_head(c, head)
                .map(&chain)
                .and_then(|rows| insert(c, table, &rows, &values).map(|()| rows))
                .and_then(|rows| c.execute_batch("COMMIT").map(|()| rows));
            if written.is_err() {
                let _ = c.execute_batch("ROLLBACK");
            }
            written
        });
        spans::db("INSERT", table.name, transaction)
            .await
            .map_err(database)
    }
}

/// The head `query` reads.
fn read_head(conn: &rusqlite::Connection, query: &HeadQuery) -> rusqlite::Result<Head> {
    use rusqlite::OptionalExtension;
    let head = conn
        .prepare_cached(query.sql)?
        .query_row(query.bounds, |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(head.unwrap_or_else(|| query.empty.clone()))
}

/// Insert `rows` into `table` with one statement (all or none: a busy retry can never insert
/// a row twice).
fn insert<T, const N: usize>(
    conn: &rusqlite::Connection,
    table: &bulk::Table,
    rows: &[T],
    values: &impl for<'a> Fn(&'a T) -> [Value<'a>; N],
) -> rusqlite::Result<()> {
    const MAX_VALUES: usize = 32766;
    if rows.len() * N > MAX_VALUES {
        return Err(rusqlite::Error::InvalidParameterCount(
            rows.len() * N,
            MAX_VALUES,
        ));
    }
    let mut insert = conn.prepare_cached(&bulk::values_sql(table, rows.len()))?;
    for (i, value) in rows.iter().flat_map(values).enumerate() {
        match value {
            Value::Int(v) => insert.raw_bind_parameter(i + 1, v)?,
            Value::Text(v) => insert.raw_bind_parameter(i + 1, v)?,
            Value::MaybeText(v) => insert.raw_bind_parameter(i + 1, v)?,
        }
    }
    insert.raw_execute()?;
    Ok(())
}

/// Log a driver error and report the database as unavailable (as for sqlx errors).
fn database(e: rusqlite::Error) -> Error {
    tracing::error!(error = %e, "could not append to the audit chain");
    Error::DatabaseUnavailable
}

/// Held by the group commit while it writes a batch, and by the checkpoint task while it
/// restarts the WAL.
type WriteGate = Arc<tokio::sync::Mutex<()>>;

/// Checkpoint the WAL as `wal` says on `conn` (the group commit's own connection leaves
/// checkpoints to this, see [`crate::store::inline`]), until [`GroupCommit::close`] or until
/// every [`GroupCommit`] is dropped; then close `conn`. A restart follows a `PASSIVE` pass,
/// so it has only the frames committed during that pass left to copy.
async fn checkpoint_wal_until_stopped(
    mut conn: sqlx::SqliteConnection,
    wal: WalCheckpoints,
    gate: WriteGate,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(wal.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = RestartBackoff::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // A failure is logged where it is converted; the next tick tries again.
                let frames = checkpoint_wal(&mut conn).await.unwrap_or(-1);
                if frames > wal.restart_after && backoff.due() {
                    let restarted = {
                        let _writers_held_off = gate.lock().await;
                        restart_wal(&mut conn).await.unwrap_or(false)
                    };
                    backoff.after(restarted, frames);
                }
            }
            // (The guard `wait_for` returns is not `Send`: dropped inside.)
            _ = async { drop(stop.wait_for(|stop| *stop).await) } => break,
        }
    }
    if let Err(e) = sqlx::Connection::close(conn).await {
        tracing::warn!(error = %e, "could not close the WAL checkpoints' connection");
    }
}

/// Spacing of WAL restarts that keep failing. Each attempt holds writers off for up to
/// [`crate::store::RESTART_BUSY_WAIT`], and while a long reader holds the WAL (an export, an
/// offline verify) every attempt fails: after each failure the next attempts wait twice as
/// many checkpoints, up to [`MAX_RESTART_BACKOFF`]. A single failure is routine (a state
/// change's own checkpoint or transaction was in the way); restarts failing until the spacing
/// reaches its maximum (about 7 s) are worth a warning, as the WAL keeps growing meanwhile.
#[derive(Default)]
struct RestartBackoff {
    /// Checkpoints to let pass before the next attempt.
    skip: u32,
    /// What `skip` becomes after the next failure.
    next: u32,
    /// Whether this run of failures was reported.
    warned: bool,
}

/// Most checkpoints let pass between two failing restarts (6.4 s at 200 ms).
const MAX_RESTART_BACKOFF: u32 = 32;

impl RestartBackoff {
    /// Whether to attempt a restart at this checkpoint.
    fn due(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    /// Record an attempt: reset on success; on failure, wait longer.
    fn after(&mut self, restarted: bool, frames: i64) {
        if restarted {
            *self = RestartBackoff::default();
            return;
        }
        self.skip = self.next.max(1);
        self.next = (self.skip * 2).min(MAX_RESTART_BACKOFF);
        tracing::debug!(wal_frames = frames, "could not start the WAL over");
        if self.skip == MAX_RESTART_BACKOFF && !self.warned {
            self.warned = true;
            tracing::warn!(
                wal_frames = frames,
                "the WAL could not be started over for seconds (a long reader or writer holds \
                 it) and keeps growing; retrying every {} checkpoints",
                MAX_RESTART_BACKOFF + 1
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failing restarts are tried at widening intervals, and the next success resets them.
    #[test]
    fn failing_restarts_back_off_and_a_success_resets() {
        let mut backoff = RestartBackoff::default();
        let mut attempts = Vec::new();
        for checkpoint in 0..200 {
            if backoff.due() {
                attempts.push(checkpoint);
                backoff.after(checkpoint >= 100, 0);
            }
        }
        let failing: Vec<_> = attempts.iter().copied().filter(|&c| c < 100).collect();
        assert_eq!(failing, [0, 2, 5, 10, 19, 36, 69]);
        let gaps: Vec<_> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g <= MAX_RESTART_BACKOFF as usize + 1));
        // After the first success (at 102), every checkpoint attempts again.
        assert!(attempts.ends_with(&[197, 198, 199]));
        assert_eq!(attempts.iter().filter(|&&c| c >= 102).count(), 98);

        // Five failures in a row are routine; the sixth (the spacing at its maximum) warns.
        let mut backoff = RestartBackoff::default();
        for _ in 0..5 {
            backoff.after(false, 0);
        }
        assert!(!backoff.warned);
        backoff.after(false, 0);
        assert!(backoff.warned);
        backoff.after(true, 0);
        assert!(!backoff.warned);
    }
}
