//! Group commit for audit records that accompany no other change (reads and cryptographic
//! uses, denials, failures): requests hand their record to one task, which appends every
//! record waiting at that moment with one multi-row `INSERT` (atomic on its own: one round
//! trip to the database in the steady state, see [`write`]); each request is answered only
//! after the statement holding its record has committed. The chain and the
//! one-record-per-request rule are unchanged; records of requests that change state still go
//! into their own transaction, with the change (`ops::WriteScope`). `seq` is the table's
//! primary key, so the two paths can never claim the same predecessor: a batch chained after a
//! stale head fails whole and is chained again.

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::{chain, insert_records, read_head, AuditEvent, MAX_ROWS_PER_INSERT};
use crate::error::{Error, Result};
use crate::store::Db;

/// Most records committed together (one `INSERT`, so one atomic statement).
const MAX_BATCH: usize = 256;
/// How many times the task yields to other tasks before writing a batch, while each yield
/// still brings more records (see [`linger`]).
const MAX_LINGER_YIELDS: usize = 4;
const _: () = assert!(MAX_BATCH <= MAX_ROWS_PER_INSERT);

/// A record, where to answer, and the requester's `audit.append` span (the batch's
/// `audit.group_commit` span links to it, so a trace shows which commit held its record).
type Job = (AuditEvent, oneshot::Sender<Result<i64>>, tracing::Span);

/// Handle to the group-commit task.
#[derive(Clone)]
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Start the task (on the current tokio runtime).
    pub fn spawn(db: Db) -> Self {
        let (jobs, mut rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut head = None;
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                linger(&mut rx, &mut batch).await;
                crate::telemetry::metrics::metrics().audit_batch(batch.len());
                let span = tracing::info_span!(
                    parent: None,
                    "audit.group_commit",
                    keyplane.audit.batch = batch.len()
                );
                for (_, _, requester) in &batch {
                    span.follows_from(requester);
                }
                let written = write(&db, &mut head, &batch).instrument(span).await;
                for ((_, reply, requester), result) in batch.drain(..).zip(written) {
                    if let Ok(seq) = &result {
                        requester.record("keyplane.audit.seq", *seq);
                    }
                    let _ = reply.send(result);
                }
            }
        });
        GroupCommit { jobs }
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

/// Append the whole batch with one `INSERT` (atomic on its own: all succeed or all fail),
/// chained after `head`, the chain head as of this task's last write. Records of requests
/// that change state are appended in their own transactions, so `head` can be stale: then the
/// first `seq` is taken, the statement fails as a whole, and the batch is chained again after
/// the head read from the database. `head` is `None` until read and after any failure.
async fn write(db: &Db, head: &mut Option<(i64, String)>, batch: &[Job]) -> Vec<Result<i64>> {
    let events: Vec<&AuditEvent> = batch.iter().map(|(ev, _, _)| ev).collect();
    let mut outcome = Err(Error::DatabaseUnavailable);
    for _attempt in 0..2 {
        let known = head.take();
        outcome = async {
            let mut conn = db.bookkeeping_connection().await?;
            let after = match known {
                Some(h) => h,
                None => read_head(&mut conn).await?,
            };
            let records = chain(after, &events);
            insert_records(&mut conn, &records).await?;
            Ok::<_, Error>(records)
        }
        .await;
        if outcome.is_ok() {
            break;
        }
    }
    match outcome {
        Ok(records) => {
            *head = records.last().map(|r| (r.seq, r.hash.clone()));
            records.iter().map(|r| Ok(r.seq)).collect()
        }
        Err(e) => {
            tracing::error!(error = %e, records = batch.len(), "could not commit audit records");
            batch
                .iter()
                .map(|_| Err(Error::DatabaseUnavailable))
                .collect()
        }
    }
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
        }
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
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let group = GroupCommit::spawn(db.clone());
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
        let report = super::super::verify(db.reader()).await.unwrap();
        assert_eq!(report.fault, None);
        assert_eq!(report.records, n as i64);
        let ids: Vec<String> = sqlx::query_scalar("SELECT request_id FROM audit_log ORDER BY seq")
            .fetch_all(db.reader())
            .await
            .unwrap();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), n);
    }
}
