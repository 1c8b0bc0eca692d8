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
//! from the database is still in the checkpoint files the auditor gives (each node's, and the
//! copies kept on write-once storage), and one that differs from a file's is reported; a forged
//! checkpoint does not verify under the public keys. Records after the last checkpoint of
//! their chain are protected by the chain only, until the next checkpoint.
//!
//! `key_fingerprint` is not part of the signed message (checkpoints signed before it was
//! checked must keep verifying, so the message stays as it is), so [`verify`] holds it to the
//! key instead: a checkpoint must verify under the trusted key whose fingerprint it names.
//! Otherwise a checkpoint could name one node's key while signed by another's, and an auditor
//! tracing a checkpoint to its node by the fingerprint would be misled.
//!
//! The log is several chains ([`super::chains`]): a node signs the shared chain (whichever
//! node gets there first) and the chains it took itself. At shutdown it signs the heads of
//! both ([`Checkpointer::seal_own_chains`]): its own chains are never written again, and the
//! shared chain is the whole log on SQLite, where the records written since the last
//! checkpoint would otherwise stay unsigned (open to truncation) for as long as the node is
//! down. On PostgreSQL another node may sign the shared chain's head first; the insert
//! then does nothing. A cluster's checkpoints are thus signed by several keys, one per node's
//! HSM, and verified against all of them.

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
    /// process writes them again) and of the shared chain 0, each if it moved since its last
    /// checkpoint. Chain 0 is the only chain on SQLite: left unsigned, the records written
    /// since its last checkpoint could be cut off while the node is down. On PostgreSQL a
    /// checkpoint of it is harmless (another node's at the same record wins the insert).
    pub async fn seal_own_chains(&self, db: &Db) -> Result<Vec<Checkpoint>> {
        let mut signed = Vec::new();
        for chain in std::iter::once(0).chain(db.audit_chains().owned()) {
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
        if !store(db, &cp).await? {
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

/// Store `cp` in `audit_checkpoints`, in a bookkeeping transaction of its own: whether it was
/// stored (false: a checkpoint at its record is there already).
pub(super) async fn store(db: &Db, cp: &Checkpoint) -> Result<bool> {
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
    Ok(inserted > 0)
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
    /// The signature verifies under none of the trusted public keys (forged or altered).
    BadSignature { seq: i64 },
    /// The checkpoint names a key none of the trusted public keys is, and verifies under none.
    UnknownKey { seq: i64, fingerprint: String },
    /// The checkpoint verifies, but not under the key its `key_fingerprint` names (altered).
    WrongKey {
        seq: i64,
        named: String,
        signer: String,
    },
    /// A checkpoint file and the database disagree about a checkpoint, or the database lacks it.
    Mismatch {
        seq: i64,
        file: String,
        detail: &'static str,
    },
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
            CheckpointFault::UnknownKey { seq, fingerprint } => write!(
                f,
                "checkpoint at record {seq}: signed by the key with fingerprint {fingerprint}, which is none of the trusted public keys, and verifies under none of them (forged, or a node's key missing: give every node's with --public-key)"
            ),
            CheckpointFault::WrongKey { seq, named, signer } => write!(
                f,
                "checkpoint at record {seq}: its key_fingerprint names key {named} but it verifies under key {signer} (altered)"
            ),
            CheckpointFault::Mismatch { seq, file, detail } => {
                write!(f, "checkpoint at record {seq}: {detail} (checkpoint file {file})")
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
    /// The same, per chain that has any: a chain nobody signed shows up here by name (on
    /// PostgreSQL, a chain fabricated with every checkpoint of it is otherwise just records).
    pub unsigned_by_chain: std::collections::BTreeMap<i64, Unsigned>,
    pub fault: Option<CheckpointFault>,
}

/// A chain's records after its last checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsigned {
    pub records: i64,
    /// The chain's last checkpoint (`None`: the chain has none).
    pub last_checkpoint: Option<i64>,
}

/// One checkpoint file's checkpoints (a node's `audit-checkpoints.jsonl`, or an auditor's copy).
#[derive(Debug)]
pub struct CheckpointFile {
    pub path: PathBuf,
    pub checkpoints: Vec<Checkpoint>,
}

impl CheckpointFile {
    /// Read a checkpoint file (one JSON checkpoint a line; blank lines skipped).
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("checkpoint file {}: {e}", path.display()))?;
        let mut checkpoints = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            checkpoints.push(serde_json::from_str(line).map_err(|e| {
                anyhow::anyhow!("{} line {}: not a checkpoint: {e}", path.display(), n + 1)
            })?);
        }
        Ok(CheckpointFile {
            path: path.to_path_buf(),
            checkpoints,
        })
    }
}

