//! Archived segments of the audit log, and retention.
//!
//! The log only grows (about 520 bytes a record, so a busy node adds gigabytes a day). A signed
//! checkpoint seals the records up to it: the archiver ([`archive`]) writes each sealed segment
//! not yet archived — the records after the previous segment up to a checkpoint, several
//! checkpoints' worth up to `audit.archive_segment_records` — to one file in the archive
//! directory, `segment-<first seq>-<last seq>.jsonl.gz`: gzip of JSON lines, each record in the
//! export schema ([`super::export::ExportedRecord`]), then one line `{"checkpoint": {…}}` with
//! the checkpoint that seals it. Before writing, it checks the segment's chain (its records'
//! links and hashes, and that its last record has the checkpoint's head hash), so a segment
//! whose chain is broken is never archived. It does not check the checkpoint's signature: the
//! archiver has no trusted copy of the public keys (the one in the data dir is only as
//! trustworthy as the data dir), so a forged checkpoint is archived with its segment and left
//! to `keyplane audit verify`, which checks every checkpoint, archived or not, under the
//! auditor's keys. The file is written atomically (a temporary file, synced, renamed, the
//! directory synced), then recorded in `audit_segments` with the SHA-256 of its bytes, which
//! every reader checks before it trusts the file ([`verify`], [`select_with_archive`]).
//!
//! Under `audit.retention_seconds` / `audit.retention_records` (both 0 by default: everything
//! stays), [`prune`] deletes archived segments' records from `audit_log`: the segments are
//! marked first, then their records leave in batches of [`PRUNE_BATCH`], each batch its own
//! short transaction, so a prune never holds the write lock for long and an interrupted one
//! finishes on the next run. The record at each chain's head is never deleted (appends read
//! the head from the table). `audit_segments` and `audit_checkpoints` keep their rows, so
//! [`verify`] walks the archive files and then the live table, chain by chain (the log is one
//! chain per writer, `super::chains`: a segment lies within one chain, and each chain is
//! archived and pruned on its own).
//!
//! The scheduler archives and prunes every `audit.archive_interval_seconds` (claimed in the
//! database, so once per interval across nodes); `keyplane audit archive` does it on demand.
//! Two archivers racing may end a segment from the same record at different checkpoints: the
//! first row recorded is the archive, the other archiver removes its own file and carries on
//! after that row (an overlap stops it). Prune lets a segment go only if its file is there,
//! whole (its SHA-256 as recorded), and deletes only the records of marked segments that
//! follow each other without a gap from their chain's oldest live record.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use ring::digest;
use serde::{Deserialize, Serialize};

use super::chains::{self, Table};
use super::checkpoint::Checkpoint;
use super::export::{normalise, ExportedRecord, Filter};
use super::{AuditRecord, ChainFault, ChainWalk, GENESIS};
use crate::config::AuditConfig;
use crate::error::{Error, Result};
use crate::store::{now_rfc3339, on, Db, Tx};

/// Records deleted by one prune statement (one short write transaction).
pub const PRUNE_BATCH: i64 = 1000;
/// Records read from the database at a time while archiving.
const READ_BATCH: i64 = 1000;

/// One archived segment (a row of `audit_segments`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Segment {
    pub first_seq: i64,
    pub last_seq: i64,
    pub records: i64,
    pub head_hash: String,
    pub first_time: String,
    pub last_time: String,
    pub file_name: String,
    pub file_sha256: String,
    pub archived_at: String,
    pub pruned_at: Option<String>,
}

/// A line of an archive file.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Line {
    /// The sealing checkpoint (the last line). Tried first, so it is a struct that takes no
    /// other field: a record line that also carries a `checkpoint` field is a record, never
    /// taken for the seal (which would end the segment early and drop the record).
    Checkpoint(SealLine),
    Record(Box<ExportedRecord>),
}

/// The sealing checkpoint's line: `{"checkpoint": {…}}` and nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealLine {
    pub checkpoint: Checkpoint,
}

/// The file name of the segment from `first` to `last`.
pub fn file_name(first: i64, last: i64) -> String {
    format!("segment-{first}-{last}.jsonl.gz")
}

