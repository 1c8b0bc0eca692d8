//! A bounded, time-limited cache of unwrapped `envelope` key material.
//!
//! Entries hold the material bytes (16 or 32, by the key's spec) in `Zeroizing` memory; they
//! are wiped when evicted, expired or dropped. ring's key (AES key schedule, ChaCha20 key) is
//! built per operation from these bytes and lives only on the stack of that operation.
//!
//! Each entry also keeps the material as it was wrapped (by the tenant KEK; not secret), so a
//! request that finds a version here needs no blob from its storage plugin and still has
//! what it needs if the entry is evicted or expires before it seals (see
//! [`EnvelopeCache::wrapped`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// Unwrapped material of one key version.
pub type Material = Arc<Zeroizing<Vec<u8>>>;

/// One cached version: its material, the material as it was wrapped, and when it was cached.
type Entry = (Material, Arc<[u8]>, Instant);

/// Cache keyed by (key id, version).
pub struct EnvelopeCache {
    entries: Mutex<HashMap<(String, u32), Entry>>,
    /// Keys forgotten within the last TTL, and when: their material is not cached again
    /// meanwhile. A request that read a version before it was shredded may still open its
    /// material after [`EnvelopeCache::forget`]; without this it would put the material of a
    /// destroyed version back, in memory for another TTL.
    forgotten: Mutex<HashMap<String, Instant>>,
    max_entries: usize,
    ttl: Duration,
}

impl EnvelopeCache {
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        EnvelopeCache {
            entries: Mutex::new(HashMap::new()),
            forgotten: Mutex::new(HashMap::new()),
            max_entries,
            ttl,
        }
    }

    /// A live entry, if any.
    pub fn get(&self, key_id: &str, version: u32) -> Option<Material> {
        let mut map = self.entries.lock().ok()?;
        let k = (key_id.to_string(), version);
        match map.get(&k) {
            Some((m, _, at)) if at.elapsed() < self.ttl => Some(m.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// The wrapped material of a live entry, if any: what a request takes instead of the
    /// version's blob. The entry may be gone by the time the request seals; the wrapped
    /// material then opens again in the HSM, where a bare "is it cached?" would have left the
    /// request with neither.
    pub fn wrapped(&self, key_id: &str, version: u32) -> Option<Vec<u8>> {
        let map = self.entries.lock().ok()?;
        match map.get(&(key_id.to_string(), version)) {
            Some((_, wrapped, at)) if at.elapsed() < self.ttl => Some(wrapped.to_vec()),
            _ => None,
        }
    }

    /// Insert, evicting expired entries and then the oldest when full; not for a key
    /// forgotten within the last TTL.
    pub fn insert(&self, key_id: &str, version: u32, material: Material, wrapped: &[u8]) {
        if self.max_entries == 0 {
            return;
        }
        // Lock order: `forgotten`, then `entries` (as in `forget`), held together so that a
        // forget cannot fall between this check and the insert.
        let Ok(mut forgotten) = self.forgotten.lock() else {
            return;
        };
        let ttl = self.ttl;
        forgotten.retain(|_, at| at.elapsed() < ttl);
        if forgotten.contains_key(key_id) {
            return;
        }
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        map.retain(|_, (_, _, at)| at.elapsed() < ttl);
        while map.len() >= self.max_entries {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, _, at))| *at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    map.remove(&k);
                }
                None => break,
            }
        }
        map.insert(
            (key_id.to_string(), version),
            (material, Arc::from(wrapped), Instant::now()),
        );
    }

    /// Drop every expired entry (run periodically so material never outlives its TTL by
    /// more than the sweep interval, even for keys no longer used).
    pub fn sweep(&self) {
        let ttl = self.ttl;
        if let Ok(mut forgotten) = self.forgotten.lock() {
            forgotten.retain(|_, at| at.elapsed() < ttl);
        }
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|_, (_, _, at)| at.elapsed() < ttl);
        }
    }

    /// Drop one key's entries (used when a version is destroyed), and cache none of its
    /// material for a TTL.
    pub fn forget(&self, key_id: &str) {
        let mut forgotten = self.forgotten.lock().ok();
        if let Some(f) = forgotten.as_mut() {
            f.insert(key_id.to_string(), Instant::now());
        }
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|(k, _), _| k != key_id);
        }
    }

    /// The keys with an entry, each once.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .entries
            .lock()
            .map(|m| m.keys().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids.dedup();
        ids
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
        c.insert("a", 1, m(1), b"w");
        c.insert("b", 1, m(2), b"w");
        c.insert("c", 1, m(3), b"w");
        assert_eq!(c.len(), 2);
        assert!(c.get("a", 1).is_none());
        assert_eq!(c.get("c", 1).unwrap()[0], 3);
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get("c", 1).is_none());
    }

    /// Material opened by a request that read its version before the key was shredded is
    /// not cached again after the shred forgot the key (for a TTL).
    #[test]
    fn a_forgotten_key_is_not_cached_again_within_its_ttl() {
        let c = EnvelopeCache::new(8, Duration::from_millis(50));
        c.insert("shredded", 1, m(1), b"w");
        c.forget("shredded");
        c.insert("shredded", 1, m(1), b"w");
        assert!(c.get("shredded", 1).is_none());
        c.insert("other", 1, m(2), b"w");
        assert!(c.get("other", 1).is_some());
        std::thread::sleep(Duration::from_millis(60));
        c.insert("shredded", 2, m(3), b"w");
        assert!(c.get("shredded", 2).is_some());
    }
}
