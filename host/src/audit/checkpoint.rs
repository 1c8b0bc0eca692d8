//! Signed checkpoints of the audit log.
//!
//! After `audit.checkpoint_every_records` new records of a chain or
//! `audit.checkpoint_interval_seconds`, the node signs the chain's head (sequence, hash,
//! time) with the HSM's audit key
//! ([`crate::hsm::audit_key`]) and stores the checkpoint twice: in the `audit_checkpoints`
//! table and appended to `<data-dir>/audit-checkpoints.jsonl` (ship that file to write-once
//! storage). The public key is written to `<data-dir>/audit-signing-key.pem` and printed by
//! `keyplane audit public-key`.
//!
//! What [`verify`] adds to the hash chain: a record changed and the chain re-hashed by someone
//! with database access no longer matches the signed head hash; records removed from the tail
//! after a checkpoint leave a checkpoint pointing past the end of its chain; a checkpoint deleted
//! from the database is still in the file (and the other way round); a forged checkpoint does
//! not verify under the public key. Records after the last checkpoint are protected by the
//! chain only, until the next checkpoint.
//!
//! The log is several chains ([`super::chains`]): a node signs the shared chain (whichever
//! node gets there first) and the chains it took itself, and at shutdown it signs the heads of
//! its own chains, which no process writes again; the shared chain's tail is signed by the next
//! node to run. A cluster's checkpoints are thus signed by several keys, one per node's HSM,
//! and verified against all of them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::{on, Conn};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::digest;
use serde::{Deserialize, Serialize};

use crate::config::AuditConfig;
use crate::error::{Error, Result};
use crate::hsm::{Hsm, Obj};
use crate::store::{now_rfc3339, Db};

/// The public key file in the data dir.
pub const PUBLIC_KEY_FILE: &str = "audit-signing-key.pem";
/// The append-only copy of the checkpoints in the data dir.
pub const CHECKPOINT_FILE: &str = "audit-checkpoints.jsonl";

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Checkpoint {
    /// Sequence number of the record that was the chain head.
    pub seq: i64,
    pub head_hash: String,
    pub time: String,
    /// SHA-256 (hex) of the signing key's SubjectPublicKeyInfo.
    pub key_fingerprint: String,
    /// ECDSA P-256 SHA-256 signature, DER, base64.
    pub signature: String,
}

/// The bytes a checkpoint signs.
pub fn signed_message(seq: i64, head_hash: &str, time: &str) -> Vec<u8> {
    format!("keyplane-audit-checkpoint-v1\n{seq}\n{head_hash}\n{time}\n").into_bytes()
}

/// SHA-256 hex of a public key (SubjectPublicKeyInfo DER).
pub fn fingerprint(spki_der: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, spki_der))
}

/// Signs checkpoints for one node.
pub struct Checkpointer {
    hsm: Arc<Hsm>,
    /// The audit key's private handle, found again when the HSM starts over.
    key: std::sync::Mutex<Obj>,
    fingerprint: String,
    file: PathBuf,
}

impl Checkpointer {
    /// Find or make the audit key and publish its public key in the data dir.
    pub fn new(hsm: Arc<Hsm>, data_dir: &Path) -> anyhow::Result<Self> {
        let (key, spki) = hsm.audit_signing_key()?;
        let pem = crate::algorithms::public_key::spki_pem(&spki)?;
        let path = data_dir.join(PUBLIC_KEY_FILE);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(pem.as_str()) {
            std::fs::write(&path, &pem)?;
        }
        Ok(Checkpointer {
            hsm,
            key: std::sync::Mutex::new(key),
            fingerprint: fingerprint(&spki),
            file: data_dir.join(CHECKPOINT_FILE),
        })
    }

    /// The audit key's fingerprint (as in checkpoints' `key_fingerprint`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Sign a digest with the audit key; after the HSM started over, with the key's handle
    /// found again.
    async fn sign(&self, hash: Vec<u8>) -> Result<Vec<u8>> {
        let key = *self.key.lock().map_err(|_| Error::Internal)?;
        let (hsm, digest) = (self.hsm.clone(), hash.clone());
        let first = tokio::task::spawn_blocking(move || hsm.audit_sign(key, &digest))
            .await
            .map_err(|_| Error::Internal)?;
        if !matches!(first, Err(Error::HsmUnavailable)) || key.epoch() == self.hsm.epoch() {
            return first;
        }
        let hsm = self.hsm.clone();
        let signed = tokio::task::spawn_blocking(move || {
            let key = hsm.existing_audit_signing_key()?;
            Ok::<_, Error>((key, hsm.audit_sign(key, &hash)?))
        })
        .await
        .map_err(|_| Error::Internal)??;
        *self.key.lock().map_err(|_| Error::Internal)? = signed.0;
        Ok(signed.1)
    }