/// What [`verify`] tells its caller as it goes (a progress bar; `()` for nothing).
pub trait Progress: Sync {
    /// The checkpoints to check, once they are known.
    fn total(&self, _checkpoints: u64) {}
    /// `n` more checked.
    fn checked(&self, _n: u64) {}
}

impl Progress for () {}

/// A trusted public key: its fingerprint (as checkpoints name it) and its point.
struct TrustedKey {
    fingerprint: String,
    /// The fingerprint of the key's canonical encoding (uncompressed point, named curve), the
    /// HSM's: a trusted copy written in another valid encoding (a compressed point) still
    /// names the same key.
    canonical: String,
    point: p256::EncodedPoint,
}

impl TrustedKey {
    fn parse(pem: &str) -> anyhow::Result<Self> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::DecodePublicKey;
        let not_p256 = || anyhow::anyhow!("an audit public key is not a P-256 PEM public key");
        // The fingerprint is over the DER as published (what `audit public-key` prints).
        let (_, der) = der::pem::decode_vec(pem.trim().as_bytes()).map_err(|_| not_p256())?;
        let key = p256::PublicKey::from_public_key_der(&der).map_err(|_| not_p256())?;
        let canonical =
            p256::pkcs8::EncodePublicKey::to_public_key_der(&key).map_err(|_| not_p256())?;
        Ok(TrustedKey {
            fingerprint: fingerprint(&der),
            canonical: fingerprint(canonical.as_bytes()),
            point: key.to_encoded_point(false),
        })
    }

    /// Whether `fingerprint` names this key.
    fn names(&self, fingerprint: &str) -> bool {
        self.fingerprint == fingerprint || self.canonical == fingerprint
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            self.point.as_bytes(),
        )
        .verify(message, signature)
        .is_ok()
    }
}

/// Whether `cp` is signed by the trusted key it names.
fn check_signature(cp: &Checkpoint, keys: &[TrustedKey]) -> Option<CheckpointFault> {
    let signature = STANDARD.decode(&cp.signature).unwrap_or_default();
    let message = signed_message(cp.seq, &cp.head_hash, &cp.time);
    let (named, others): (Vec<_>, Vec<_>) = keys.iter().partition(|k| k.names(&cp.key_fingerprint));
    if named.iter().any(|k| k.verifies(&message, &signature)) {
        return None;
    }
    // Which fault: signed by another trusted key (the name was changed), or by none.
    if let Some(signer) = others.iter().find(|k| k.verifies(&message, &signature)) {
        return Some(CheckpointFault::WrongKey {
            seq: cp.seq,
            named: cp.key_fingerprint.clone(),
            signer: signer.fingerprint.clone(),
        });
    }
    Some(if named.is_empty() {
        CheckpointFault::UnknownKey {
            seq: cp.seq,
            fingerprint: cp.key_fingerprint.clone(),
        }
    } else {
        CheckpointFault::BadSignature { seq: cp.seq }
    })
}

/// A row of `audit_checkpoints` and the hash of the record it names, if that is still in
/// `audit_log`.
type CheckpointRow = (i64, String, String, String, String, Option<String>);

