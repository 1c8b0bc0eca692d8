//! Group commit for audit records that accompany no other change (reads and cryptographic
//! uses, denials, failures): requests hand their record to one task, which appends every
//! record waiting at that moment with one multi-row `INSERT` (atomic on its own, see
//! [`append`]); each request is answered only after the statement holding its record has
//! committed. The chain and the one-record-per-request rule are unchanged; records of requests
//! that change state still go into their own transaction, with the change (`ops::WriteScope`).
//! `seq` is the table's primary key, so the two paths can never claim the same predecessor: a
//! batch chained after a stale head fails whole and is chained again.
//!
//! The task writes through a connection of its own, driven in place on its tokio worker
//! ([`crate::store::inline`]): sqlx would hand every statement to the connection's own thread
//! and back, and that hand-off cost more than the `INSERT`. That connection leaves WAL
//! checkpoints to a second task, which checkpoints every [`WAL_CHECKPOINT_EVERY`] on a
//! connection of its own. Once the WAL holds [`WAL_RESTART_AFTER`] frames, that task also
//! starts it over ([`restart_wal`]), which holds writers off: it first takes the *write gate*
//! that the group commit holds while it writes a batch, so the batch waits for it on the gate
//! and is woken as soon as the restart is done (it would otherwise meet `SQLITE_BUSY` and
//! poll, and the restart's busy handler would sleep while a batch holds the lock).
//! [`GroupCommit::close`] stops both at shutdown.
//!
//! On PostgreSQL there is no thread hand-off to save and no WAL to tend, but every statement
//! is a network round trip, during which one writer would leave the others' records waiting:
//! [`POSTGRES_WRITERS`] tasks take batches from the one queue in turn, each writing an audit
//! chain of its own ([`super::chains`]) whose head it alone moves, so a batch is one `INSERT`
//! committed on its own, with no lock and no read of the head.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::chains::{self, Purpose};
use super::{
    chain, fits, insert_records, insert_records_inline, read_head_inline, AuditEvent, AuditRecord,
    MAX_ROWS_PER_INSERT,
};
use crate::error::{Error, Result};
use crate::store::sqlite::inline::{is_constraint, Inline};
use crate::store::sqlite::{checkpoint_wal, restart_wal};
use crate::store::Db;
use crate::telemetry::spans;

/// Most records committed together (one `INSERT`, so one atomic statement).
const MAX_BATCH: usize = 256;
/// How many times the task yields to other tasks before writing a batch, while each yield
/// still brings more records (see [`linger`]).
const MAX_LINGER_YIELDS: usize = 4;
const _: () = assert!(MAX_BATCH <= MAX_ROWS_PER_INSERT);
/// Group-commit writers on PostgreSQL, each with a chain of its own: while one waits for its
/// `INSERT` to commit, the next collects the records that arrived meanwhile. Four keep the
/// database busy from one node on this machine's two cores (see `docs/performance.md`).
pub const POSTGRES_WRITERS: usize = 4;
/// How often the WAL is checkpointed while the task runs.
pub const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// WAL frames (pages of 4 KiB) past which a checkpoint also starts the WAL over, holding
/// writers off meanwhile (5–9 ms here, most of it three syncs). At 25k `encrypt`s a second
/// the WAL grows by about 1600 frames between checkpoints: it then starts over about every
/// half second, records wait for that about 1.5% of the time, and the WAL stays under about
/// 32 MB (without restarts it grew by about 40 MB a second).
pub const WAL_RESTART_AFTER: i64 = 4096;

/// When the checkpoint task runs and when it starts the WAL over.
#[derive(Clone, Copy)]
struct WalCheckpoints {
    every: Duration,
    restart_after: i64,
}

const WAL_CHECKPOINTS: WalCheckpoints = WalCheckpoints {
    every: WAL_CHECKPOINT_EVERY,
    restart_after: WAL_RESTART_AFTER,
};

/// A record, where to answer, and the requester's `audit.append` span (the batch's
/// `audit.group_commit` span links to it, so a trace shows which commit held its record).
type Job = (AuditEvent, oneshot::Sender<Result<i64>>, tracing::Span);

