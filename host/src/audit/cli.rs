//! `keyplane audit …`: what an auditor runs against a data directory (read-only): `verify` (the
//! hash chain through the archive files and the database, then the signed checkpoints, both
//! in one database snapshot), `public-key`, `export` and `search` (archived records included);
//! and the operator's `archive`, which archives sealed segments and prunes under the retention
//! limits.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::checkpoint::{self, CheckpointFile, CHECKPOINT_FILE, PUBLIC_KEY_FILE};
use super::export::Filter;
use super::{archive, chains};
use crate::config::Config;
use crate::store::Db;

/// What `keyplane audit verify` is asked.
#[derive(Debug, Default, Clone)]
pub struct VerifyOptions {
    /// Trusted copies of the audit public keys, one per node of a cluster (default: the one
    /// published in the data dir, with a warning that it is only as trustworthy as the dir).
    pub public_keys: Vec<PathBuf>,
    /// Checkpoint files the database's checkpoints must include (each node's, and the copies
    /// on write-once storage; default: the data dir's, if there is one).
    pub checkpoint_files: Vec<PathBuf>,
    /// Fail when any record is protected by its chain only (no checkpoint after it): what an
    /// auditor asks of a stopped system, where every node sealed its chains at shutdown.
    pub require_signed: bool,
}

/// A hidden bar when stderr is not a terminal (none in scripts).
fn bar(template: &str, len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("static template"));
    bar
}

impl checkpoint::Progress for indicatif::ProgressBar {
    fn total(&self, checkpoints: u64) {
        self.set_length(checkpoints);
    }
    fn checked(&self, n: u64) {
        self.inc(n);
    }
}

/// Verify the chain (archive files, then the live table) and the checkpoints (against the
/// given checkpoint files and public keys). Shows a progress bar for each phase on a terminal
/// (none in scripts). Returns whether everything holds.
pub async fn verify(db: &Db, config: &Config, options: &VerifyOptions) -> anyhow::Result<bool> {
    let data_dir = &config.data_dir;
    // The checkpoint files first, then the snapshot: a node commits a checkpoint before it
    // appends it to its file, so the snapshot holds every checkpoint the files do even while
    // the node runs (read the other way round, one signed meanwhile would be reported
    // missing from the database).
    let files = if options.checkpoint_files.is_empty() {
        // A node that never signed has no file yet.
        let default = data_dir.join(CHECKPOINT_FILE);
        if default.exists() {
            vec![CheckpointFile::read(&default)?]
        } else {
            Vec::new()
        }
    } else {
        options
            .checkpoint_files
            .iter()
            .map(|path| CheckpointFile::read(path))
            .collect::<anyhow::Result<_>>()?
    };
    // Every record ever written, archived or live: each chain's head is its count.
    let mut total = 0;
    for chain in chains::present(db, chains::Table::Log).await? {
        let head = chains::head(db, chain).await?;
        total += head.map_or(0, |(seq, _)| seq - chains::origin(chain));
    }
    // The chain walk and the checkpoints in one snapshot: a segment archived and pruned
    // between them would take checkpointed records out of the checkpoint phase's sight.
    let mut snapshot = db.snapshot().await?;
    let records = bar("{bar:40} {pos}/{len} records verified", total.max(0) as u64);
    let report = archive::verify(&mut snapshot, &config.audit_archive_dir(), &|n| {
        records.inc(n)
    })
    .await;
    records.finish_and_clear();
    let report = report?;
    if let Some(fault) = &report.fault {
        eprintln!(
            "audit chain BROKEN after {} good records: {fault}",
            report.records
        );
        return Ok(false);
    }
    println!(
        "audit chain OK: {} records in {} chains ({} from {} archived segments)",
        report.records, report.chains, report.archived, report.segments
    );
    let key_paths = if options.public_keys.is_empty() {
        let path = data_dir.join(PUBLIC_KEY_FILE);
        eprintln!(
            "warning: no --public-key given: the checkpoints are checked against {}, the key in the data directory, which whoever can rewrite the data directory can replace (with checkpoints signed by a key of their own). Pass a trusted copy kept elsewhere with --public-key FILE, one per node (`keyplane audit public-key` prints a node's key and its fingerprint).",
            path.display()
        );
        vec![path]
    } else {
        options.public_keys.clone()
    };
    // A test archives and prunes here, after the walk, before the checkpoints.
    crate::pause::point("audit-verify:walked", "").await;
    let mut pems = Vec::with_capacity(key_paths.len());
    for key_path in &key_paths {
        let Ok(pem) = std::fs::read_to_string(key_path) else {
            eprintln!(
                "no audit public key at {}: checkpoints not verified (tail truncation and re-hashing are not detected)",
                key_path.display()
            );
            return Ok(false);
        };
        pems.push(pem);
    }
    let checked = bar("{bar:40} {pos}/{len} checkpoints verified", 0);
    let cps =
        checkpoint::verify(&mut snapshot, &pems, &files, &report.checkpointed, &checked).await;
    checked.finish_and_clear();
    let cps = cps?;
    if let Some(fault) = &cps.fault {
        eprintln!("audit checkpoints FAILED: {fault}");
        return Ok(false);
    }
    match cps.last_checkpoint {
        Some(_) => println!(
            "audit checkpoints OK: {} signed checkpoints; {} records after their chain's last checkpoint are protected by the chain only",
            cps.checkpoints, cps.unsigned
        ),
        None => println!("audit checkpoints: none signed yet; the chain alone protects the log"),
    }
    // Per chain, so that a chain no node signed (on PostgreSQL, one fabricated whole, its
    // checkpoints and all) is named.
    for (chain, unsigned) in &cps.unsigned_by_chain {
        match unsigned.last_checkpoint {
            Some(seq) => println!(
                "  chain {chain}: {} records after its last checkpoint (record {seq})",
                unsigned.records
            ),
            None => println!(
                "  chain {chain}: {} records, no checkpoint of it signed",
                unsigned.records
            ),
        }
    }
    if options.require_signed && cps.unsigned > 0 {
        eprintln!(
            "audit checkpoints FAILED (--require-signed): {} records are protected by their chain only (after their chain's last checkpoint), so their tail could be cut off undetected",
            cps.unsigned
        );
        return Ok(false);
    }
    Ok(true)
}

