//! Usage counters per key version (encryptions, decryptions, signatures), which feed rotation
//! schedules (`usage-limit`) and `describe-key`. Requests count in memory (no write on the
//! hot path); [`Usage::flush`] adds the deltas to `key_versions` in one transaction, every
//! second and before each scheduler pass. A crash loses at most the last second of counts;
//! a failed flush keeps its deltas for the next one.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::Result;
use crate::store::{keys, Db};

/// What a use was.
#[derive(Debug, Clone, Copy)]
pub enum UseKind {
    Encrypt = 0,
    Decrypt = 1,
    Sign = 2,
}

/// Counts not yet written, per (key, version).
#[derive(Debug, Default)]
pub struct Usage {
    pending: Mutex<HashMap<(String, i64), [i64; 3]>>,
}

impl Usage {
    /// Count one use.
    pub fn record(&self, key_id: &str, version: i64, kind: UseKind) {
        if let Ok(mut p) = self.pending.lock() {
            p.entry((key_id.to_string(), version)).or_default()[kind as usize] += 1;
        }
    }

    /// Counts of a version not yet written.
    pub fn pending(&self, key_id: &str, version: i64) -> [i64; 3] {
        self.pending
            .lock()
            .ok()
            .and_then(|p| p.get(&(key_id.to_string(), version)).copied())
            .unwrap_or_default()
    }

    /// Write the pending counts.
    pub async fn flush(&self, db: &Db) -> Result<()> {
        let batch: Vec<((String, i64), [i64; 3])> = match self.pending.lock() {
            Ok(mut p) if !p.is_empty() => p.drain().collect(),
            _ => return Ok(()),
        };
        let written = async {
            let mut tx = db.begin_bookkeeping().await?;
            for ((key, version), counts) in &batch {
                keys::add_usage(&mut tx, key, *version, *counts).await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        if written.is_err() {
            if let Ok(mut p) = self.pending.lock() {
                for (k, c) in batch {
                    let e = p.entry(k).or_default();
                    for i in 0..3 {
                        e[i] += c[i];
                    }
                }
            }
        }
        written
    }
}
