//! A bounded, time-limited cache of unwrapped `envelope` key material.
//!
//! Entries hold the material bytes (16 or 32, by the key's spec) in `Zeroizing` memory; they
//! are wiped when evicted, expired or dropped. ring's key (AES key schedule, ChaCha20 key) is
//! built per operation from these bytes and lives only on the stack of that operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// Unwrapped material of one key version.
pub type Material = Arc<Zeroizing<Vec<u8>>>;

/// Cache keyed by (key id, version).
pub struct EnvelopeCache {
    entries: Mutex<HashMap<(String, u32), (Material, Instant)>>,
    max_entries: usize,
    ttl: Duration,
}

impl EnvelopeCache {
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        EnvelopeCache {
            entries: Mutex::new(HashMap::new()),
            max_entries,
            ttl,
        }
    }

    /// A live entry, if any.
    pub fn get(&self, key_id: &str, version: u32) -> Option<Material> {
        let mut map = self.entries.lock().ok()?;
        let k = (key_id.to_string(), version);
        match map.get(&k) {
            Some((m, at)) if at.elapsed() < self.ttl => Some(m.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Insert, evicting expired entries and then the oldest when full.
    pub fn insert(&self, key_id: &str, version: u32, material: Material) {
        if self.max_entries == 0 {
            return;
        }
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        let ttl = self.ttl;
        map.retain(|_, (_, at)| at.elapsed() < ttl);
        while map.len() >= self.max_entries {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    map.remove(&k);
                }
                None => break,
            }
        }
        map.insert((key_id.to_string(), version), (material, Instant::now()));
    }

    /// Drop every expired entry (run periodically so material never outlives its TTL by
    /// more than the sweep interval, even for keys no longer used).
    pub fn sweep(&self) {
        if let Ok(mut map) = self.entries.lock() {
            let ttl = self.ttl;
            map.retain(|_, (_, at)| at.elapsed() < ttl);
        }
    }

    /// Drop one key's entries (used when a version is destroyed).
    pub fn forget(&self, key_id: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|(k, _), _| k != key_id);
        }
    }

    /// Number of live entries (tests, metrics).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(b: u8) -> Material {
        Arc::new(Zeroizing::new(vec![b; 32]))
    }

    #[test]
    fn bounded_and_expiring() {
        let c = EnvelopeCache::new(2, Duration::from_millis(50));
        c.insert("a", 1, m(1));
        c.insert("b", 1, m(2));
        c.insert("c", 1, m(3));
        assert_eq!(c.len(), 2);
        assert!(c.get("a", 1).is_none());
        assert_eq!(c.get("c", 1).unwrap()[0], 3);
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get("c", 1).is_none());
    }
}