/// Handle to the group-commit task.
#[derive(Clone)]
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
    /// Set by [`GroupCommit::close`].
    stop: Arc<watch::Sender<bool>>,
    /// The task and the checkpoints, awaited by the first [`GroupCommit::close`].
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl GroupCommit {
    /// Open the task's connection and the checkpoints' one, then start both tasks (on the
    /// current tokio runtime).
    pub async fn start(db: Db) -> Result<Self> {
        Self::start_with(db, WAL_CHECKPOINTS).await
    }

    async fn start_with(db: Db, wal: WalCheckpoints) -> Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let (stop, stopped) = watch::channel(false);
        let gate = WriteGate::default();
        let mut tasks = Vec::new();
        match db.sqlite() {
            Some(pools) => {
                let conn = pools.separate_writer().await?;
                let checkpoints = pools.checkpoint_connection().await?;
                let (ready, started) = oneshot::channel();
                let target = Target::Sqlite(conn, gate.clone(), ready);
                tasks.push(tokio::spawn(run(db.clone(), target, rx, stopped.clone())));
                started.await.map_err(|_| Error::DatabaseUnavailable)??;
                tasks.push(tokio::spawn(checkpoint_wal_until_stopped(
                    checkpoints,
                    wal,
                    gate,
                    stopped,
                )));
            }
            None => {
                for _ in 0..POSTGRES_WRITERS {
                    let chain = chains::take(&db, Purpose::GroupCommit).await?;
                    let target = Target::Postgres(chain);
                    tasks.push(tokio::spawn(run(
                        db.clone(),
                        target,
                        rx.clone(),
                        stopped.clone(),
                    )));
                }
            }
        }
        Ok(GroupCommit {
            jobs,
            stop: Arc::new(stop),
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }

    /// Stop taking records, commit those already handed over, and close both connections
    /// (at shutdown, before the pools close: the last connection to close checkpoints the WAL
    /// into the database file and removes it, so a stopped node's file holds every record).
    /// Appends after this fail with [`Error::DatabaseUnavailable`].
    pub async fn close(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Append `ev` and wait until the transaction holding it has committed (an
    /// `audit.append` span in the caller's trace, linked from the batch's span).
    pub async fn append(&self, ev: AuditEvent) -> Result<i64> {
        let span = tracing::info_span!(
            "audit.append",
            keyplane.audit.seq = tracing::field::Empty,
            keyplane.audit.group_commit = true
        );
        let (reply, done) = oneshot::channel();
        let wait = async {
            self.jobs
                .send((ev, reply, tracing::Span::current()))
                .await
                .map_err(|_| Error::DatabaseUnavailable)?;
            done.await.map_err(|_| Error::DatabaseUnavailable)?
        };
        wait.instrument(span).await
    }
}

/// The queue the writers take their batches from, in turn.
type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>;

/// What a writer task writes to.
enum Target {
    /// SQLite: the group commit's own connection, the write gate it holds while it writes a
    /// batch, and where to say whether taking the connection from sqlx's worker worked.
    Sqlite(
        sqlx::SqliteConnection,
        WriteGate,
        oneshot::Sender<Result<()>>,
    ),
    /// PostgreSQL: the chain this writer took.
    Postgres(i64),
}

/// Where a writer task writes its batches.
enum Writer<'c> {
    /// SQLite: a connection of its own, driven in place, on the shared chain.
    Sqlite(Inline<'c>),
    /// PostgreSQL: a chain of its own, one pooled connection per batch.
    Postgres(Db, i64),
}

impl Writer<'_> {
    /// Append `events` as one batch; `known` is the head after this task's last batch.
    async fn append(
        &mut self,
        known: Option<(i64, String)>,
        events: &[&AuditEvent],
    ) -> std::result::Result<Vec<AuditRecord>, String> {
        match self {
            Writer::Sqlite(inline) => append(inline, known, events)
                .await
                .map_err(|e| e.to_string()),
            Writer::Postgres(db, chain) => append_to_own_chain(db, chain, known, events)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// Append `events` to `chain`, which this task alone writes: after `known`, the head as of its
/// last batch, or after a failed batch (which may have committed all the same) after the head
/// read again. One `INSERT`, committed on its own. A full chain is swapped for a new one.
async fn append_to_own_chain(
    db: &Db,
    chain_id: &mut i64,
    known: Option<(i64, String)>,
    events: &[&AuditEvent],
) -> Result<Vec<AuditRecord>> {
    let mut head = match known {
        Some(head) => head,
        None => chains::head(db, *chain_id)
            .await?
            .unwrap_or_else(|| chains::empty_head(*chain_id)),
    };
    if !fits(&head, events.len()) {
        *chain_id = chains::take(db, Purpose::GroupCommit).await?;
        head = chains::empty_head(*chain_id);
    }
    let records = chain(head, events);
    spans::db("INSERT", "audit_log", insert_records(db, &records)).await?;
    Ok(records)
}

/// A writer task: on SQLite take the connection from sqlx's worker and report whether that
/// worked; then take batches from `queue` (in turn with the other writers) and commit them,
/// until every [`GroupCommit`] is dropped or [`GroupCommit::close`] is called (then what was
/// already handed over is still committed), and close the connection.
async fn run(db: Db, target: Target, queue: Queue, mut stop: watch::Receiver<bool>) {
    let (mut conn, ready, gate, chain_id) = match target {
        Target::Sqlite(conn, gate, ready) => (Some(conn), Some(ready), Some(gate), 0),
        Target::Postgres(chain) => (None, None, None, chain),
    };
    let mut writer = match conn.as_mut() {
        Some(conn) => match Inline::take(conn, db.busy_wait()).await {
            Ok(inline) => Writer::Sqlite(inline),
            Err(e) => {
                if let Some(ready) = ready {
                    let _ = ready.send(Err(e));
                }
                return;
            }
        },
        None => Writer::Postgres(db, chain_id),
    };
    if let Some(ready) = ready {
        let _ = ready.send(Ok(()));
    }
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut head = None;
    let mut closing = false;
    loop {
        let received = {
            let mut rx = queue.lock().await;
            let received = tokio::select! {
                received = rx.recv_many(&mut batch, MAX_BATCH) => received,
                _ = stop.wait_for(|stop| *stop), if !closing => {
                    // Refuse new records; the buffered ones are still received, then `0`.
                    rx.close();
                    closing = true;
                    continue;
                }
            };
            if received > 0 {
                linger(&mut rx, &mut batch).await;
            }
            received
        };
        if received == 0 {
            break;
        }
        crate::telemetry::metrics::metrics().audit_batch(batch.len());
        let span = tracing::info_span!(
            parent: None,
            "audit.group_commit",
            keyplane.audit.batch = batch.len()
        );
        for (_, _, requester) in &batch {
            span.follows_from(requester);
        }
        let events: Vec<&AuditEvent> = batch.iter().map(|(ev, _, _)| ev).collect();
        let written = {
            let _writing = match &gate {
                Some(gate) => Some(gate.lock().await),
                None => None,
            };
            writer.append(head.take(), &events).instrument(span).await
        };
        let seqs: Vec<Result<i64>> = match written {
            Ok(records) => {
                head = records.last().map(|r| (r.seq, r.hash.clone()));
                records.iter().map(|r| Ok(r.seq)).collect()
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "could not commit audit records");
                batch
                    .iter()
                    .map(|_| Err(Error::DatabaseUnavailable))
                    .collect()
            }
        };
        for ((_, reply, requester), result) in batch.drain(..).zip(seqs) {
            if let Ok(seq) = &result {
                requester.record("keyplane.audit.seq", *seq);
            }
            let _ = reply.send(result);
        }
    }
    drop(writer);
    if let Some(conn) = conn {
        if let Err(e) = sqlx::Connection::close(conn).await {
            tracing::warn!(error = %e, "could not close the audit group commit's connection");
        }
    }
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

/// Let requests that are ready to run reach their audit append before the batch is written:
/// yield to the scheduler and take what arrived, again while a yield brings more (at most
/// [`MAX_LINGER_YIELDS`] times). An idle node loses nothing (with no other task ready, a
/// yield returns at once); a loaded one writes fewer, larger batches, and every batch costs
/// two thread hand-offs to sqlx's SQLite worker and one WAL commit whatever its size (on
/// `encrypt` under load, from about 6 records a batch to about 10). PostgreSQL's
/// `commit_delay` does the same with a sleep; a yield never waits on an idle CPU.
async fn linger(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    for _ in 0..MAX_LINGER_YIELDS {
        if batch.len() >= MAX_BATCH {
            return;
        }
        tokio::task::yield_now().await;
        let before = batch.len();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if batch.len() == before {
            return;
        }
    }
}

/// Append `events` as one batch and return their records. With `known`, the chain head as of
/// this task's last write, that is one `INSERT`. Records of requests that change state are
/// appended in their own transactions, so `known` can be stale: then the first `seq` is taken,
/// the statement fails as a whole, and the batch is chained again after the head read inside a
/// transaction that holds the write lock (`None` goes there directly).
async fn append(
    conn: &mut Inline<'_>,
    known: Option<(i64, String)>,
    events: &[&AuditEvent],
) -> rusqlite::Result<Vec<AuditRecord>> {
    if let Some(after) = known {
        let records = chain(after, events);
        let insert = conn.run(|c| insert_records_inline(c, &records));
        match spans::db("INSERT", "audit_log", insert).await {
            Ok(()) => return Ok(records),
            Err(e) if is_constraint(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let transaction = conn.run(|c| append_after_head(c, events));
    spans::db("INSERT", "audit_log", transaction).await
}

/// Read the head and append `events` after it, in one `BEGIN IMMEDIATE` transaction; rolled
/// back on any failure, so a busy retry starts afresh.
fn append_after_head(
    c: &rusqlite::Connection,
    events: &[&AuditEvent],
) -> rusqlite::Result<Vec<AuditRecord>> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    let written = read_head_inline(c)
        .map(|head| chain(head, events))
        .and_then(|records| insert_records_inline(c, &records).map(|()| records))
        .and_then(|records| c.execute_batch("COMMIT").map(|()| records));
    if written.is_err() {
        let _ = c.execute_batch("ROLLBACK");
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            request_id: format!("r-{n}"),
            principal: "Keyplane::User::\"p\"".into(),
            tenant: "t".into(),
            action: "Encrypt".into(),
            resource: "Keyplane::Key::\"k\"".into(),
            decision: "allow",
            policies: vec!["key-grantees-use-key".into()],
            outcome: "ok".into(),
            source: "127.0.0.1".into(),
            policy_hash: None,
            trace_id: None,
            user_agent: None,
            front: None,
        }
    }

    const DB_FILE: &str = "t.db";

    /// A fresh, migrated database in a temporary directory (kept while the guard lives).
    async fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join(DB_FILE).display());
        (dir, Db::open(&url).await.unwrap())
    }

    /// Lingering takes the records of requests that were ready to run (on this single-threaded
    /// test runtime, the spawned tasks run only when the task yields), and returns at once
    /// when nothing else is ready.
    #[tokio::test]
    async fn linger_takes_records_of_tasks_ready_to_run() {
        let (jobs, mut rx) = mpsc::channel::<Job>(64);
        for n in 0..10 {
            let jobs = jobs.clone();
            tokio::spawn(async move {
                let (reply, _done) = oneshot::channel();
                let job = (event(n), reply, tracing::Span::none());
                jobs.send(job).await.unwrap();
            });
        }
        let mut batch = Vec::new();
        linger(&mut rx, &mut batch).await;
        assert_eq!(batch.len(), 10);
        linger(&mut rx, &mut batch).await;
        assert_eq!(batch.len(), 10);
        assert!(rx.is_empty());
    }

    /// Batches interleaved with records appended in their own transactions (a stale cached
    /// head) keep one unbroken chain, with every record once.
    #[tokio::test]
    async fn batches_and_transactional_appends_keep_one_chain() {
        let (_dir, db) = temp_db().await;
        let group = GroupCommit::start(db.clone()).await.unwrap();
        let mut n = 0;
        for _ in 0..5 {
            let batch: Vec<_> = (0..20)
                .map(|_| {
                    n += 1;
                    group.append(event(n))
                })
                .collect();
            let seqs = futures_util::future::try_join_all(batch).await.unwrap();
            assert_eq!(seqs.len(), 20);
            // A state change's record, in its own transaction, behind the task's back.
            let mut tx = db.begin().await.unwrap();
            n += 1;
            super::super::append(&mut tx, &event(n)).await.unwrap();
            tx.commit().await.unwrap();
        }
        let report = super::super::verify(&db).await.unwrap();
        assert_eq!(report.fault, None);
        assert_eq!(report.records, n as i64);
        let ids: Vec<String> = sqlx::query_scalar("SELECT request_id FROM audit_log ORDER BY seq")
            .fetch_all(db.sqlite().unwrap().reader())
            .await
            .unwrap();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), n);
    }

    /// While a transaction of the writer pool holds the write lock, a group commit waits for it
    /// without blocking the runtime (this test's runtime has one thread, which the group
    /// commit's task shares), then chains its record after the transaction's.
    #[tokio::test]
    async fn waits_for_a_writer_without_blocking_the_runtime() {
        let (_dir, db) = temp_db().await;
        let group = GroupCommit::start(db.clone()).await.unwrap();
        group.append(event(1)).await.unwrap();
        let mut tx = db.begin().await.unwrap();
        let in_tx = super::super::append(&mut tx, &event(2)).await.unwrap();
        let mut waiting = tokio::spawn({
            let group = group.clone();
            async move { group.append(event(3)).await }
        });
        let started = std::time::Instant::now();
        let early = tokio::time::timeout(Duration::from_millis(100), &mut waiting).await;
        assert!(early.is_err(), "the append did not wait for the writer");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the runtime was blocked"
        );
        tx.commit().await.unwrap();
        let seq = waiting.await.unwrap().unwrap();
        assert_eq!(seq, in_tx + 1);
        let report = super::super::verify(&db).await.unwrap();
        assert_eq!((report.fault, report.records), (None, 3));
    }

    /// The group commit's connection never checkpoints; the task's checkpoints copy its
    /// records into the database file itself (read here with `immutable`, which ignores the
    /// WAL).
    #[tokio::test]
    async fn checkpoints_move_records_into_the_database_file() {
        let (dir, db) = temp_db().await;
        let path = dir.path().join(DB_FILE);
        let group = GroupCommit::start(db.clone()).await.unwrap();
        let appends: Vec<_> = (0..50).map(|n| group.append(event(n))).collect();
        futures_util::future::try_join_all(appends).await.unwrap();
        let in_file = || {
            let url = format!("file:{}?immutable=1", path.display());
            let flags =
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
            let file = rusqlite::Connection::open_with_flags(url, flags).unwrap();
            // Before the first checkpoint the file may not even hold the table yet.
            file.query_row("SELECT count(*) FROM audit_log", [], |r| r.get::<_, i64>(0))
                .unwrap_or(0)
        };
        assert!(
            in_file() < 50,
            "records reached the file before any checkpoint"
        );
        tokio::time::sleep(3 * WAL_CHECKPOINT_EVERY).await;
        assert_eq!(in_file(), 50);
    }

    /// Under appends that never pause, the WAL still starts over (`wal_restarts` counts the
    /// checkpoint task's restarts) and stays small. With `PASSIVE` checkpoints alone it grew
    /// with every record, about three times faster than the database file.
    #[tokio::test]
    async fn wal_starts_over_under_sustained_appends() {
        let (dir, db) = temp_db().await;
        let wal_path = dir.path().join(format!("{DB_FILE}-wal"));
        let wal = WalCheckpoints {
            every: Duration::from_millis(20),
            restart_after: 16,
        };
        let group = GroupCommit::start_with(db.clone(), wal).await.unwrap();
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let group = group.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    while tokio::time::Instant::now() < until {
                        group.append(event(w * 1_000_000 + n)).await.unwrap();
                        n += 1;
                    }
                    i64::try_from(n).unwrap()
                })
            })
            .collect();
        let mut largest = 0;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
            largest = largest.max(std::fs::metadata(&wal_path).unwrap().len());
        }
        let mut appended: i64 = 0;
        for writer in writers {
            appended += writer.await.unwrap();
        }
        group.close().await;
        let restarted: i64 = sqlx::query_scalar("SELECT count FROM wal_restarts")
            .fetch_one(db.sqlite().unwrap().reader())
            .await
            .unwrap();
        let records = std::fs::metadata(dir.path().join(DB_FILE)).unwrap().len();
        eprintln!("{appended} records, {restarted} restarts, WAL at most {largest} bytes, database {records} bytes");
        assert!(restarted >= 3, "the WAL started over {restarted} times");
        assert!(
            2 * largest < records,
            "the WAL reached {largest} bytes for {records} bytes of records"
        );
        let report = super::super::verify(&db).await.unwrap();
        assert_eq!((report.fault, report.records), (None, appended));
    }

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

    /// Closing commits the records already handed over, then refuses more; once the pools are
    /// closed too, the database file alone holds every record (no WAL left behind).
    #[tokio::test]
    async fn close_commits_what_was_handed_over_and_leaves_no_wal() {
        let (dir, db) = temp_db().await;
        let group = GroupCommit::start(db.clone()).await.unwrap();
        let handed: Vec<_> = (0..20)
            .map(|n| {
                tokio::spawn({
                    let group = group.clone();
                    async move { group.append(event(n)).await }
                })
            })
            .collect();
        // On this one-thread runtime the spawned appends run now, up to waiting for replies.
        tokio::task::yield_now().await;
        group.close().await;
        for append in handed {
            append.await.unwrap().unwrap();
        }
        assert!(matches!(
            group.append(event(21)).await,
            Err(Error::DatabaseUnavailable)
        ));
        db.close().await;
        assert!(!dir.path().join(format!("{DB_FILE}-wal")).exists());
        let db = Db::open(&format!("sqlite://{}", dir.path().join(DB_FILE).display()))
            .await
            .unwrap();
        let report = super::super::verify(&db).await.unwrap();
        assert_eq!((report.fault, report.records), (None, 20));
    }
}
