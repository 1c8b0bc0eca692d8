//! `keyplane audit …`: what an auditor runs against a data directory (read-only): `verify` (the
//! hash chain, then the signed checkpoints), `public-key`, `export` and `search`.

use std::io::Write;
use std::path::Path;

use super::checkpoint::{self, CHECKPOINT_FILE, PUBLIC_KEY_FILE};
use super::export::{self, Filter};
use crate::store::Db;

/// Verify the chain and the checkpoints. `public_key`: a trusted copy of the audit public key
/// (default: the one published in the data dir). Returns whether everything holds.
pub async fn verify(db: &Db, data_dir: &Path, public_key: Option<&Path>) -> anyhow::Result<bool> {
    let report = super::verify(db.reader()).await?;
    if let Some(fault) = &report.fault {
        eprintln!(
            "audit chain BROKEN after {} good records: {fault}",
            report.records
        );
        return Ok(false);
    }
    println!(
        "audit chain OK: {} records, head {}",
        report.records, report.head
    );
    let key_path = public_key
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data_dir.join(PUBLIC_KEY_FILE));
    let Ok(pem) = std::fs::read_to_string(&key_path) else {
        eprintln!(
            "no audit public key at {}: checkpoints not verified (tail truncation and re-hashing are not detected)",
            key_path.display()
        );
        return Ok(false);
    };
    let file = data_dir.join(CHECKPOINT_FILE);
    let cps = checkpoint::verify(db.reader(), &pem, Some(&file)).await?;
    match (&cps.fault, cps.last_checkpoint) {
        (Some(fault), _) => {
            eprintln!("audit checkpoints FAILED: {fault}");
            Ok(false)
        }
        (None, Some(last)) => {
            println!(
                "audit checkpoints OK: {} signed checkpoints, the last at record {last}; {} records after it are protected by the chain only",
                cps.checkpoints,
                report.records - last
            );
            Ok(true)
        }
        (None, None) => {
            println!("audit checkpoints: none signed yet; the chain alone protects the log");
            Ok(true)
        }
    }
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

/// Write the selected records as JSON lines to stdout.
pub async fn export(db: &Db, filter: &Filter) -> anyhow::Result<bool> {
    let rows = export::select(db.reader(), filter).await?;
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
