//! The hash-chained audit log.
//!
//! Every request is recorded. A request that changes state appends its records inside the
//! same database transaction as the change (a failed change rolls back and a separate record
//! of the failure is appended instead); one that changes nothing hands its record to a group
//! commit ([`group_commit`]). Most requests append one record, some several under one request
//! id: a batch one per item, a `configure-key` one for each setting it changed (under the
//! setting's own action, and one for a setting Cedar refused) besides its own. What keyplane
//! does on its own is recorded as well (decision `system`), some of it in two steps, each its
//! own record: garbage collection appends `BeginCollectGarbage` before a removal and
//! `CollectGarbage` with its result after it, so no removal goes unrecorded and no record
//! claims one that did not happen. Each record's `hash` is SHA-256 over the previous record's hash and
//! the record's canonical JSON (fixed field order, `hash` excluded), so [`verify`] detects an
//! edited, removed or reordered record. The log is one such chain per writer ([`chains`]: one
//! on SQLite, several per node on PostgreSQL), each a range of `seq`. A chain's head is read
//! inside a write transaction that holds the chain's lock (SQLite: the database's write lock,
//! `BEGIN IMMEDIATE`, see `store`; PostgreSQL: the chain's advisory lock) until it commits, and
//! `seq` is the primary key, so two appends can never claim the same predecessor. Signed
//! checkpoints ([`checkpoint`]) add detection of tail truncation and of a chain re-hashed by
//! someone with database access; [`export`] reads records out in a stable JSON schema;
//! [`archive`] moves sealed segments out to files and, under a retention limit, out of the
//! database, and verifies the archive files and the live table as one log.
//!
//! `policy_hash` (the SHA-256 of the policy set that decided the request) was added after the
//! first records were written: it is left out of the canonical JSON when it is NULL, so
//! records written before it existed keep verifying, while every record that carries one has
//! it covered by its hash (clearing it later breaks the chain). `trace_id`, `user_agent` and
//! `front` (which front a request came through) were added the same way.

pub mod archive;
pub mod chains;
pub mod checkpoint;
pub mod cli;
pub mod export;
pub mod group_commit;

use crate::store::bulk::{self, Value};
use crate::store::{on, Conn, Dialect, Tx};
use ring::digest;
use serde::Serialize;

use crate::error::Result;
use crate::store::now_rfc3339;
use crate::telemetry::spans;
use tracing::Instrument;

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the caller knows about a request when it is recorded.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub request_id: String,
    pub principal: String,
    pub tenant: String,
    pub action: String,
    pub resource: String,
    /// `allow`, `deny`, or `not-evaluated` (the request failed before authorization).
    pub decision: &'static str,
    pub policies: Vec<String>,
    /// `ok` or an error code.
    pub outcome: String,
    pub source: String,
    /// SHA-256 (hex) of the policy set that made the decision; `None` when no policy set
    /// decided (the request failed before authorization, system records).
    pub policy_hash: Option<String>,
    /// W3C trace id of the request's trace, when tracing is on.
    pub trace_id: Option<String>,
    /// The client's `User-Agent` (at most 256 bytes).
    pub user_agent: Option<String>,
    /// The front the request came through (`native`, `aws-kms`); `None` for system records.
    pub front: Option<&'static str>,
    /// The access key a SigV4 request was signed with; `None` for bearer tokens and system
    /// records.
    pub access_key_id: Option<String>,
}

impl AuditEvent {
    /// A record of something keyplane did on its own (decision `system`, no front, source
    /// `-`): `principal` names the part of keyplane that did it, `request_id` is a new id
    /// starting `<prefix>-`.
    pub fn system(
        prefix: &str,
        principal: &str,
        tenant: &str,
        action: &str,
        resource: String,
    ) -> Self {
        AuditEvent {
            request_id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            principal: principal.into(),
            tenant: tenant.into(),
            action: action.into(),
            resource,
            decision: "system",
            policies: Vec::new(),
            outcome: "ok".into(),
            source: "-".into(),
            policy_hash: None,
            trace_id: None,
            user_agent: None,
            front: None,
            access_key_id: None,
        }
    }
}

