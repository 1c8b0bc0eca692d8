//! `keyplane audit …`: what an auditor runs against a data directory (read-only): `verify` (the
//! hash chain through the archive files and the database, then the signed checkpoints),
//! `public-key`, `export` and `search` (archived records included); and the operator's
//! `archive`, which archives sealed segments and prunes under the retention limits.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::checkpoint::{self, CHECKPOINT_FILE, PUBLIC_KEY_FILE};
use super::export::Filter;
use super::{archive, chains};
use crate::config::Config;
use crate::store::Db;

/// Verify the chain (archive files, then the live table) and the checkpoints. `public_keys`:
/// trusted copies of the audit public keys, one per node of a cluster (default: the one
/// published in the data dir). Shows a progress bar on a terminal (none in scripts). Returns
/// whether everything holds.
pub async fn verify(db: &Db, config: &Config, public_keys: &[PathBuf]) -> anyhow::Result<bool> {
    let data_dir = &config.data_dir;
    // Every record ever written, archived or live: each chain's head is its count.
    let mut total = 0;
    for chain in chains::present(db, chains::Table::Log).await? {
        let head = chains::head(db, chain).await?;
        total += head.map_or(0, |(seq, _)| seq - chains::origin(chain));
    }
    // Hidden when stderr is not a terminal.
    let bar = indicatif::ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records verified")
            .expect("static template"),
    );
    let report = archive::verify(db, &config.audit_archive_dir(), &|n| bar.inc(n)).await;
    bar.finish_and_clear();
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
    let key_paths = if public_keys.is_empty() {
        vec![data_dir.join(PUBLIC_KEY_FILE)]
    } else {
        public_keys.to_vec()
    };
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
    let file = data_dir.join(CHECKPOINT_FILE);
    let cps = checkpoint::verify(db, &pems, Some(&file), &report.checkpointed).await?;
    match (&cps.fault, cps.last_checkpoint) {
        (Some(fault), _) => {
            eprintln!("audit checkpoints FAILED: {fault}");
            Ok(false)
        }
        (None, Some(_)) => {
            println!(
                "audit checkpoints OK: {} signed checkpoints; {} records after their chain's last checkpoint are protected by the chain only",
                cps.checkpoints, cps.unsigned
            );
            Ok(true)
        }
        (None, None) => {
            println!("audit checkpoints: none signed yet; the chain alone protects the log");
            Ok(true)
        }
    }
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