    /// Sign the head of each chain this node signs (the shared one and its own) that moved
    /// since the chain's last checkpoint, where `due` (given the records since then) says so.
    pub async fn checkpoint_if(
        &self,
        db: &Db,
        due: impl Fn(i64) -> bool,
    ) -> Result<Vec<Checkpoint>> {
        let mut signed = Vec::new();
        for chain in std::iter::once(0).chain(db.audit_chains().owned()) {
            if let Some(cp) = self.checkpoint_chain(db, chain, &due).await? {
                signed.push(cp);
            }
        }
        Ok(signed)
    }

    /// At shutdown, after the last record: sign the heads of the chains this node took (no
    /// process writes them again) that moved since their last checkpoint.
    pub async fn seal_own_chains(&self, db: &Db) -> Result<Vec<Checkpoint>> {
        let mut signed = Vec::new();
        for chain in db.audit_chains().owned() {
            if let Some(cp) = self.checkpoint_chain(db, chain, &|_| true).await? {
                signed.push(cp);
            }
        }
        Ok(signed)
    }

    async fn checkpoint_chain(
        &self,
        db: &Db,
        chain: i64,
        due: &impl Fn(i64) -> bool,
    ) -> Result<Option<Checkpoint>> {
        let Some((seq, head_hash)) = super::chains::head(db, chain).await? else {
            return Ok(None);
        };
        let last = last_checkpoint(db, chain).await?;
        let since = seq
            - last
                .as_ref()
                .map_or(super::chains::origin(chain), |c| c.seq);
        if since <= 0 || !due(since) {
            return Ok(None);
        }
        let time = now_rfc3339();
        let message = signed_message(seq, &head_hash, &time);
        let hash = digest::digest(&digest::SHA256, &message).as_ref().to_vec();
        let signature = self.sign(hash).await?;
        let cp = Checkpoint {
            seq,
            head_hash,
            time,
            key_fingerprint: self.fingerprint.clone(),
            signature: STANDARD.encode(signature),
        };
        let mut tx = db.begin_bookkeeping().await?;
        let inserted = on!(&mut tx => |c| sqlx::query(
            "INSERT INTO audit_checkpoints (seq, head_hash, time, key_fingerprint, signature) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
        )
        .bind(cp.seq)
        .bind(&cp.head_hash)
        .bind(&cp.time)
        .bind(&cp.key_fingerprint)
        .bind(&cp.signature)
        .execute(c)
        .await?
        .rows_affected());
        tx.commit().await?;
        if inserted == 0 {
            // Another node signed the shared chain's head first: its checkpoint stands.
            return Ok(None);
        }
        // The file is synced: off the tokio worker.
        let (file, signed) = (self.file.clone(), cp.clone());
        tokio::task::spawn_blocking(move || append_to_file(&file, &signed))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            .map_err(|e| {
                tracing::error!(error = %e, file = %self.file.display(), "could not append the audit checkpoint to its file");
                Error::Internal
            })?;
        Ok(Some(cp))
    }
}