/// Every archived segment, oldest first.
pub async fn segments(db: &Db) -> sqlx::Result<Vec<Segment>> {
    on!(db => |c| sqlx::query_as("SELECT * FROM audit_segments ORDER BY first_seq")
        .fetch_all(c)
        .await)
}

/// The lines of an archive file, decompressed (blocking reads).
pub fn read_segment(
    path: &Path,
) -> std::io::Result<impl Iterator<Item = std::io::Result<Line>> + use<>> {
    Ok(lines_of(std::fs::File::open(path)?))
}

/// The lines of an archive (gzip of one JSON record a line) read from `archive`.
pub fn lines_of<R: Read>(archive: R) -> impl Iterator<Item = std::io::Result<Line>> + use<R> {
    let lines = BufReader::new(flate2::read::GzDecoder::new(BufReader::new(archive))).lines();
    lines.map(|line| {
        let line = line?;
        serde_json::from_str(&line).map_err(std::io::Error::other)
    })
}

/// Hex SHA-256 of a file's bytes.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(ctx.finish()));
        }
        ctx.update(&buf[..n]);
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    ctx: digest::Context,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type SegmentWriter = flate2::write::GzEncoder<Hashing<std::io::BufWriter<std::fs::File>>>;

/// What [`run`] did (or, in a dry run, would do).
#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub struct ArchiveReport {
    pub dry_run: bool,
    /// Segments archived by this run.
    pub archived: Vec<Segment>,
    /// Segments whose records were (or are being) pruned by this run: (first, last) seq.
    pub pruned_segments: Vec<(i64, i64)>,
    /// Records deleted from the database.
    pub pruned_records: u64,
}

/// Archive every sealed segment not yet archived, then prune under the retention limits.
/// `now`: Unix seconds (the node's clock).
pub async fn run(
    db: &Db,
    config: &AuditConfig,
    dir: &Path,
    now: i64,
    dry_run: bool,
) -> Result<ArchiveReport> {
    let archived = archive(db, dir, config.archive_segment_records, dry_run).await?;
    let mut report = prune(db, config, dir, now, dry_run).await?;
    report.archived = archived;
    Ok(report)
}

/// The planned next segment of `chain`: its range and the checkpoint that seals it.
async fn next_segment(
    db: &Db,
    chain: i64,
    after: Option<&(i64, String)>,
    max_records: u64,
) -> Result<Option<(i64, Checkpoint)>> {
    let first = after.map_or(chains::origin(chain) + 1, |(last, _)| last + 1);
    let checkpoints: Vec<Checkpoint> = on!(db => |c| sqlx::query_as(
        "SELECT seq, head_hash, time, key_fingerprint, signature FROM audit_checkpoints \
         WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
    )
    .bind(first)
    .bind(chains::last(chain))
    .fetch_all(c)
    .await?);
    let max = max_records.max(1) as i64;
    let mut end = None;
    for cp in checkpoints {
        if end.is_some() && cp.seq - first + 1 > max {
            break;
        }
        end = Some(cp);
    }
    Ok(end.map(|cp| (first, cp)))
}

/// Write each sealed segment not yet archived to `dir` and record it, chain by chain. Returns
/// the segments (in a dry run, those that would be written, with no file hash).
pub async fn archive(db: &Db, dir: &Path, max_records: u64, dry_run: bool) -> Result<Vec<Segment>> {
    let mut done = Vec::new();
    for chain in chains::present(db, Table::Checkpoints).await? {
        archive_chain(db, dir, chain, max_records, dry_run, &mut done).await?;
    }
    Ok(done)
}