/// A stored record, in the canonical field order that is hashed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub seq: i64,
    pub time: String,
    pub request_id: String,
    pub principal: String,
    pub tenant: String,
    pub action: String,
    pub resource: String,
    pub decision: String,
    /// JSON array of policy ids.
    pub policies: String,
    pub outcome: String,
    pub source: String,
    /// SHA-256 of the deciding policy set (absent from the hashed JSON when NULL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// Added after `policy_hash`; left out of the hashed JSON when NULL, like it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Added after `user_agent`; left out of the hashed JSON when NULL, like it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front: Option<String>,
    /// Added after `front`; left out of the hashed JSON when NULL, like it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    pub prev_hash: String,
    #[serde(skip)]
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record must carry.
    pub fn compute_hash(&self) -> String {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(self.prev_hash.as_bytes());
        ctx.update(b"\n");
        ctx.update(&body);
        hex::encode(ctx.finish())
    }
}

/// Append one record inside `conn`'s transaction. Returns its sequence number.
pub async fn append(conn: &mut Tx, ev: &AuditEvent) -> Result<i64> {
    let span = tracing::info_span!("audit.append", keyplane.audit.seq = tracing::field::Empty);
    let records = append_records(conn, &[ev]).instrument(span.clone()).await?;
    let seq = records.first().map_or(0, |r| r.seq);
    span.record("keyplane.audit.seq", seq);
    Ok(seq)
}

/// Most records one `INSERT` carries (18 bound values each, under SQLite's 32766 limit).
const MAX_ROWS_PER_INSERT: usize = 512;

/// Append `events` in order inside `conn`'s transaction, chained one to the next: one read
/// of the chain head, then one `INSERT` for all of them. Returns their records.
async fn append_records(conn: &mut Tx, events: &[&AuditEvent]) -> Result<Vec<AuditRecord>> {
    let head = read_head(conn).await?;
    if !fits(&head, events.len()) {
        tracing::error!(chain = conn.audit_chain(), "the audit chain is full");
        return Err(crate::error::Error::Internal);
    }
    let records = chain(head, events);
    insert_records(conn, &records).await?;
    Ok(records)
}

/// Key of the PostgreSQL advisory lock that orders the appends to chain 0, the shared chain;
/// chain `c`'s is this plus `c` (SQLite's `BEGIN IMMEDIATE` already holds the database's one
/// write lock). Only the writers of one chain ever meet on its lock (see [`chains`]).
const CHAIN_LOCK: i64 = 0x6b65_7970_6c61_6e65; // "keyplane"

/// The head of the chain `conn`'s records join (its last record's (seq, hash), or the chain's
/// origin and genesis while it is empty). On PostgreSQL it first takes that chain's lock for
/// the rest of the transaction, so no other transaction of the chain's writer can chain a
/// record after the same head.
async fn read_head(conn: &mut Tx) -> Result<(i64, String)> {
    let chain = conn.audit_chain();
    if conn.dialect() == Dialect::Postgres {
        spans::db("SELECT", "pg_advisory_xact_lock", async {
            on!(&mut *conn => |c| sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(CHAIN_LOCK.wrapping_add(chain))
                    .execute(c)
                    .await?
                    .rows_affected());
            Ok::<_, crate::error::Error>(())
        })
        .await?;
    }
    let head = spans::db("SELECT", "audit_log", chains::head(&mut *conn, chain)).await?;
    Ok(head.unwrap_or_else(|| chains::empty_head(chain)))
}

/// Whether `records` more records fit in the chain whose head is `head`.
fn fits(head: &(i64, String), records: usize) -> bool {
    chains::last(chains::of(head.0)) - head.0 >= records as i64
}

/// The records of `events`, chained after `head` (seq, hash).
pub fn chain(head: (i64, String), events: &[&AuditEvent]) -> Vec<AuditRecord> {
    let (mut seq, mut prev_hash) = head;
    let time = now_rfc3339();
    let mut records = Vec::with_capacity(events.len());
    for ev in events {
        seq += 1;
        let mut rec = AuditRecord {
            seq,
            time: time.clone(),
            request_id: ev.request_id.clone(),
            principal: ev.principal.clone(),
            tenant: ev.tenant.clone(),
            action: ev.action.clone(),
            resource: ev.resource.clone(),
            decision: ev.decision.to_string(),
            policies: serde_json::to_string(&ev.policies).unwrap_or_else(|_| "[]".into()),
            outcome: ev.outcome.clone(),
            source: ev.source.clone(),
            policy_hash: ev.policy_hash.clone(),
            trace_id: ev.trace_id.clone(),
            user_agent: ev.user_agent.clone(),
            front: ev.front.map(str::to_string),
            access_key_id: ev.access_key_id.clone(),
            prev_hash,
            hash: String::new(),
        };
        rec.hash = rec.compute_hash();
        prev_hash = rec.hash.clone();
        records.push(rec);
    }
    records
}

/// Values one record binds.
const COLUMNS: usize = 18;

