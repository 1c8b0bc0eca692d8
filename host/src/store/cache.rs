//! Read-through caches of the rows every cryptographic request reads: the principal of a
//! token hash or of an access key, a key with its grantees and grants, a key version, an
//! alias. Without them an `encrypt`
//! makes four database round trips before any crypto (each a hop to an sqlx worker thread);
//! with them a steady stream of requests makes none.
//!
//! An entry is used only while both hold:
//! - the database generation it was read at is still current ([`super::Db::generation`]),
//!   so any committed change on this node (a key disabled, rotated or scheduled for deletion,
//!   a grant or alias changed, a principal added) invalidates every entry before its
//!   transaction's answer is sent;
//! - it is younger than `ttl`, which bounds how long a change made by another node sharing
//!   the database (or by hand) can go unseen.
//!
//! The generation is read *before* the row, so a row read concurrently with a commit is
//! stored under the older generation and discarded at its next use. Misses (unknown tokens,
//! keys, aliases) are not cached: an unauthenticated caller cannot fill the cache. Entries
//! hold what the database holds (token hashes, wrapped material), never plaintext secrets.

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use super::access_keys::{self, AccessKeyOwner};
use super::aliases;
use super::grants::{self, Grant};
use super::keys::{self, KeyRow, KeyVersionRow};
use super::principals::{self, PrincipalRow};
use super::Db;
use crate::config::CacheConfig;
use crate::error::Result;

/// A key with what Cedar needs beside its row.
#[derive(Debug)]
pub struct CachedKey {
    pub row: KeyRow,
    /// Principals the key is granted to.
    pub users: Vec<String>,
    /// The key's grants (`create-grant`).
    pub grants: Arc<[Grant]>,
}

/// A principal with the keyed hash stored for its token.
pub type TokenPrincipal = Arc<(PrincipalRow, Vec<u8>)>;

#[derive(Clone)]
struct Entry<V> {
    generation: u64,
    loaded: Instant,
    value: V,
}

/// The hot-row caches of one node.
pub struct RowCache {
    db: Db,
    ttl: Duration,
    enabled: bool,
    principals: Cache<Vec<u8>, Entry<TokenPrincipal>>,
    access_keys: Cache<String, Entry<Arc<AccessKeyOwner>>>,
    keys: Cache<String, Entry<Arc<CachedKey>>>,
    versions: Cache<(String, i64), Entry<Arc<KeyVersionRow>>>,
    aliases: Cache<(String, String), Entry<Arc<str>>>,
}

impl RowCache {
    pub fn new(db: Db, config: &CacheConfig) -> Self {
        let capacity = config.max_rows.max(1);
        RowCache {
            db,
            ttl: Duration::from_millis(config.row_ttl_ms),
            enabled: config.max_rows > 0 && config.row_ttl_ms > 0,
            principals: Cache::new(capacity),
            access_keys: Cache::new(capacity),
            keys: Cache::new(capacity),
            versions: Cache::new(capacity),
            aliases: Cache::new(capacity),
        }
    }

    /// The principal whose token has keyed hash `hash`, with the stored hash.
    pub async fn principal_by_token_hash(&self, hash: &[u8]) -> Result<Option<TokenPrincipal>> {
        let pool = &self.db;
        self.read_through(&self.principals, hash.to_vec(), async {
            Ok(principals::by_token_hash(pool, hash).await?.map(Arc::new))
        })
        .await
    }

    /// An access key with its principal and account (the secret still sealed).
    pub async fn access_key(&self, id: &str) -> Result<Option<Arc<AccessKeyOwner>>> {
        let pool = &self.db;
        self.read_through(&self.access_keys, id.to_string(), async {
            Ok(access_keys::owner(pool, id).await?.map(Arc::new))
        })
        .await
    }

    /// A key and its grantees.
    pub async fn key(&self, key_id: &str) -> Result<Option<Arc<CachedKey>>> {
        let pool = &self.db;
        self.read_through(&self.keys, key_id.to_string(), async {
            let Some(row) = keys::get(pool, key_id).await? else {
                return Ok(None);
            };
            let users = keys::grantees(pool, key_id).await?;
            let grants = grants::of_key(pool, key_id).await?.into();
            Ok(Some(Arc::new(CachedKey { row, users, grants })))
        })
        .await
    }

    /// Version `version` of a key.
    pub async fn version(&self, key_id: &str, version: i64) -> Result<Option<Arc<KeyVersionRow>>> {
        let pool = &self.db;
        self.read_through(&self.versions, (key_id.to_string(), version), async {
            Ok(keys::version(pool, key_id, version).await?.map(Arc::new))
        })
        .await
    }

