//! Group commit for audit records that accompany no other change (reads and cryptographic
//! uses, denials, failures): requests hand their record to one task, which appends every
//! record waiting at that moment in one transaction and commits once; each request is answered
//! only after the commit that holds its record. The chain and the one-record-per-request rule
//! are unchanged; records of requests that change state still go into their own transaction,
//! with the change (`ops::WriteScope`). Both paths share the single writer connection, so the
//! chain head is never claimed twice.

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::{append, AuditEvent};
use crate::error::{Error, Result};
use crate::store::Db;

/// Most records committed together.
const MAX_BATCH: usize = 256;

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
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let span = tracing::info_span!(
                    parent: None,
                    "audit.group_commit",
                    keyplane.audit.batch = batch.len()
                );
                for (_, _, requester) in &batch {
                    span.follows_from(requester);
                }
                let written = write(&db, &batch).instrument(span).await;
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

/// One transaction for the whole batch; all succeed or all fail.
async fn write(db: &Db, batch: &[Job]) -> Vec<Result<i64>> {
    let result = async {
        let mut tx = db.begin().await?;
        let mut seqs = Vec::with_capacity(batch.len());
        for (ev, _, _) in batch {
            seqs.push(append(&mut tx, ev).await?);
        }
        crate::telemetry::spans::db("COMMIT", "transaction", tx.commit()).await?;
        Ok::<_, Error>(seqs)
    }
    .await;
    match result {
        Ok(seqs) => seqs.into_iter().map(Ok).collect(),
        Err(e) => {
            tracing::error!(error = %e, records = batch.len(), "could not commit audit records");
            batch
                .iter()
                .map(|_| Err(Error::DatabaseUnavailable))
                .collect()
        }
    }
}