/// The columns [`AuditRecord::values`] fills, in its order.
const AUDIT_LOG: bulk::Table = bulk::Table {
    name: "audit_log",
    columns: &[
        "seq",
        "time",
        "request_id",
        "principal",
        "tenant",
        "action",
        "resource",
        "decision",
        "policies",
        "outcome",
        "source",
        "policy_hash",
        "trace_id",
        "user_agent",
        "front",
        "access_key_id",
        "prev_hash",
        "hash",
    ],
};

impl AuditRecord {
    /// The values of one row of [`AUDIT_LOG`], in column order.
    fn values(&self) -> [Value<'_>; COLUMNS] {
        use Value::{Int, MaybeText, Text};
        [
            Int(self.seq),
            Text(&self.time),
            Text(&self.request_id),
            Text(&self.principal),
            Text(&self.tenant),
            Text(&self.action),
            Text(&self.resource),
            Text(&self.decision),
            Text(&self.policies),
            Text(&self.outcome),
            Text(&self.source),
            MaybeText(self.policy_hash.as_deref()),
            MaybeText(self.trace_id.as_deref()),
            MaybeText(self.user_agent.as_deref()),
            MaybeText(self.front.as_deref()),
            MaybeText(self.access_key_id.as_deref()),
            Text(&self.prev_hash),
            Text(&self.hash),
        ]
    }
}

/// Insert chained records, at most [`MAX_ROWS_PER_INSERT`] per statement. One statement is
/// atomic on its own, so outside a transaction `records` up to that size land all or none; a
/// record whose `seq` is taken (a stale head) fails the whole statement.
async fn insert_records(conn: impl Into<Conn<'_>>, records: &[AuditRecord]) -> Result<()> {
    let mut conn: Conn<'_> = conn.into();
    for chunk in records.chunks(MAX_ROWS_PER_INSERT) {
        let rows: Vec<_> = chunk.iter().map(AuditRecord::values).collect();
        spans::db(
            "INSERT",
            "audit_log",
            bulk::insert(&mut conn, &AUDIT_LOG, &rows),
        )
        .await?;
    }
    Ok(())
}

/// The first problem found in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainFault {
    /// A sequence number is missing (a record was removed) or out of order.
    Gap { expected: i64, found: i64 },
    /// The record does not link to its predecessor (removed or reordered records).
    BrokenLink { seq: i64 },
    /// The record's contents do not match its hash (edited).
    BadHash { seq: i64 },
    /// The record lies in a chain no process ever took (inserted).
    UnknownChain { seq: i64 },
}

impl std::fmt::Display for ChainFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainFault::Gap { expected, found } => write!(
                f,
                "record {found}: expected sequence {expected} (a record was removed or reordered)"
            ),
            ChainFault::BrokenLink { seq } => write!(
                f,
                "record {seq}: prev_hash does not match the previous record (removed or reordered)"
            ),
            ChainFault::BadHash { seq } => {
                write!(f, "record {seq}: contents do not match its hash (edited)")
            }
            ChainFault::UnknownChain { seq } => write!(
                f,
                "record {seq}: its chain ({}) was never taken by a node (inserted)",
                chains::of(*seq)
            ),
        }
    }
}

/// Result of a verification walk.
#[derive(Debug)]
pub struct VerifyReport {
    pub records: i64,
    /// Chains walked (see [`chains`]).
    pub chains: usize,
    /// The hash of the last record walked.
    pub head: String,
    pub fault: Option<ChainFault>,
}

/// One record by sequence number.
pub async fn get(pool: impl Into<Conn<'_>>, seq: i64) -> Result<Option<AuditRecord>> {
    on!(pool, {
        Ok(sqlx::query_as::<_, AuditRecord>(
        "SELECT seq, time, request_id, principal, tenant, action, resource, decision, policies, \
         outcome, source, policy_hash, trace_id, user_agent, front, access_key_id, prev_hash, hash FROM audit_log WHERE seq = $1",
    )
    .bind(seq)
    .fetch_optional(&mut *pool)
    .await?)
    })
}

/// Where a walk over the chains is: the record it expects next and that record's `prev_hash`.
#[derive(Debug)]
pub struct ChainWalk {
    /// The chains taken (rows of `audit_chains`); chain 0 is always known.
    taken: std::collections::BTreeSet<i64>,
    chain: Option<i64>,
    expected: i64,
    prev: String,
    /// Chains entered so far.
    pub chains: usize,
}

impl ChainWalk {
    /// A walk from the start, over records of chain 0 and of the chains in `taken`.
    pub fn new(taken: std::collections::BTreeSet<i64>) -> Self {
        ChainWalk {
            taken,
            chain: None,
            expected: 1,
            prev: GENESIS.to_string(),
            chains: 0,
        }
    }