/// Append `cp` to the checkpoint file as one JSON line, and sync it.
fn append_to_file(file: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    let mut line = serde_json::to_vec(cp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_data()
}

/// The last checkpoint of `chain`.
async fn last_checkpoint(pool: impl Into<Conn<'_>>, chain: i64) -> Result<Option<Checkpoint>> {
    on!(pool, {
        Ok(sqlx::query_as(
            "SELECT seq, head_hash, time, key_fingerprint, signature FROM audit_checkpoints \
             WHERE seq > $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1",
        )
        .bind(super::chains::origin(chain))
        .bind(super::chains::last(chain))
        .fetch_optional(&mut *pool)
        .await?)
    })
}

/// When the timed checkpoints are due: every interval, whatever was signed meanwhile for its
/// record count (one busy chain signed for its count must not put off the timed checkpoint of
/// a quiet one).
struct Timed {
    every: Option<Duration>,
    last: Instant,
}

impl Timed {
    fn new(seconds: u64, now: Instant) -> Self {
        Timed {
            every: (seconds > 0).then(|| Duration::from_secs(seconds)),
            last: now,
        }
    }

    /// Whether a timed pass is due at `now`.
    fn due(&self, now: Instant) -> bool {
        self.every
            .is_some_and(|every| now.saturating_duration_since(self.last) >= every)
    }

    /// A timed pass ran at `now`.
    fn ran(&mut self, now: Instant) {
        self.last = now;
    }
}

/// Check for due checkpoints every second (records) and on the interval (time). The last
/// ones, at shutdown, are [`Checkpointer::seal_own_chains`]'s.
pub fn spawn(checkpointer: Arc<Checkpointer>, db: Db, config: AuditConfig) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut interval = Timed::new(config.checkpoint_interval_seconds, Instant::now());
        loop {
            tick.tick().await;
            let every = config.checkpoint_every_records.max(1) as i64;
            let now = Instant::now();
            let timed = interval.due(now);
            let due = |since: i64| timed || since >= every;
            match checkpointer.checkpoint_if(&db, due).await {
                Ok(signed) => {
                    for cp in &signed {
                        tracing::info!(seq = cp.seq, "audit checkpoint signed");
                    }
                    if timed {
                        interval.ran(now);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "audit checkpoint failed; retried"),
            }
        }
    });
}

/// The first problem found with the checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointFault {
    /// The signature does not verify under the public key (forged or altered).
    BadSignature { seq: i64 },
    /// The database and the checkpoint file disagree about a checkpoint, or one lacks it.
    Mismatch { seq: i64, detail: &'static str },
    /// The checkpointed record no longer has the signed hash (records rewritten).
    Rewritten { seq: i64 },
    /// The checkpointed record's chain ends before it (tail truncated).
    Truncated { checkpoint: i64, last_record: i64 },
}

impl std::fmt::Display for CheckpointFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointFault::BadSignature { seq } => write!(
                f,
                "checkpoint at record {seq}: signature does not verify under the audit public key (forged or altered)"
            ),
            CheckpointFault::Mismatch { seq, detail } => {
                write!(f, "checkpoint at record {seq}: {detail}")
            }
            CheckpointFault::Rewritten { seq } => write!(
                f,
                "record {seq} does not have the hash its signed checkpoint recorded (the log was rewritten)"
            ),
            CheckpointFault::Truncated {
                checkpoint,
                last_record,
            } => write!(
                f,
                "a signed checkpoint covers record {checkpoint} but its chain ends at record {last_record} (the tail was truncated)"
            ),
        }
    }
}

/// What checkpoint verification found.
#[derive(Debug)]
pub struct CheckpointReport {
    pub checkpoints: usize,
    pub last_checkpoint: Option<i64>,
    /// Records after the last checkpoint of their chain (protected by the chain only).
    pub unsigned: i64,
    pub fault: Option<CheckpointFault>,
}