/// [`archive`] for one chain: its segments, each after the last one archived, onto `done`.
async fn archive_chain(
    db: &Db,
    dir: &Path,
    chain: i64,
    max_records: u64,
    dry_run: bool,
    done: &mut Vec<Segment>,
) -> Result<()> {
    let mut last: Option<(i64, String)> = on!(db => |c| sqlx::query_as(
        "SELECT last_seq, head_hash FROM audit_segments WHERE last_seq > $1 AND last_seq <= $2 \
         ORDER BY last_seq DESC LIMIT 1",
    )
    .bind(chains::origin(chain))
    .bind(chains::last(chain))
    .fetch_optional(c)
    .await?);
    while let Some((first, cp)) = next_segment(db, chain, last.as_ref(), max_records).await? {
        let prev = last
            .as_ref()
            .map_or(GENESIS.to_string(), |(_, h)| h.clone());
        let segment = if dry_run {
            Segment {
                first_seq: first,
                last_seq: cp.seq,
                records: cp.seq - first + 1,
                head_hash: cp.head_hash.clone(),
                first_time: String::new(),
                last_time: String::new(),
                file_name: file_name(first, cp.seq),
                file_sha256: String::new(),
                archived_at: String::new(),
                pruned_at: None,
            }
        } else {
            let segment = write_segment(db, dir, first, prev, &cp).await?;
            let mut tx = db.begin_bookkeeping().await?;
            let inserted = on!(&mut tx => |c| sqlx::query(
                "INSERT INTO audit_segments (first_seq, last_seq, records, head_hash, first_time, \
                 last_time, file_name, file_sha256, archived_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(segment.first_seq)
            .bind(segment.last_seq)
            .bind(segment.records)
            .bind(&segment.head_hash)
            .bind(&segment.first_time)
            .bind(&segment.last_time)
            .bind(&segment.file_name)
            .bind(&segment.file_sha256)
            .bind(&segment.archived_at)
            .execute(c)
            .await?
            .rows_affected());
            tx.commit().await?;
            if inserted == 0 {
                // Another archiver (the scheduler of another pass, or the command) recorded a
                // segment from the same record first, perhaps ending at another checkpoint:
                // its row is the archive; this pass's file goes unless it is that row's, and
                // the pass carries on after the recorded segment (or stops, on an overlap).
                let recorded = segments(db)
                    .await?
                    .into_iter()
                    .find(|s| s.first_seq == segment.first_seq);
                match recorded {
                    Some(r) => {
                        if r.file_name != segment.file_name {
                            let _ = std::fs::remove_file(dir.join(&segment.file_name));
                        }
                        last = Some((r.last_seq, r.head_hash.clone()));
                        done.push(r);
                        continue;
                    }
                    None => {
                        let _ = std::fs::remove_file(dir.join(&segment.file_name));
                        tracing::error!(
                            first = segment.first_seq,
                            "an audit segment overlaps one another archiver recorded; archiving stops"
                        );
                        return Err(Error::Internal);
                    }
                }
            }
            tracing::info!(
                first = segment.first_seq,
                last = segment.last_seq,
                file = %segment.file_name,
                "audit segment archived"
            );
            segment
        };
        last = Some((segment.last_seq, segment.head_hash.clone()));
        done.push(segment);
    }
    Ok(())
}

/// An I/O failure of the archiver, logged with the file it concerns.
fn io_error(path: &Path, e: std::io::Error) -> Error {
    tracing::error!(error = %e, file = %path.display(), "could not write an audit archive file");
    Error::Internal
}

/// Write the segment `first ..= cp.seq` (whose first record links to `prev`) to its file, its
/// chain checked on the way; the file is in place and synced when this returns.
async fn write_segment(
    db: &Db,
    dir: &Path,
    first: i64,
    prev: String,
    cp: &Checkpoint,
) -> Result<Segment> {
    let name = file_name(first, cp.seq);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let opened = {
        let (dir, tmp) = (dir.to_path_buf(), tmp.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<SegmentWriter> {
            std::fs::create_dir_all(&dir)?;
            let file = std::fs::File::create(&tmp)?;
            let hashing = Hashing {
                inner: std::io::BufWriter::new(file),
                ctx: digest::Context::new(&digest::SHA256),
            };
            Ok(flate2::write::GzEncoder::new(
                hashing,
                flate2::Compression::default(),
            ))
        })
    };
    let mut out = opened
        .await
        .map_err(|_| Error::Internal)?
        .map_err(|e| io_error(&tmp, e))?;
    let written = async {
        let (mut next, mut prev) = (first, prev);
        let (mut first_time, mut last_time) = (None, String::new());
        while next <= cp.seq {
            let rows: Vec<AuditRecord> = on!(db => |c| sqlx::query_as(
                "SELECT seq, time, request_id, principal, tenant, action, resource, decision, \
                 policies, outcome, source, policy_hash, trace_id, user_agent, front, access_key_id, \
                 prev_hash, hash FROM audit_log WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
            )
            .bind(next)
            .bind(cp.seq)
            .bind(READ_BATCH)
            .fetch_all(c)
            .await?);
            if rows.is_empty() {
                return Err(broken(ChainFault::Gap {
                    expected: next,
                    found: cp.seq + 1,
                }));
            }
            let mut lines = Vec::with_capacity(rows.len() * 600);
            for rec in rows {
                if let Some(fault) = check_link(&rec, next, &prev) {
                    return Err(broken(fault));
                }
                prev = rec.hash.clone();
                next += 1;
                first_time.get_or_insert_with(|| rec.time.clone());
                last_time = rec.time.clone();
                serde_json::to_writer(&mut lines, &ExportedRecord::from(rec))
                    .map_err(|_| Error::Internal)?;
                lines.push(b'\n');
            }
            out = write_blocking(out, lines)
                .await
                .map_err(|e| io_error(&tmp, e))?;
        }
        if prev != cp.head_hash {
            return Err(broken(ChainFault::BadHash { seq: cp.seq }));
        }
        let mut line = serde_json::to_vec(&serde_json::json!({ "checkpoint": cp }))
            .map_err(|_| Error::Internal)?;
        line.push(b'\n');
        out = write_blocking(out, line)
            .await
            .map_err(|e| io_error(&tmp, e))?;
        Ok((out, first_time.unwrap_or_default(), last_time))
    }
    .await;
    let (out, first_time, last_time) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let placed = {
        let (dir, tmp, path) = (dir.to_path_buf(), tmp.clone(), path.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let hashing = out.finish()?;
            let sha = hex::encode(hashing.ctx.finish());
            let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()?;
            Ok(sha)
        })
    };
    let sha = match placed.await.map_err(|_| Error::Internal)? {
        Ok(sha) => sha,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_error(&path, e));
        }
    };
    Ok(Segment {
        first_seq: first,
        last_seq: cp.seq,
        records: cp.seq - first + 1,
        head_hash: cp.head_hash.clone(),
        first_time,
        last_time,
        file_name: name,
        file_sha256: sha,
        archived_at: now_rfc3339(),
        pruned_at: None,
    })
}