/// Archive the sealed segments not yet archived and prune under the retention limits (or, in
/// a dry run, list what would be done).
pub async fn archive(db: &Db, config: &Config, dry_run: bool) -> anyhow::Result<bool> {
    let dir = config.audit_archive_dir();
    let now = chrono::Utc::now().timestamp();
    let report = archive::run(db, &config.audit, &dir, now, dry_run)
        .await
        .map_err(|e| anyhow::anyhow!("{e} (details in the log above)"))?;
    let (archive_verb, prune_verb) = if dry_run {
        ("would archive", "would prune")
    } else {
        ("archived", "pruned")
    };
    for s in &report.archived {
        println!(
            "{archive_verb} records {}..={} to {}",
            s.first_seq,
            s.last_seq,
            dir.join(&s.file_name).display()
        );
    }
    for (first, last) in &report.pruned_segments {
        println!("{prune_verb} records {first}..={last} from the database");
    }
    println!(
        "{} {} segment(s); {} {} record(s){}",
        archive_verb,
        report.archived.len(),
        prune_verb,
        report.pruned_records,
        if dry_run { " (dry run)" } else { "" }
    );
    Ok(true)
}

/// Print the published audit public key and its fingerprint.
pub fn public_key(data_dir: &Path) -> anyhow::Result<bool> {
    let path = data_dir.join(PUBLIC_KEY_FILE);
    let pem = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e} (the server writes it on start)", path.display()))?;
    let (_, der) = der::pem::decode_vec(pem.trim().as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: not PEM: {e}", path.display()))?;
    print!("{pem}");
    eprintln!(
        "fingerprint (SHA-256 of the DER public key): {}",
        checkpoint::fingerprint(&der)
    );
    Ok(true)
}