    /// Move to the chain of `seq` if the walk is not in it yet (records are walked in `seq`
    /// order, so a chain is entered once, at its first record). A chain nobody took is a fault.
    pub fn enter(&mut self, seq: i64) -> Option<ChainFault> {
        let chain = chains::of(seq);
        if self.chain != Some(chain) {
            if chain != 0 && !self.taken.contains(&chain) {
                return Some(ChainFault::UnknownChain { seq });
            }
            self.chain = Some(chain);
            self.expected = chains::origin(chain) + 1;
            self.prev = GENESIS.to_string();
            self.chains += 1;
        }
        None
    }

    /// The sequence number the walk expects next.
    pub fn expected(&self) -> i64 {
        self.expected
    }

    /// The hash the next record must link to.
    pub fn prev(&self) -> &str {
        &self.prev
    }

    /// Check `rec` (after entering its chain): the number expected, a link to its
    /// predecessor, a hash that matches its contents.
    pub fn check(&mut self, rec: &AuditRecord) -> Option<ChainFault> {
        if let Some(fault) = self.enter(rec.seq) {
            return Some(fault);
        }
        if rec.seq != self.expected {
            Some(ChainFault::Gap {
                expected: self.expected,
                found: rec.seq,
            })
        } else if rec.prev_hash != self.prev {
            Some(ChainFault::BrokenLink { seq: rec.seq })
        } else if rec.compute_hash() != rec.hash {
            Some(ChainFault::BadHash { seq: rec.seq })
        } else {
            None
        }
    }

    /// Move past `rec` (which [`ChainWalk::check`] passed).
    pub fn advance(&mut self, rec: &AuditRecord) {
        self.prev = rec.hash.clone();
        self.expected += 1;
    }
}

/// Walk every chain from its first record.
pub async fn verify(pool: impl Into<Conn<'_>>) -> Result<VerifyReport> {
    let mut pool: Conn<'_> = pool.into();
    let taken = chains::taken(&mut pool).await?;
    on!(pool, {
        use futures_util::TryStreamExt;
        let mut rows = sqlx::query_as::<_, AuditRecord>(
        "SELECT seq, time, request_id, principal, tenant, action, resource, decision, policies, \
         outcome, source, policy_hash, trace_id, user_agent, front, access_key_id, prev_hash, hash FROM audit_log ORDER BY seq",
    )
    .fetch(&mut *pool);
        let mut walk = ChainWalk::new(taken);
        let mut count = 0;
        while let Some(rec) = rows.try_next().await? {
            if let Some(fault) = walk.check(&rec) {
                return Ok(VerifyReport {
                    records: count,
                    chains: walk.chains,
                    head: walk.prev,
                    fault: Some(fault),
                });
            }
            walk.advance(&rec);
            count += 1;
        }
        Ok(VerifyReport {
            records: count,
            chains: walk.chains,
            head: walk.prev,
            fault: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(policy_hash: Option<&str>) -> AuditRecord {
        AuditRecord {
            seq: 1,
            time: "2026-01-01T00:00:00Z".into(),
            request_id: "r".into(),
            principal: "p".into(),
            tenant: "t".into(),
            action: "Encrypt".into(),
            resource: "k".into(),
            decision: "allow".into(),
            policies: "[]".into(),
            outcome: "ok".into(),
            source: "127.0.0.1".into(),
            policy_hash: policy_hash.map(str::to_string),
            trace_id: None,
            user_agent: None,
            front: None,
            access_key_id: None,
            prev_hash: GENESIS.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn records_without_a_policy_hash_hash_as_before_the_column_existed() {
        let old = record(None);
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("policy_hash"), "{json}");
        assert!(
            json.ends_with(&format!("\"prev_hash\":\"{GENESIS}\"}}")),
            "{json}"
        );
        let new = record(Some("ab"));
        assert!(serde_json::to_string(&new)
            .unwrap()
            .contains("\"policy_hash\":\"ab\""));
        assert_ne!(
            old.compute_hash(),
            new.compute_hash(),
            "the hash covers policy_hash"
        );
    }

    #[test]
    fn the_front_is_hashed_when_set_and_absent_when_not() {
        let old = record(Some("ab"));
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("front"), "{json}");
        let mut new = old.clone();
        new.front = Some("native".into());
        assert!(serde_json::to_string(&new)
            .unwrap()
            .contains("\"front\":\"native\""));
        assert_ne!(old.compute_hash(), new.compute_hash());
    }
}