/// Compress and write `bytes` off the async workers.
async fn write_blocking(mut out: SegmentWriter, bytes: Vec<u8>) -> std::io::Result<SegmentWriter> {
    tokio::task::spawn_blocking(move || out.write_all(&bytes).map(|()| out))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// A segment that does not verify is not archived (nor, then, ever pruned).
fn broken(fault: ChainFault) -> Error {
    tracing::error!(%fault, "audit chain broken: segment not archived");
    Error::Internal
}

/// Whether `rec` is record `expected` and links to `prev` with a hash that matches.
fn check_link(rec: &AuditRecord, expected: i64, prev: &str) -> Option<ChainFault> {
    if rec.seq != expected {
        Some(ChainFault::Gap {
            expected,
            found: rec.seq,
        })
    } else if rec.prev_hash != prev {
        Some(ChainFault::BrokenLink { seq: rec.seq })
    } else if rec.compute_hash() != rec.hash {
        Some(ChainFault::BadHash { seq: rec.seq })
    } else {
        None
    }
}

/// Delete from `audit_log` the records of archived segments that the retention limits let go
/// (none when both are 0), in batches, chain by chain; the newest record of each chain always
/// stays (its writer reads its head from the table). `retention_records` counts within a chain.
pub async fn prune(
    db: &Db,
    config: &AuditConfig,
    dir: &Path,
    now: i64,
    dry_run: bool,
) -> Result<ArchiveReport> {
    let mut report = ArchiveReport {
        dry_run,
        ..ArchiveReport::default()
    };
    if config.retention_seconds == 0 && config.retention_records == 0 {
        return Ok(report);
    }
    let all = segments(db).await?;
    // Each archived chain's head and oldest live record.
    let mut live: BTreeMap<i64, (i64, Option<i64>)> = BTreeMap::new();
    for chain in all.iter().map(|s| chains::of(s.first_seq)) {
        if live.contains_key(&chain) {
            continue;
        }
        let (origin, last) = (chains::origin(chain), chains::last(chain));
        let (head, first): (Option<i64>, Option<i64>) = on!(db => |c| sqlx::query_as(
            "SELECT MAX(seq), MIN(seq) FROM audit_log WHERE seq > $1 AND seq <= $2",
        )
        .bind(origin)
        .bind(last)
        .fetch_one(c)
        .await?);
        live.insert(chain, (head.unwrap_or(origin), first));
    }
    let cutoff = chrono::DateTime::from_timestamp(now - config.retention_seconds as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let due: Vec<(i64, i64)> = all
        .iter()
        .filter(|s| {
            let head = live.get(&chains::of(s.first_seq)).map_or(0, |l| l.0);
            s.pruned_at.is_none()
                && s.last_seq < head
                && (config.retention_seconds == 0 || s.last_time < cutoff)
                && (config.retention_records == 0
                    || head - s.last_seq >= config.retention_records as i64)
        })
        // Only a segment whose file is there, whole, is let go: the row alone is not the
        // archive (the directory may have been lost, or be another node's).
        .filter(|s| {
            let path = dir.join(&s.file_name);
            let whole = file_sha256(&path).is_ok_and(|h| h == s.file_sha256);
            if !whole {
                tracing::error!(file = %path.display(), "an archived audit segment's file is missing or altered: its records are kept in the database");
            }
            whole
        })
        .map(|s| (s.first_seq, s.last_seq))
        .collect();
    report.pruned_segments = due.clone();
    if dry_run {
        report.pruned_records = due
            .iter()
            .map(|(f, l)| {
                let first_live = live.get(&chains::of(*f)).and_then(|l| l.1);
                (l - f.max(&first_live.unwrap_or(*f)) + 1).max(0) as u64
            })
            .sum();
        return Ok(report);
    }
    if !due.is_empty() {
        let mut tx = db.begin_bookkeeping().await?;
        let at = now_rfc3339();
        for (first, _) in &due {
            on!(&mut tx => |c| sqlx::query(
                "UPDATE audit_segments SET pruned_at = $1 WHERE first_seq = $2 AND pruned_at IS NULL",
            )
            .bind(&at)
            .bind(first)
            .execute(c)
            .await?
            .rows_affected());
        }
        tx.commit().await?;
    }
    let marked = segments(db).await?;
    for (&chain, &(_, first_live)) in &live {
        // What goes: the chain's marked segments (this run's, and what an interrupted run
        // left) that follow each other without a gap from its oldest live record, lowest
        // first. A record no marked segment holds is never deleted.
        let Some(mut from) = first_live else {
            continue;
        };
        let (mut upto, mut next) = (None, from);
        for s in marked.iter().filter(|s| chains::of(s.first_seq) == chain) {
            if s.last_seq < next {
                continue; // wholly before the live records: pruned before
            }
            if s.first_seq > next || s.pruned_at.is_none() {
                break; // a gap, or a segment whose records stay
            }
            upto = Some(s.last_seq);
            next = s.last_seq + 1;
        }
        let Some(upto) = upto else {
            continue;
        };
        let mut deleted_here = 0;
        while from <= upto {
            let to = (from + PRUNE_BATCH - 1).min(upto);
            let mut tx = db.begin_bookkeeping().await?;
            let deleted = on!(&mut tx => |c| sqlx::query(
                "DELETE FROM audit_log WHERE seq >= $1 AND seq <= $2 \
                 AND seq < (SELECT MAX(seq) FROM audit_log WHERE seq <= $3)",
            )
            .bind(from)
            .bind(to)
            .bind(chains::last(chain))
            .execute(c)
            .await?
            .rows_affected());
            tx.commit().await?;
            deleted_here += deleted;
            from = to + 1;
        }
        report.pruned_records += deleted_here;
        if deleted_here > 0 {
            tracing::info!(
                records = deleted_here,
                upto,
                "archived audit records pruned from the database"
            );
        }
    }
    Ok(report)
}

/// The first problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkFault {
    /// A record breaks the chain (in an archive file or in the database).
    Chain(ChainFault),
    /// An archived segment's file is gone.
    Missing { file: String },
    /// An archived segment's file is not the one archived (its SHA-256 differs).
    Altered { file: String },
    /// The file's content does not match its row (range, head, sealing checkpoint, syntax).
    Inconsistent { file: String, detail: String },
    /// A record still in the database differs from its archived copy.
    LiveDiffers { seq: i64 },
    /// A record of a segment not pruned is missing from the database.
    LiveMissing { seq: i64 },
}

impl std::fmt::Display for WalkFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkFault::Chain(c) => c.fmt(f),
            WalkFault::Missing { file } => write!(f, "archive file {file} is missing"),
            WalkFault::Altered { file } => write!(
                f,
                "archive file {file}: SHA-256 differs from the one recorded when it was archived (altered)"
            ),
            WalkFault::Inconsistent { file, detail } => {
                write!(f, "archive file {file}: {detail}")
            }
            WalkFault::LiveDiffers { seq } => write!(
                f,
                "record {seq}: the database copy differs from the archived one (edited)"
            ),
            WalkFault::LiveMissing { seq } => write!(
                f,
                "record {seq}: archived but missing from the database although its segment was not pruned (removed)"
            ),
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct WalkReport {
    /// Records verified, archived and live.
    pub records: i64,
    /// Chains walked.
    pub chains: usize,
    /// Of which read from archive files.
    pub archived: i64,
    pub segments: usize,
    pub head: String,
    pub fault: Option<WalkFault>,
    /// The archived hash of each record that has a checkpoint (for checkpoints over records
    /// no longer in the database).
    pub checkpointed: BTreeMap<i64, String>,
}

/// The chains as they are walked.
struct Walk {
    chain: ChainWalk,
    report: WalkReport,
}

impl Walk {
    fn step(&mut self, rec: &AuditRecord) -> Option<WalkFault> {
        self.chain.check(rec).map(WalkFault::Chain)
    }
    fn advance(&mut self, rec: &AuditRecord) {
        self.chain.advance(rec);
        self.report.records += 1;
    }
    fn fail(mut self, fault: WalkFault) -> WalkReport {
        self.report.chains = self.chain.chains;
        self.report.head = self.chain.prev().to_string();
        self.report.fault = Some(fault);
        self.report
    }
}

/// Walk every chain: each archive file (its SHA-256 against its row, its records, its
/// sealing checkpoint), across into the records still in the database, which must match their
/// archived copies, then the rest of the live table. Segments and live records are both taken
/// in `seq` order, so chains come one after another: the live records of a chain are walked
/// before the next chain's first segment. `progress` is told each record walked.
/// The archive files are read with blocking I/O (for the offline tools).
///
/// `tx` is a read transaction on one snapshot ([`Db::snapshot`]): the segments, checkpoints
/// and live records of one moment. The caller checks the checkpoints in the same snapshot
/// (`super::cli::verify`), so that a segment archived and pruned meanwhile changes neither.
pub async fn verify(
    tx: &mut Tx,
    dir: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<WalkReport> {
    use futures_util::TryStreamExt;
    let mut tx = tx;
    let segs: Vec<Segment> = on!(&mut tx => |c| sqlx::query_as("SELECT * FROM audit_segments ORDER BY first_seq")
        .fetch_all(c)
        .await?);
    let checkpoints: BTreeMap<i64, Checkpoint> =
        on!(&mut tx => |c| sqlx::query_as::<_, Checkpoint>(
        "SELECT seq, head_hash, time, key_fingerprint, signature FROM audit_checkpoints",
    )
    .fetch_all(c)
    .await?)
        .into_iter()
        .map(|c| (c.seq, c))
        .collect();
    let taken = chains::taken(&mut tx).await?;
    let tx = &mut tx;
    on!(tx, {
        let mut live = sqlx::query_as::<_, AuditRecord>(
        "SELECT seq, time, request_id, principal, tenant, action, resource, decision, policies, \
         outcome, source, policy_hash, trace_id, user_agent, front, access_key_id, prev_hash, hash FROM audit_log ORDER BY seq",
    )
    .fetch(tx);
        let mut pending = live.try_next().await?;
        let mut walk = Walk {
            chain: ChainWalk::new(taken),
            report: WalkReport {
                segments: segs.len(),
                ..WalkReport::default()
            },
        };
        for seg in &segs {
            // The live records before this segment: the rest of the chains before its chain.
            while let Some(rec) = pending.take_if(|r| r.seq < seg.first_seq) {
                if let Some(fault) = walk.step(&rec) {
                    return Ok(walk.fail(fault));
                }
                walk.advance(&rec);
                progress(1);
                pending = live.try_next().await?;
            }
            let file = seg.file_name.clone();
            let path: PathBuf = dir.join(&seg.file_name);
            if !path.exists() {
                return Ok(walk.fail(WalkFault::Missing { file }));
            }
            if file_sha256(&path)? != seg.file_sha256 {
                return Ok(walk.fail(WalkFault::Altered { file }));
            }
            if let Some(fault) = walk.chain.enter(seg.first_seq) {
                return Ok(walk.fail(WalkFault::Chain(fault)));
            }
            if seg.first_seq != walk.chain.expected()
                || chains::of(seg.last_seq) != chains::of(seg.first_seq)
            {
                let detail = format!(
                    "its row runs from record {} to {} where record {} was expected first",
                    seg.first_seq,
                    seg.last_seq,
                    walk.chain.expected()
                );
                return Ok(walk.fail(WalkFault::Inconsistent { file, detail }));
            }
            let inconsistent = |detail: String| WalkFault::Inconsistent {
                file: seg.file_name.clone(),
                detail,
            };
            let mut sealed = None;
            let lines = read_segment(&path)
                .map_err(|e| anyhow::anyhow!("archive file {}: {e}", path.display()))?;
            for line in lines {
                let rec: AuditRecord = match line {
                    Err(e) => return Ok(walk.fail(inconsistent(format!("unreadable: {e}")))),
                    Ok(Line::Checkpoint(SealLine { checkpoint })) => {
                        sealed = Some(checkpoint);
                        continue;
                    }
                    Ok(Line::Record(r)) => (*r).into(),
                };
                if sealed.is_some() || rec.seq > seg.last_seq {
                    return Ok(walk.fail(inconsistent(format!(
                        "record {} lies beyond the segment's end",
                        rec.seq
                    ))));
                }
                if let Some(fault) = walk.step(&rec) {
                    return Ok(walk.fail(fault));
                }
                match pending.take() {
                    Some(l) if l.seq == rec.seq => {
                        if l.hash != rec.hash
                            || l.prev_hash != rec.prev_hash
                            || l.compute_hash() != l.hash
                        {
                            return Ok(walk.fail(WalkFault::LiveDiffers { seq: l.seq }));
                        }
                        pending = live.try_next().await?;
                    }
                    Some(l) if l.seq < rec.seq => {
                        return Ok(walk.fail(WalkFault::LiveDiffers { seq: l.seq }))
                    }
                    other => {
                        if seg.pruned_at.is_none() {
                            return Ok(walk.fail(WalkFault::LiveMissing { seq: rec.seq }));
                        }
                        pending = other;
                    }
                }
                if checkpoints.contains_key(&rec.seq) {
                    walk.report.checkpointed.insert(rec.seq, rec.hash.clone());
                }
                walk.advance(&rec);
                walk.report.archived += 1;
                progress(1);
            }
            if walk.chain.expected() != seg.last_seq + 1 || walk.chain.prev() != seg.head_hash {
                let detail = format!(
                    "ends at record {} where its row says {}",
                    walk.chain.expected() - 1,
                    seg.last_seq
                );
                return Ok(walk.fail(inconsistent(detail)));
            }
            if sealed.as_ref() != checkpoints.get(&seg.last_seq) {
                return Ok(walk.fail(inconsistent(format!(
                    "its sealing checkpoint is not the database's checkpoint at record {}",
                    seg.last_seq
                ))));
            }
        }
        while let Some(rec) = pending {
            if let Some(fault) = walk.step(&rec) {
                return Ok(walk.fail(fault));
            }
            walk.advance(&rec);
            progress(1);
            pending = live.try_next().await?;
        }
        walk.report.chains = walk.chain.chains;
        walk.report.head = walk.chain.prev().to_string();
        Ok(walk.report)
    })
}

/// Records matching `f`: those pruned from the database from their archived segments in
/// `archive_dir` (only segments whose time span the range reaches are read, each only if its
/// SHA-256 is the one recorded when it was archived), chain by chain, then the live ones in
/// `seq` order (chain by chain too). The segments' chains and checkpoints are `verify`'s.
pub async fn select_with_archive(
    db: &Db,
    archive_dir: &Path,
    f: &Filter,
) -> anyhow::Result<Vec<ExportedRecord>> {
    // Each chain's oldest live record: its archived records from there on are read live.
    let mut first_live: BTreeMap<i64, i64> = BTreeMap::new();
    for chain in chains::present(db, Table::Log).await? {
        let first: Option<i64> = on!(db => |c| sqlx::query_scalar(
            "SELECT MIN(seq) FROM audit_log WHERE seq > $1 AND seq <= $2",
        )
        .bind(chains::origin(chain))
        .bind(chains::last(chain))
        .fetch_one(c)
        .await?);
        first_live.extend(first.map(|f| (chain, f)));
    }
    let first_live = |seq: i64| first_live.get(&chains::of(seq)).copied();
    let since = f.since.as_deref().map(normalise);
    let until = f.until.as_deref().map(normalise);
    let mut out = Vec::new();
    let limit = f.limit.filter(|l| *l >= 0).map(|l| l as usize);
    for seg in segments(db).await? {
        if first_live(seg.first_seq).is_some_and(|live| seg.first_seq >= live)
            || since.as_ref().is_some_and(|t| &seg.last_time < t)
            || until.as_ref().is_some_and(|t| &seg.first_time > t)
        {
            continue;
        }
        let path = archive_dir.join(&seg.file_name);
        // The file must be the one archived: whoever can write the archive directory could
        // otherwise show edited records here that `verify` would refuse. Read once, and the
        // bytes hashed are the bytes read (a file swapped between a check and a second open
        // would pass); the compressed file is small beside the records this collects.
        let bytes = std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("archive file {}: {e}", path.display()))?;
        if hex::encode(digest::digest(&digest::SHA256, &bytes)) != seg.file_sha256 {
            anyhow::bail!(
                "{}",
                WalkFault::Altered {
                    file: path.display().to_string()
                }
            );
        }
        for line in lines_of(bytes.as_slice()) {
            let line = line.map_err(|e| anyhow::anyhow!("archive file {}: {e}", path.display()))?;
            let Line::Record(r) = line else {
                continue;
            };
            if first_live(r.seq).is_some_and(|live| r.seq >= live) {
                break;
            }
            if f.matches(&r) {
                out.push(*r);
                if limit.is_some_and(|l| out.len() >= l) {
                    return Ok(out);
                }
            }
        }
    }
    let rest = Filter {
        limit: limit.map(|l| (l - out.len()) as i64),
        ..f.clone()
    };
    out.extend(super::export::select(db, &rest).await?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_json() -> serde_json::Value {
        let rec = AuditRecord {
            seq: 1,
            time: "2026-01-01T00:00:00.000Z".into(),
            request_id: "r".into(),
            principal: "p".into(),
            tenant: "t".into(),
            action: "Encrypt".into(),
            resource: "k".into(),
            decision: "allow".into(),
            policies: "[]".into(),
            outcome: "ok".into(),
            source: "127.0.0.1".into(),
            policy_hash: None,
            trace_id: None,
            user_agent: None,
            front: None,
            access_key_id: None,
            prev_hash: GENESIS.into(),
            hash: "h".into(),
        };
        serde_json::to_value(ExportedRecord::from(rec)).unwrap()
    }

    fn checkpoint_json() -> serde_json::Value {
        serde_json::json!({
            "seq": 1, "head_hash": "h", "time": "t", "key_fingerprint": "f", "signature": "s"
        })
    }

    /// A record line that also carries a `checkpoint` field is a record: taken for the seal
    /// (the untagged enum tries the checkpoint first, and serde ignores unknown fields by
    /// default), it would end the segment there and vanish from `export` and `search`.
    #[test]
    fn a_line_with_more_than_a_checkpoint_is_never_the_seal() {
        let seal = serde_json::json!({ "checkpoint": checkpoint_json() });
        assert!(matches!(
            serde_json::from_value::<Line>(seal).unwrap(),
            Line::Checkpoint(SealLine { checkpoint }) if checkpoint.seq == 1
        ));
        let mut record = record_json();
        record["checkpoint"] = checkpoint_json();
        assert!(matches!(
            serde_json::from_value::<Line>(record).unwrap(),
            Line::Record(r) if r.action == "Encrypt"
        ));
        let seal_and_more = serde_json::json!({ "checkpoint": checkpoint_json(), "extra": 1 });
        assert!(!matches!(
            serde_json::from_value::<Line>(seal_and_more),
            Ok(Line::Checkpoint(_))
        ));
    }
}
