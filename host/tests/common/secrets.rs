//! What the secrets scan (`scripts/scan-secrets`, run by `scripts/test` after the suite)
//! looks at, kept when `KEYPLANE_TEST_ARTIFACTS` names a directory: every node's output (its
//! log lines) and its data directory as it left it (database, SoftHSM2 token, plugin blobs,
//! audit archives and exports), and the secrets the suite used (`secrets.txt`, base64 lines):
//! plaintexts it sent, data keys and private keys it was answered, bearer tokens, access-key
//! secrets and HSM PINs. The scan must find none of them in any of those files.
//!
//! The files a secret is meant to be in are left out: the bootstrap admin's token
//! (`admin.token`), the HSM PINs (`hsm.pin`, `hsm-so.pin`), and what the tests' own clients
//! write (`client-home`: their configuration, the files they encrypt).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

/// Shorter secrets are not recorded: a few bytes occur by chance in any database.
const MIN_LEN: usize = 12;

/// Files of a data directory where a secret belongs (see the module docs).
const MEANT_TO_HOLD_SECRETS: &[&str] = &["admin.token", "hsm.pin", "hsm-so.pin", "client-home"];

fn root() -> Option<PathBuf> {
    std::env::var_os("KEYPLANE_TEST_ARTIFACTS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A new directory for one node's artifacts (None when the scan is off).
pub fn node_dir() -> Option<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = root()?.join(format!(
        "node-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// Record a secret the suite used.
pub fn record(secret: &[u8]) {
    if secret.len() < MIN_LEN {
        return;
    }
    let Some(root) = root() else { return };
    // One write per line on an O_APPEND file: lines from parallel tests do not interleave.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("secrets.txt"))
    {
        let _ = f.write_all(format!("{}\n", STANDARD.encode(secret)).as_bytes());
    }
}

/// Record the secrets in a native request body and its answer.
pub fn record_exchange(request: &[u8], answer: &Value) {
    if root().is_none() {
        return;
    }
    if let Ok(request) = serde_json::from_slice::<Value>(request) {
        record_fields(&request, &["plaintext"], true);
    }
    record_fields(answer, &["plaintext", "private_key_plaintext"], true);
    record_fields(answer, &["token", "secret_access_key"], false);
}

fn record_fields(v: &Value, fields: &[&str], base64: bool) {
    for field in fields {
        if let Some(s) = v.get(*field).and_then(Value::as_str) {
            match base64 {
                true => {
                    if let Ok(bytes) = STANDARD.decode(s) {
                        record(&bytes);
                    }
                }
                false => record(s.as_bytes()),
            }
        }
    }
}

/// Keep a copy of what a node left in `data_dir`, and record its PINs and admin token.
pub fn keep(data_dir: &Path, into: &Path) {
    for secret in MEANT_TO_HOLD_SECRETS {
        if let Ok(s) = std::fs::read_to_string(data_dir.join(secret)) {
            record(s.trim().as_bytes());
        }
    }
    copy(data_dir, &into.join("data"));
}

fn copy(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    let _ = std::fs::create_dir_all(to);
    for e in entries.flatten() {
        let name = e.file_name();
        if MEANT_TO_HOLD_SECRETS.iter().any(|m| name == *m) {
            continue;
        }
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            copy(&e.path(), &to.join(&name));
        } else if kind.is_file() {
            let _ = std::fs::copy(e.path(), to.join(&name));
        }
    }
}