    /// The key id an alias of `tenant` points to.
    pub async fn alias_target(&self, tenant: &str, name: &str) -> Result<Option<Arc<str>>> {
        let pool = &self.db;
        self.read_through(
            &self.aliases,
            (tenant.to_string(), name.to_string()),
            async {
                Ok(aliases::get(pool, tenant, name)
                    .await?
                    .map(|a| Arc::from(a.key_id)))
            },
        )
        .await
    }

    async fn read_through<K, V>(
        &self,
        cache: &Cache<K, Entry<V>>,
        key: K,
        load: impl std::future::Future<Output = Result<Option<V>>>,
    ) -> Result<Option<V>>
    where
        K: Eq + Hash + Clone,
        V: Clone,
    {
        if !self.enabled {
            return load.await;
        }
        let generation = self.db.generation();
        if let Some(e) = cache.get(&key) {
            if e.generation == generation && e.loaded.elapsed() < self.ttl {
                return Ok(Some(e.value));
            }
        }
        let loaded = Instant::now();
        let value = load.await?;
        if let Some(v) = &value {
            cache.insert(
                key,
                Entry {
                    generation,
                    loaded,
                    value: v.clone(),
                },
            );
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db_with_key() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let db = Db::open(&url).await.unwrap();
        let mut tx = db.begin().await.unwrap();
        crate::store::testing::execute(
            &mut tx,
            "INSERT INTO tenants (id, created_at, kek_wrapped, account_id) \
             VALUES ('t', 'now', x'00', '111122223333')",
        )
        .await;
        crate::store::testing::execute(&mut tx, "INSERT INTO keys (id, tenant_id, spec, usage, protection, state, description, tags, \
             primary_version, created_at, created_by) \
             VALUES ('k1', 't', 'AES_256_GCM', 'encrypt-decrypt', 'envelope', 'enabled', '', '{}', 1, 'now', 'p')").await;
        tx.commit().await.unwrap();
        (dir, db)
    }

    /// Set the key's state in a transaction that is ordinary or bookkeeping.
    async fn set_state(db: &Db, state: &str, bookkeeping: bool) {
        let mut tx = if bookkeeping {
            db.begin_bookkeeping().await.unwrap()
        } else {
            db.begin().await.unwrap()
        };
        let sql = format!("UPDATE keys SET state = '{state}' WHERE id = 'k1'");
        crate::store::testing::execute(&mut tx, &sql).await;
        tx.commit().await.unwrap();
    }

    async fn state(cache: &RowCache) -> String {
        cache
            .key("k1")
            .await
            .unwrap()
            .unwrap()
            .row
            .state
            .to_string()
    }

    fn config(ttl_ms: u64) -> CacheConfig {
        CacheConfig {
            max_rows: 100,
            row_ttl_ms: ttl_ms,
            max_decisions: 0,
        }
    }

    #[tokio::test]
    async fn a_committed_write_invalidates_and_bookkeeping_does_not() {
        let (_d, db) = db_with_key().await;
        let cache = RowCache::new(db.clone(), &config(60_000));
        assert_eq!(state(&cache).await, "enabled");
        // Changed without a generation step (as only audit and usage writes may): cached.
        set_state(&db, "disabled", true).await;
        assert_eq!(state(&cache).await, "enabled");
        // An ordinary committed write: the next read sees the database.
        set_state(&db, "disabled", false).await;
        assert_eq!(state(&cache).await, "disabled");
    }

    #[tokio::test]
    async fn a_rolled_back_write_keeps_the_generation() {
        let (_d, db) = db_with_key().await;
        let before = db.generation();
        let tx = db.begin().await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(db.generation(), before);
        let tx = db.begin().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(db.generation(), before + 1);
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let (_d, db) = db_with_key().await;
        let cache = RowCache::new(db.clone(), &config(50));
        assert_eq!(state(&cache).await, "enabled");
        set_state(&db, "disabled", true).await;
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(state(&cache).await, "disabled");
    }

    #[tokio::test]
    async fn misses_are_not_cached_and_a_disabled_cache_always_reads() {
        let (_d, db) = db_with_key().await;
        let cache = RowCache::new(db.clone(), &config(60_000));
        assert!(cache.alias_target("t", "alias/a").await.unwrap().is_none());
        let mut tx = db.begin_bookkeeping().await.unwrap();
        crate::store::testing::execute(
            &mut tx,
            "INSERT INTO aliases (tenant_id, name, key_id, created_at, updated_at) \
             VALUES ('t', 'alias/a', 'k1', 'now', 'now')",
        )
        .await;
        tx.commit().await.unwrap();
        assert_eq!(
            &*cache.alias_target("t", "alias/a").await.unwrap().unwrap(),
            "k1"
        );

        let off = RowCache::new(
            db.clone(),
            &CacheConfig {
                max_rows: 0,
                ..config(60_000)
            },
        );
        assert_eq!(state(&off).await, "enabled");
        set_state(&db, "disabled", true).await;
        assert_eq!(state(&off).await, "disabled");
    }
}
