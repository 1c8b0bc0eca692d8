//! Group commit for audit records that accompany no other change (reads and cryptographic
//! uses, denials, failures): requests hand their record to a queue; a writer takes every record
//! waiting at that moment and appends them with one multi-row `INSERT` (atomic on its own);
//! each request is answered only after the statement holding its record has committed. The
//! chain is unchanged, and so is what a request records; records of requests that change state
//! still go into their own transaction, with the change (`ops::WriteScope`).
//!
//! SQLite: one writer, on the shared chain, through a connection of its own driven in place,
//! with the WAL checkpoints beside it (`store::sqlite::chain_writer`, which says why). `seq`
//! is the table's primary key, so a batch and a state change's transaction can never claim the
//! same predecessor: a batch chained after a stale head fails whole and is chained again.
//!
//! PostgreSQL: there is no thread hand-off to save and no WAL to tend, but every statement is
//! a network round trip, during which one writer would leave the others' records waiting:
//! [`POSTGRES_WRITERS`] tasks take batches from the one queue in turn, each writing an audit
//! chain of its own ([`super::chains`]) whose head it alone moves, so a batch is one `INSERT`
//! committed on its own, with no lock and no read of the head.
//!
//! [`GroupCommit::close`] stops the writers (and the WAL checkpoints) at shutdown.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::chains::{self, Purpose};
use super::{chain, fits, insert_records, AuditEvent, AuditRecord, AUDIT_LOG, MAX_ROWS_PER_INSERT};
use crate::error::{Error, Result};
use crate::store::sqlite::chain_writer::{Appender, ChainWriter, HeadQuery, WalCheckpoints};
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
/// A record, where to answer, and the requester's `audit.append` span (the batch's
/// `audit.group_commit` span links to it, so a trace shows which commit held its record).
type Job = (AuditEvent, oneshot::Sender<Result<i64>>, tracing::Span);

/// Handle to the group-commit writers.
#[derive(Clone)]
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
    /// Set by [`GroupCommit::close`].
    stop: Arc<watch::Sender<bool>>,
    /// The writers and the WAL checkpoints, awaited by the first [`GroupCommit::close`].
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl GroupCommit {
    /// Start the writers (on the current tokio runtime): on SQLite one, with the WAL
    /// checkpoints beside it; on PostgreSQL [`POSTGRES_WRITERS`], each on a chain it takes.
    pub async fn start(db: Db) -> Result<Self> {
        Self::start_with(db, crate::store::sqlite::chain_writer::WAL_CHECKPOINTS).await
    }

    async fn start_with(db: Db, wal: WalCheckpoints) -> Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        match db.sqlite() {
            Some(pools) => {
                let (writer, checkpoints) = pools
                    .chain_writer(db.busy_wait(), wal, stopped.clone())
                    .await?;
                let (ready, started) = oneshot::channel();
                let target = Target::Sqlite(writer, ready);
                tasks.push(tokio::spawn(run(db.clone(), target, rx, stopped)));
                started.await.map_err(|_| Error::DatabaseUnavailable)??;
                tasks.push(checkpoints);
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

    /// Stop taking records, commit those already handed over, and stop the writers (at
    /// shutdown, before the pools close: on SQLite the last connection to close checkpoints
    /// the WAL into the database file and removes it, so a stopped node's file holds every
    /// record).
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
    /// SQLite: the shared chain's writer, and where to say whether taking its connection from
    /// sqlx's worker worked.
    Sqlite(ChainWriter, oneshot::Sender<Result<()>>),
    /// PostgreSQL: the chain this writer took.
    Postgres(i64),
}

/// Where a writer task writes its batches.
enum Writer<'c> {
    /// SQLite: the shared chain, through a connection driven in place.
    Sqlite(Appender<'c>),
    /// PostgreSQL: a chain of its own, one pooled connection per batch.
    Postgres(Db, i64),
}

/// The head of SQLite's one chain, the shared chain 0.
fn shared_head() -> HeadQuery {
    HeadQuery {
        sql: chains::HEAD_SQL,
        bounds: [chains::origin(0), chains::last(0)],
        empty: chains::empty_head(0),
    }
}

impl Writer<'_> {
    /// Append `events` as one batch; `known` is the head after this task's last batch.
    async fn append(
        &mut self,
        known: Option<(i64, String)>,
        events: &[&AuditEvent],
    ) -> Result<Vec<AuditRecord>> {
        match self {
            Writer::Sqlite(appender) => {
                appender
                    .append(
                        known,
                        &shared_head(),
                        &AUDIT_LOG,
                        |head| chain(head, events),
                        AuditRecord::values,
                    )
                    .await
            }
            Writer::Postgres(db, chain) => append_to_own_chain(db, chain, known, events).await,
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
    let (mut sqlite, ready, chain_id) = match target {
        Target::Sqlite(writer, ready) => (Some(writer), Some(ready), 0),
        Target::Postgres(chain) => (None, None, chain),
    };
    let mut writer = match sqlite.as_mut() {
        Some(sqlite) => match sqlite.take().await {
            Ok(appender) => Writer::Sqlite(appender),
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
        let written = writer.append(head.take(), &events).instrument(span).await;
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
    if let Some(sqlite) = sqlite {
        sqlite.close().await;
    }
}

/// Let requests that are ready to run reach their audit append before the batch is written:
/// yield to the scheduler and take what arrived, again while a yield brings more (at most
/// [`MAX_LINGER_YIELDS`] times). An idle node loses nothing (with no other task ready, a
/// yield returns at once); a loaded one writes fewer, larger batches, and every batch costs
/// one commit whatever its size (SQLite: a WAL commit; PostgreSQL: a round trip), so on
/// `encrypt` under load batches grew from about 6 records to about 10. PostgreSQL's
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::chain_writer::WAL_CHECKPOINT_EVERY;
    use std::time::Duration;

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
            access_key_id: None,
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