/// Check every checkpoint of the database against the trusted public keys (PEM; each node of
/// a cluster signs with its own HSM's key, so a checkpoint must verify under one of them, the
/// one whose fingerprint it names) and the records, and every checkpoint of each of `files`
/// against the database's (each must be there, the same).
///
/// `conn` should be the snapshot the chain walk ([`super::archive::verify`]) ran in: a
/// checkpointed record archived and pruned after the walk would otherwise be gone from both
/// the table and `archived`, and reported as rewritten. `files` should be read before that
/// snapshot was taken: a node commits a checkpoint's row before it appends the checkpoint to
/// its file, so every checkpoint in a file read earlier is in the snapshot.
/// `archived`: the hashes of checkpointed records as their verified archive files hold them,
/// for the records pruned from the database (see [`super::archive`]).
pub async fn verify(
    conn: impl Into<Conn<'_>>,
    public_key_pems: &[String],
    files: &[CheckpointFile],
    archived: &std::collections::BTreeMap<i64, String>,
    progress: &dyn Progress,
) -> anyhow::Result<CheckpointReport> {
    use std::collections::BTreeMap;
    let mut conn: Conn<'_> = conn.into();
    let keys = public_key_pems
        .iter()
        .map(|pem| TrustedKey::parse(pem))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let chains = super::chains::present(&mut conn, super::chains::Table::Log).await?;
    // Every checkpoint with its record's hash, in one query, keyed by seq.
    let rows: Vec<CheckpointRow> = on!(&mut conn => |c| sqlx::query_as(
        "SELECT c.seq, c.head_hash, c.time, c.key_fingerprint, c.signature, l.hash \
         FROM audit_checkpoints c LEFT JOIN audit_log l ON l.seq = c.seq ORDER BY c.seq",
    )
    .fetch_all(c)
    .await?);
    let in_db: BTreeMap<i64, (Checkpoint, Option<String>)> = rows
        .into_iter()
        .map(|(seq, head_hash, time, key_fingerprint, signature, hash)| {
            let cp = Checkpoint {
                seq,
                head_hash,
                time,
                key_fingerprint,
                signature,
            };
            (seq, (cp, hash))
        })
        .collect();
    let fault = |f| {
        Ok(CheckpointReport {
            checkpoints: in_db.len(),
            last_checkpoint: None,
            unsigned: 0,
            unsigned_by_chain: BTreeMap::new(),
            fault: Some(f),
        })
    };
    let in_files: usize = files.iter().map(|f| f.checkpoints.len()).sum();
    progress.total((in_files + in_db.len()) as u64);
    // Each file's checkpoints must all be in the database as they are in the file; then the
    // database's are every checkpoint there is.
    for file in files {
        for cp in &file.checkpoints {
            let detail = match in_db.get(&cp.seq) {
                Some((d, _)) if d == cp => None,
                Some(_) => Some("the database and the checkpoint file hold different checkpoints"),
                None => Some("in the checkpoint file but missing from the database (deleted)"),
            };
            if let Some(detail) = detail {
                return fault(CheckpointFault::Mismatch {
                    seq: cp.seq,
                    file: file.path.display().to_string(),
                    detail,
                });
            }
        }
        progress.checked(file.checkpoints.len() as u64);
    }
    // The last record of each chain a checkpoint names.
    let mut last_records = BTreeMap::new();
    for (cp, hash) in in_db.values() {
        if let Some(f) = check_signature(cp, &keys) {
            return fault(f);
        }
        let chain = super::chains::of(cp.seq);
        let last_record = match last_records.get(&chain) {
            Some(last) => *last,
            None => {
                let last: i64 = on!(&mut conn => |c| sqlx::query_scalar(
                    "SELECT COALESCE(MAX(seq), $1) FROM audit_log WHERE seq > $1 AND seq <= $2",
                )
                .bind(super::chains::origin(chain))
                .bind(super::chains::last(chain))
                .fetch_one(c)
                .await?);
                last_records.insert(chain, last);
                last
            }
        };
        if cp.seq > last_record {
            return fault(CheckpointFault::Truncated {
                checkpoint: cp.seq,
                last_record,
            });
        }
        let hash = hash.as_ref().or_else(|| archived.get(&cp.seq));
        if hash != Some(&cp.head_hash) {
            return fault(CheckpointFault::Rewritten { seq: cp.seq });
        }
        progress.checked(1);
    }
    // Each chain's records after its last checkpoint.
    let mut unsigned_by_chain = BTreeMap::new();
    for chain in chains {
        let (first, head): (Option<i64>, Option<i64>) = on!(&mut conn => |c| sqlx::query_as(
            "SELECT MIN(seq), MAX(seq) FROM audit_log WHERE seq > $1 AND seq <= $2",
        )
        .bind(super::chains::origin(chain))
        .bind(super::chains::last(chain))
        .fetch_one(c)
        .await?);
        let (Some(first), Some(head)) = (first, head) else {
            continue; // its records left since the chains were listed
        };
        let last_checkpoint = in_db
            .range(super::chains::origin(chain) + 1..=head)
            .next_back()
            .map(|(seq, _)| *seq);
        let signed = last_checkpoint.unwrap_or(first - 1);
        if head > signed {
            let records = head - signed;
            unsigned_by_chain.insert(
                chain,
                Unsigned {
                    records,
                    last_checkpoint,
                },
            );
        }
    }
    Ok(CheckpointReport {
        checkpoints: in_db.len(),
        last_checkpoint: in_db.keys().next_back().copied(),
        unsigned: unsigned_by_chain.values().map(|u| u.records).sum(),
        unsigned_by_chain,
        fault: None,
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