/// Check every checkpoint (database ∪ `file`) against the trusted public keys (PEM; each
/// node of a cluster signs with its own HSM's key, so a checkpoint must verify under one of
/// them) and the records.
/// `archived`: the hashes of checkpointed records as their verified archive files hold them,
/// for the records pruned from the database (see [`super::archive`]).
pub async fn verify(
    pool: impl Into<Conn<'_>>,
    public_key_pems: &[String],
    file: Option<&Path>,
    archived: &std::collections::BTreeMap<i64, String>,
) -> anyhow::Result<CheckpointReport> {
    let mut pool: Conn<'_> = pool.into();
    let chains = super::chains::present(&mut pool, super::chains::Table::Log).await?;
    on!(pool, {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::DecodePublicKey;
        let mut points = Vec::with_capacity(public_key_pems.len());
        for pem in public_key_pems {
            let key = p256::PublicKey::from_public_key_pem(pem.trim()).map_err(|_| {
                anyhow::anyhow!("an audit public key is not a P-256 PEM public key")
            })?;
            points.push(key.to_encoded_point(false));
        }
        let verifiers: Vec<_> = points
            .iter()
            .map(|point| {
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_ASN1,
                    point.as_bytes(),
                )
            })
            .collect();

        let in_db: Vec<Checkpoint> = sqlx::query_as(
        "SELECT seq, head_hash, time, key_fingerprint, signature FROM audit_checkpoints ORDER BY seq",
    )
    .fetch_all(&mut *pool)
    .await?;
        let mut in_file: Vec<Checkpoint> = Vec::new();
        if let Some(path) = file.filter(|p| p.exists()) {
            for (n, line) in std::fs::read_to_string(path)?.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                in_file.push(serde_json::from_str(line).map_err(|e| {
                    anyhow::anyhow!("{} line {}: not a checkpoint: {e}", path.display(), n + 1)
                })?);
            }
        }
        let mut all = std::collections::BTreeMap::new();
        let fault = |f| {
            Ok(CheckpointReport {
                checkpoints: in_db.len().max(in_file.len()),
                last_checkpoint: None,
                unsigned: 0,
                fault: Some(f),
            })
        };
        for cp in &in_file {
            match in_db.iter().find(|d| d.seq == cp.seq) {
                Some(d) if d == cp => {}
                Some(_) => {
                    return fault(CheckpointFault::Mismatch {
                        seq: cp.seq,
                        detail: "the database and the checkpoint file hold different checkpoints",
                    })
                }
                None => {
                    return fault(CheckpointFault::Mismatch {
                        seq: cp.seq,
                        detail: "in the checkpoint file but missing from the database (deleted)",
                    })
                }
            }
        }
        for cp in in_db.iter().chain(in_file.iter()) {
            all.insert(cp.seq, cp.clone());
        }
        // The last record of each chain a checkpoint names.
        let mut last_records = std::collections::BTreeMap::new();
        for cp in all.values() {
            let chain = super::chains::of(cp.seq);
            let last_record = match last_records.get(&chain) {
                Some(last) => *last,
                None => {
                    let last: i64 = sqlx::query_scalar(
                        "SELECT COALESCE(MAX(seq), $1) FROM audit_log WHERE seq > $1 AND seq <= $2",
                    )
                    .bind(super::chains::origin(chain))
                    .bind(super::chains::last(chain))
                    .fetch_one(&mut *pool)
                    .await?;
                    last_records.insert(chain, last);
                    last
                }
            };
            let signature = STANDARD.decode(&cp.signature).unwrap_or_default();
            let message = signed_message(cp.seq, &cp.head_hash, &cp.time);
            if !verifiers
                .iter()
                .any(|v| v.verify(&message, &signature).is_ok())
            {
                return fault(CheckpointFault::BadSignature { seq: cp.seq });
            }
            if cp.seq > last_record {
                return fault(CheckpointFault::Truncated {
                    checkpoint: cp.seq,
                    last_record,
                });
            }
            let hash: Option<String> =
                sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
                    .bind(cp.seq)
                    .fetch_optional(&mut *pool)
                    .await?;
            let hash = hash.or_else(|| archived.get(&cp.seq).cloned());
            if hash.as_deref() != Some(cp.head_hash.as_str()) {
                return fault(CheckpointFault::Rewritten { seq: cp.seq });
            }
        }
        // Each chain's records after its last checkpoint.
        let mut unsigned = 0;
        for chain in chains {
            let (first, head): (Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT MIN(seq), MAX(seq) FROM audit_log WHERE seq > $1 AND seq <= $2",
            )
            .bind(super::chains::origin(chain))
            .bind(super::chains::last(chain))
            .fetch_one(&mut *pool)
            .await?;
            let (Some(first), Some(head)) = (first, head) else {
                continue; // its records left since the chains were listed
            };
            let signed = all
                .range(super::chains::origin(chain) + 1..=head)
                .next_back()
                .map_or(first - 1, |(seq, _)| *seq);
            unsigned += head - signed;
        }
        Ok(CheckpointReport {
            checkpoints: all.len(),
            last_checkpoint: all.keys().next_back().copied(),
            unsigned,
            fault: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timed checkpoints come every interval however many were signed for their record
    /// counts in between (they used to restart the interval, so a quiet chain beside a busy
    /// one was never signed for time).
    #[test]
    fn timed_checkpoints_keep_their_interval_whatever_is_signed_in_between() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut timed = Timed::new(60, start);
        let mut passes = Vec::new();
        // One pass a second for five minutes, each signing some chain for its count.
        for s in 1..=300 {
            let now = at(s * 1000);
            if timed.due(now) {
                passes.push(s);
                timed.ran(now);
            }
        }
        assert_eq!(passes, [60, 120, 180, 240, 300]);
        assert!(
            !Timed::new(0, start).due(at(1_000_000)),
            "0: no timed checkpoints"
        );
    }
}