/// Write the selected records (archived ones included) as JSON lines to stdout.
pub async fn export(db: &Db, config: &Config, filter: &Filter) -> anyhow::Result<bool> {
    let rows = super::archive::select_with_archive(db, &config.audit_archive_dir(), filter).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for r in &rows {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    eprintln!("{} records", rows.len());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    use super::*;
    use crate::audit::checkpoint::{Checkpoint, CheckpointFault};
    use crate::audit::{AuditEvent, GENESIS};
    use crate::store::testing;

    /// The SubjectPublicKeyInfo DER of a P-256 key, up to its uncompressed point.
    const P256_SPKI_PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";

    /// An audit key outside any HSM, signing as a node's does.
    struct Signer {
        key: EcdsaKeyPair,
        spki: Vec<u8>,
    }

    impl Signer {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            let mut spki = hex::decode(P256_SPKI_PREFIX).unwrap();
            spki.extend_from_slice(key.public_key().as_ref());
            Signer { key, spki }
        }

        fn pem(&self) -> String {
            crate::algorithms::public_key::spki_pem(&self.spki).unwrap()
        }

        fn fingerprint(&self) -> String {
            checkpoint::fingerprint(&self.spki)
        }

        /// A checkpoint of `seq` (whose hash is `head_hash`) signed by this key, naming
        /// `named`'s.
        fn sign(&self, seq: i64, head_hash: &str, named: &Signer) -> Checkpoint {
            use base64::Engine;
            let time = format!("2026-01-01T00:00:{:02}.000Z", seq % 60);
            let message = checkpoint::signed_message(seq, head_hash, &time);
            let signature = self.key.sign(&SystemRandom::new(), &message).unwrap();
            Checkpoint {
                seq,
                head_hash: head_hash.into(),
                time,
                key_fingerprint: named.fingerprint(),
                signature: base64::engine::general_purpose::STANDARD.encode(signature),
            }
        }
    }

    /// A stopped node's data dir and database: `records` records on the shared chain, a
    /// checkpoint by `signer` after every `every` (in the table and the file), its public key
    /// published.
    struct Log {
        _db_guard: testing::Guard,
        _dir: tempfile::TempDir,
        db: Db,
        config: Config,
    }

    async fn log(records: usize, every: usize, signer: &Signer) -> Log {
        let (db_guard, db) = testing::sqlite().await;
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let events: Vec<AuditEvent> = (0..records)
            .map(|i| AuditEvent::system("t", "test", "t", "Encrypt", format!("k-{i}")))
            .collect();
        let chained = crate::audit::chain((0, GENESIS.into()), &events.iter().collect::<Vec<_>>());
        let mut tx = db.begin_bookkeeping().await.unwrap();
        crate::audit::insert_records(&mut tx, &chained)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let checkpoints: Vec<Checkpoint> = chained
            .iter()
            .filter(|r| (r.seq as usize).is_multiple_of(every))
            .map(|r| signer.sign(r.seq, &r.hash, signer))
            .collect();
        for cp in &checkpoints {
            insert_checkpoint(&db, cp).await;
        }
        let lines: String = checkpoints
            .iter()
            .map(|cp| serde_json::to_string(cp).unwrap() + "\n")
            .collect();
        std::fs::write(dir.path().join(CHECKPOINT_FILE), lines).unwrap();
        std::fs::write(dir.path().join(PUBLIC_KEY_FILE), signer.pem()).unwrap();
        Log {
            _db_guard: db_guard,
            _dir: dir,
            db,
            config,
        }
    }

    async fn insert_checkpoint(db: &Db, cp: &Checkpoint) {
        assert!(
            checkpoint::store(db, cp).await.unwrap(),
            "a checkpoint is there"
        );
    }

    /// The checkpoints are checked in the snapshot the chain was walked in: a segment archived
    /// and pruned in between (the running node's scheduler) took the checkpointed records out
    /// of the table after the walk had read them live, and a check on the pool found neither
    /// the record nor an archived copy, and called the log rewritten.
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    #[tokio::test(flavor = "multi_thread")]
    async fn checkpoints_are_checked_in_the_snapshot_the_chain_was_walked_in() {
        let signer = Signer::new();
        let log = log(30, 10, &signer).await;
        let options = VerifyOptions {
            public_keys: vec![log.config.data_dir.join(PUBLIC_KEY_FILE)],
            ..VerifyOptions::default()
        };
        crate::pause::arm("audit-verify:walked", "");
        let archiver = async {
            assert!(
                crate::pause::wait_reached(
                    "audit-verify:walked",
                    "",
                    std::time::Duration::from_secs(20)
                )
                .await,
                "verify never reached the checkpoints"
            );
            // Segments 1..=10 and 11..=20 archived and pruned; 21..=30 (the head) stays.
            let retention = crate::config::AuditConfig {
                archive_segment_records: 10,
                retention_records: 5,
                ..Default::default()
            };
            let dir = log.config.audit_archive_dir();
            let now = chrono::Utc::now().timestamp();
            let report = archive::run(&log.db, &retention, &dir, now, false)
                .await
                .unwrap();
            crate::pause::release("audit-verify:walked", "");
            report.pruned_records
        };
        let (verified, pruned) = tokio::join!(verify(&log.db, &log.config, &options), archiver);
        assert_eq!(pruned, 20);
        assert!(verified.unwrap(), "a prune beside verify failed it");
        // A verify started afterwards reads the pruned records from the archive.
        assert!(verify(&log.db, &log.config, &options).await.unwrap());
    }

    #[derive(Default)]
    struct Counted {
        total: AtomicU64,
        checked: AtomicU64,
    }

    impl checkpoint::Progress for Counted {
        fn total(&self, checkpoints: u64) {
            self.total.store(checkpoints, Ordering::SeqCst);
        }
        fn checked(&self, n: u64) {
            self.checked.fetch_add(n, Ordering::SeqCst);
        }
    }

    /// The checkpoint phase reports how far it got (a terminal shows it as a bar): every
    /// checkpoint of the files and of the database, counted once.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_checkpoint_phase_reports_its_progress() {
        let signer = Signer::new();
        let log = log(300, 10, &signer).await;
        let file = CheckpointFile::read(&log.config.data_dir.join(CHECKPOINT_FILE)).unwrap();
        let counted = Counted::default();
        let report = checkpoint::verify(
            &log.db,
            &[signer.pem()],
            &[file],
            &BTreeMap::new(),
            &counted,
        )
        .await
        .unwrap();
        assert_eq!(report.fault, None);
        assert_eq!(report.checkpoints, 30);
        assert_eq!(counted.total.load(Ordering::SeqCst), 60);
        assert_eq!(counted.checked.load(Ordering::SeqCst), 60);
    }

    /// The first fault of the checkpoints of `db` under the trusted `keys`.
    async fn fault(db: &Db, keys: &[&Signer]) -> Option<CheckpointFault> {
        let pems: Vec<String> = keys.iter().map(|k| k.pem()).collect();
        checkpoint::verify(db, &pems, &[], &BTreeMap::new(), &())
            .await
            .unwrap()
            .fault
    }

    /// Put `cp` in the place of the database's checkpoint at its record.
    async fn replace_checkpoint(db: &Db, cp: &Checkpoint) {
        let mut tx = db.begin_bookkeeping().await.unwrap();
        let deleted: crate::error::Result<()> = async {
            crate::store::on!(&mut tx => |c| sqlx::query("DELETE FROM audit_checkpoints WHERE seq = $1")
                .bind(cp.seq)
                .execute(c)
                .await?
                .rows_affected());
            Ok(())
        }
        .await;
        deleted.unwrap();
        tx.commit().await.unwrap();
        insert_checkpoint(db, cp).await;
    }

    /// A checkpoint must verify under the trusted key whose fingerprint it names, among a
    /// cluster's keys too: one signed by node A's key but naming node B's is refused.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_checkpoint_verifies_only_under_the_key_it_names() {
        let (a, b, stranger) = (Signer::new(), Signer::new(), Signer::new());
        let log = log(20, 10, &a).await;
        let (db, trusted) = (&log.db, [&a, &b]);
        let head = crate::audit::get(db, 20).await.unwrap().unwrap();
        assert_eq!(fault(db, &trusted).await, None);
        // Signed by A, naming B (both trusted).
        replace_checkpoint(db, &a.sign(20, &head.hash, &b)).await;
        assert_eq!(
            fault(db, &trusted).await,
            Some(CheckpointFault::WrongKey {
                seq: 20,
                named: b.fingerprint(),
                signer: a.fingerprint(),
            })
        );
        // Signed by A, naming a key nobody trusts.
        replace_checkpoint(db, &a.sign(20, &head.hash, &stranger)).await;
        assert!(matches!(
            fault(db, &trusted).await,
            Some(CheckpointFault::WrongKey { seq: 20, .. })
        ));
        // Signed by a key nobody trusts, naming itself.
        replace_checkpoint(db, &stranger.sign(20, &head.hash, &stranger)).await;
        assert_eq!(
            fault(db, &trusted).await,
            Some(CheckpointFault::UnknownKey {
                seq: 20,
                fingerprint: stranger.fingerprint(),
            })
        );
        // Signed by a key nobody trusts, naming B.
        replace_checkpoint(db, &stranger.sign(20, &head.hash, &b)).await;
        assert_eq!(
            fault(db, &trusted).await,
            Some(CheckpointFault::BadSignature { seq: 20 })
        );
        // Signed by B, naming B: another node's checkpoint, fine.
        replace_checkpoint(db, &b.sign(20, &head.hash, &b)).await;
        assert_eq!(fault(db, &trusted).await, None);
    }
}
