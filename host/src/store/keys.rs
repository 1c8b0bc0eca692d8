//! The `keys`, `key_versions` and `key_grants` tables.

use super::{on, Conn, Tx};
use crate::algorithms::{KeySpec, KeyUsage};
use crate::model::{KeyState, Protection};

use crate::error::Result;

/// A key row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: String,
    pub tenant_id: String,
    pub spec: KeySpec,
    pub usage: KeyUsage,
    pub protection: Protection,
    pub state: KeyState,
    pub description: String,
    /// JSON object of string -> string.
    pub tags: String,
    pub primary_version: i64,
    pub created_at: String,
    pub created_by: String,
    /// While pending deletion: when destruction runs (Unix seconds).
    pub deletion_date: Option<i64>,
    /// Versions below this refuse to decrypt.
    pub min_decryption_version: i64,
    pub destroyed_at: Option<i64>,
    /// Automatic rotation every this many days (None: off).
    pub rotation_period_days: Option<i64>,
    /// When automatic rotation rotates next (Unix seconds, service clock).
    pub next_rotation_at: Option<i64>,
    /// `schedule-key-deletion` is refused while set.
    pub deletion_protection: bool,
    /// Every use that seals or opens a ciphertext must carry an encryption context.
    pub require_encryption_context: bool,
    /// Imported material: when it expires (Unix seconds, service clock; None: it does not, or
    /// the key's material is keyplane's). Requests refuse the key from then on, whether or
    /// not the scheduler has deleted the material yet.
    pub material_expires_at: Option<i64>,
}

impl KeyRow {
    /// An enabled AES-256-GCM envelope key with one version and nothing else set (schema
    /// probes and tests).
    pub fn sample(id: &str, tenant: &str) -> Self {
        KeyRow {
            id: id.into(),
            tenant_id: tenant.into(),
            spec: KeySpec::Aes256Gcm,
            usage: KeyUsage::EncryptDecrypt,
            protection: Protection::Envelope,
            state: KeyState::Enabled,
            description: String::new(),
            tags: String::new(),
            primary_version: 1,
            created_at: String::new(),
            created_by: String::new(),
            deletion_date: None,
            min_decryption_version: 1,
            destroyed_at: None,
            rotation_period_days: None,
            next_rotation_at: None,
            deletion_protection: false,
            require_encryption_context: false,
            material_expires_at: None,
        }
    }
}

/// A key version row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyVersionRow {
    pub key_id: String,
    pub version: i64,
    pub state: KeyState,
    pub hsm_object_id: Option<Vec<u8>>,
    pub wrapped_material: Option<Vec<u8>>,
    pub created_at: String,
    /// Storage-backend plugin holding the wrapped material (None: inline).
    pub blob_store: Option<String>,
    /// The blob's name in that backend (None: written before per-attempt names, see
    /// [`KeyVersionRow::blob`]).
    pub blob_name: Option<String>,
    /// Why the state last changed (e.g. the reason a version was revoked).
    pub state_reason: Option<String>,
    pub state_changed_at: Option<String>,
    /// Creation time on the service clock (Unix seconds).
    pub created_unix: Option<i64>,
    pub encryptions: i64,
    pub decryptions: i64,
    pub signatures: i64,
    /// How the version came to be: [`ROTATION_AUTOMATIC`], [`ROTATION_ON_DEMAND`], or None
    /// (the key's first version).
    pub rotation: Option<String>,
    /// `hsm` versions: the secret or private key wrapped by the root key, with a pair's public
    /// key (the world copy, see `hsm::world`), from which every node can make the version's
    /// objects in its own HSM. None: versions from before it (usable only on the node whose
    /// token holds them), `ED25519`, `envelope` versions, and destroyed versions.
    pub hsm_wrapped: Option<Vec<u8>>,
    /// Not a column. For a version being written: the (sealed) configuration of `blob_store`
    /// its blob was put with, as the database held it then (None: it held none). The row is
    /// committed only while the database still holds that configuration, see
    /// `check_blob_store`.
    #[sqlx(skip)]
    pub blob_config: Option<String>,
}

/// A version made by a rotation schedule (a period or a plugin).
pub const ROTATION_AUTOMATIC: &str = "automatic";
/// A version made by `rotate-key`.
pub const ROTATION_ON_DEMAND: &str = "on-demand";

impl KeyVersionRow {
    /// The name of this version's blob in its storage backend (the host adds the tenant):
    /// the name its creation attempt chose, or `keys/<key>/<version>` for versions written
    /// before each attempt chose its own.
    pub fn blob(&self) -> String {
        self.blob_name
            .clone()
            .unwrap_or_else(|| format!("keys/{}/{}", self.key_id, self.version))
    }

    /// A new, enabled version created now.
    pub fn new(key_id: &str, version: i64, created_at: String, created_unix: i64) -> Self {
        KeyVersionRow {
            key_id: key_id.to_string(),
            version,
            state: KeyState::Enabled,
            hsm_object_id: None,
            wrapped_material: None,
            created_at,
            blob_store: None,
            blob_name: None,
            state_reason: None,
            state_changed_at: None,
            created_unix: Some(created_unix),
            encryptions: 0,
            decryptions: 0,
            signatures: 0,
            rotation: None,
            hsm_wrapped: None,
            blob_config: None,
        }
    }

    /// Whether every node sharing the database can use this version: `envelope` material
    /// (sealed by the tenant KEK, wrapped by the root key) and `hsm` versions with a world
    /// copy; `None` for a version without material (destroyed, or imported material
    /// deleted).
    pub fn cluster_wide(&self) -> Option<bool> {
        if self.hsm_object_id.is_some() {
            Some(self.hsm_wrapped.is_some())
        } else if self.wrapped_material.is_some() || self.blob_store.is_some() {
            Some(true)
        } else {
            None
        }
    }
}

const KEY_COLUMNS: &str = "id, tenant_id, spec, usage, protection, state, description, tags, \
                           primary_version, created_at, created_by, deletion_date, \
                           min_decryption_version, destroyed_at, rotation_period_days, \
                           next_rotation_at, deletion_protection, \
                           require_encryption_context, material_expires_at";
const VERSION_COLUMNS: &str = "key_id, version, state, hsm_object_id, wrapped_material, \
                               created_at, blob_store, state_reason, state_changed_at, \
                               created_unix, encryptions, decryptions, signatures, blob_name, \
                               rotation, hsm_wrapped";

/// [`VERSION_COLUMNS`] of the table aliased `alias` in a join.
fn version_columns_of(alias: &str) -> String {
    VERSION_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn get(pool: impl Into<Conn<'_>>, id: &str) -> Result<Option<KeyRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "keys", async move {
            Ok(
                sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *pool)
                    .await?,
            )
        })
        .await
    })
}

pub async fn version(
    pool: impl Into<Conn<'_>>,
    key_id: &str,
    version: i64,
) -> Result<Option<KeyVersionRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "keys", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {VERSION_COLUMNS} FROM key_versions WHERE key_id = $1 AND version = $2"
            ))
            .bind(key_id)
            .bind(version)
            .fetch_optional(&mut *pool)
            .await?)
        })
        .await
    })
}

pub async fn versions(pool: impl Into<Conn<'_>>, key_id: &str) -> Result<Vec<KeyVersionRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "keys", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {VERSION_COLUMNS} FROM key_versions WHERE key_id = $1 ORDER BY version"
            ))
            .bind(key_id)
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

pub async fn grantees(pool: impl Into<Conn<'_>>, key_id: &str) -> Result<Vec<String>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "keys", async move {
            Ok(sqlx::query_scalar(
                "SELECT principal_id FROM key_grants WHERE key_id = $1 ORDER BY principal_id",
            )
            .bind(key_id)
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

/// A page of a tenant's keys with ids strictly after `after`, ordered by id.
pub async fn list(
    pool: impl Into<Conn<'_>>,
    tenant: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<KeyRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "keys", async move {
            Ok(sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
            .bind(tenant)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

/// Add a key row and its grants (no version yet).
pub async fn insert_key(conn: &mut Tx, key: &KeyRow, grantees: &[String]) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "keys", async {
        sqlx::query(&format!(
            "INSERT INTO keys ({KEY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
             $19)"
        ))
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(key.spec)
        .bind(key.usage)
        .bind(key.protection)
        .bind(key.state)
        .bind(&key.description)
        .bind(&key.tags)
        .bind(key.primary_version)
        .bind(&key.created_at)
        .bind(&key.created_by)
        .bind(key.deletion_date)
        .bind(key.min_decryption_version)
        .bind(key.destroyed_at)
        .bind(key.rotation_period_days)
        .bind(key.next_rotation_at)
        .bind(key.deletion_protection)
        .bind(key.require_encryption_context)
        .bind(key.material_expires_at)
        .execute(&mut *conn)
        .await?;
        for p in grantees {
            sqlx::query("INSERT INTO key_grants (key_id, principal_id) VALUES ($1, $2)")
                .bind(&key.id)
                .bind(p)
                .execute(&mut *conn)
                .await?;
        }
        Ok::<(), crate::error::Error>(())
    })
    .await
    })
}

/// Give a version whose imported material expired its (same) material again. A version that
/// waited for it becomes enabled again; one revoked meanwhile stays compromised (a compromised
/// version never becomes usable for encryption again). Returns false when the version holds
/// material already (another import restored it first).
pub async fn restore_version(conn: &mut Tx, v: &KeyVersionRow) -> Result<bool> {
    check_blob_store(conn, v).await?;
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "key_versions", async move {
            let done = sqlx::query(
                "UPDATE key_versions SET \
             state = CASE WHEN state = $1 THEN state ELSE $2 END, \
             state_reason = CASE WHEN state = $3 THEN state_reason ELSE NULL END, \
             hsm_object_id = $4, wrapped_material = $5, blob_store = $6, blob_name = $7, \
             state_changed_at = $8, hsm_wrapped = $11 WHERE key_id = $9 AND version = $10 \
             AND hsm_object_id IS NULL AND wrapped_material IS NULL AND blob_store IS NULL",
            )
            .bind(KeyState::Compromised)
            .bind(KeyState::Enabled)
            .bind(KeyState::Compromised)
            .bind(&v.hsm_object_id)
            .bind(&v.wrapped_material)
            .bind(&v.blob_store)
            .bind(&v.blob_name)
            .bind(&v.created_at)
            .bind(&v.key_id)
            .bind(v.version)
            .bind(&v.hsm_wrapped)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    })
}

/// Refuse a version whose blob went to a storage plugin that no longer exists (deleted while
/// the request that wrote the blob ran), or whose configuration changed since the blob was
/// put with it (`set-storage-backend` while the request ran): committed, it could never be
/// read, since a blob is read with the configuration its plugin has when it is read. On
/// PostgreSQL the plugin's row and its configuration's row are also locked (shared) until
/// this transaction ends: a `delete-plugin` (which locks the plugin exclusively, then counts
/// its versions: `plugins::lock_for_deletion`) and a `set-storage-backend` (whose upsert
/// locks the configuration, then counts the versions if it sampled none) wait for this
/// version and count it; under READ COMMITTED they would otherwise count without it. And a
/// configuration committed before this lock is taken is the one this statement reads (a
/// locking read sees the newest committed row). (SQLite has one writer at a time.)
async fn check_blob_store(conn: &mut Tx, v: &KeyVersionRow) -> Result<()> {
    let (lock_plugin, lock_config) = match conn.dialect() {
        super::Dialect::Postgres => (" FOR SHARE OF p", " FOR SHARE OF c"),
        super::Dialect::Sqlite => ("", ""),
    };
    on!(conn, {
        let Some(store) = &v.blob_store else {
            return Ok(());
        };
        let present: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT 1 FROM plugins p JOIN keys k ON k.tenant_id = p.tenant_id \
         WHERE k.id = $1 AND p.name = $2{lock_plugin}"
        ))
        .bind(&v.key_id)
        .bind(store)
        .fetch_optional(&mut *conn)
        .await?;
        if present.is_none() {
            return Err(crate::error::Error::InvalidState(format!(
                "storage plugin {store} was deleted while this request ran; try again"
            )));
        }
        // Locked after the plugin, in the order `delete-plugin` takes them.
        let config: Option<String> = sqlx::query_scalar(&format!(
            "SELECT c.config FROM storage_backend_configs c JOIN keys k ON k.tenant_id = c.tenant_id \
         WHERE k.id = $1 AND c.plugin_name = $2{lock_config}"
        ))
        .bind(&v.key_id)
        .bind(store)
        .fetch_optional(&mut *conn)
        .await?;
        if config != v.blob_config {
            return Err(crate::error::Error::InvalidState(format!(
                "the configuration of storage backend {store} changed while this request ran; try again"
            )));
        }
        Ok(())
    })
}

/// A few of the versions whose blobs `tenant` keeps in storage plugin `plugin`.
pub async fn sample_blobs(
    pool: impl Into<Conn<'_>>,
    tenant: &str,
    plugin: &str,
    limit: i64,
) -> Result<Vec<KeyVersionRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "key_versions", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {} FROM key_versions v JOIN keys k ON k.id = v.key_id \
             WHERE k.tenant_id = $1 AND v.blob_store = $2 ORDER BY random() LIMIT $3",
                version_columns_of("v")
            ))
            .bind(tenant)
            .bind(plugin)
            .bind(limit)
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

/// Add a version row.
pub async fn insert_version(conn: &mut Tx, v: &KeyVersionRow) -> Result<()> {
    check_blob_store(conn, v).await?;
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "key_versions", async move {
            sqlx::query(&format!(
                "INSERT INTO key_versions ({VERSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
            ))
            .bind(&v.key_id)
            .bind(v.version)
            .bind(v.state)
            .bind(&v.hsm_object_id)
            .bind(&v.wrapped_material)
            .bind(&v.created_at)
            .bind(&v.blob_store)
            .bind(&v.state_reason)
            .bind(&v.state_changed_at)
            .bind(v.created_unix)
            .bind(v.encryptions)
            .bind(v.decryptions)
            .bind(v.signatures)
            .bind(&v.blob_name)
            .bind(&v.rotation)
            .bind(&v.hsm_wrapped)
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
        .await
    })
}

/// Make `new` the primary version if `expected` still is and the key is still enabled
/// (compare-and-swap: two rotations racing, on one node or several, cannot both succeed, and
/// a key disabled or scheduled for deletion meanwhile is not rotated).
pub async fn swap_primary(conn: &mut Tx, key_id: &str, expected: i64, new: i64) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
        let r = sqlx::query(
            "UPDATE keys SET primary_version = $1 WHERE id = $2 AND primary_version = $3 AND state = $4",
        )
        .bind(new)
        .bind(key_id)
        .bind(expected)
        .bind(KeyState::Enabled)
        .execute(&mut *conn)
        .await?;
        Ok(r.rows_affected() == 1)
    })
    .await
    })
}

/// Move a key from state `from` (the state the change was decided on) to `to`, with its
/// deletion date (kept only while pending deletion). A compare-and-set: returns false, and
/// changes nothing, if the key is no longer in `from` (another request changed it meanwhile).
pub async fn set_state(
    conn: &mut Tx,
    key_id: &str,
    from: KeyState,
    to: KeyState,
    deletion_date: Option<i64>,
) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            let r = sqlx::query(
                "UPDATE keys SET state = $1, deletion_date = $2 WHERE id = $3 AND state = $4",
            )
            .bind(to)
            .bind(deletion_date)
            .bind(key_id)
            .bind(from)
            .execute(&mut *conn)
            .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}

/// Move a version from state `from` to `to`, with the reason and time of the change. A
/// compare-and-set, as [`set_state`]: false if the version is no longer in `from`, or, with
/// `unless_primary`, if it is its key's primary version now (a rotation that committed after
/// the request read the key may have made it so).
pub async fn set_version_state(
    conn: &mut Tx,
    key_id: &str,
    version: i64,
    (from, to): (KeyState, KeyState),
    reason: Option<&str>,
    now: &str,
    unless_primary: bool,
) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "key_versions", async move {
            let r = sqlx::query(
                "UPDATE key_versions SET state = $1, state_reason = $2, state_changed_at = $3 \
             WHERE key_id = $4 AND version = $5 AND state = $6 \
             AND (NOT $7 OR version <> (SELECT primary_version FROM keys WHERE id = $4))",
            )
            .bind(to)
            .bind(reason)
            .bind(now)
            .bind(key_id)
            .bind(version)
            .bind(from)
            .bind(unless_primary)
            .execute(&mut *conn)
            .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}

/// Set a key's minimum decryption version, if the key is still in `state` and `version` is
/// still at most its primary version (compare-and-set: false otherwise).
pub async fn set_min_decryption_version(
    conn: &mut Tx,
    key_id: &str,
    state: KeyState,
    version: i64,
) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            let r = sqlx::query(
                "UPDATE keys SET min_decryption_version = $1 WHERE id = $2 AND state = $3 \
             AND primary_version >= $4",
            )
            .bind(version)
            .bind(key_id)
            .bind(state)
            .bind(version)
            .execute(&mut *conn)
            .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}

/// Start destroying a key whose deletion window has passed by `now`: pending-deletion to
/// [`KeyState::Destroying`], committed before any material is shredded. False if the key is no
/// longer pending deletion or its window has not passed (it was cancelled meanwhile).
pub async fn begin_destroying(conn: &mut Tx, key_id: &str, now: i64) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            let r = sqlx::query(
                "UPDATE keys SET state = $1 WHERE id = $2 AND state = $3 AND deletion_date <= $4",
            )
            .bind(KeyState::Destroying)
            .bind(key_id)
            .bind(KeyState::PendingDeletion)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}

/// Record a key's destruction once its material is shredded: every version destroyed and
/// its references to material erased. Only from [`KeyState::Destroying`] (false otherwise).
pub async fn mark_destroyed(conn: &mut Tx, key_id: &str, now_unix: i64, now: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            let r = sqlx::query(
            "UPDATE keys SET state = $1, deletion_date = NULL, destroyed_at = $2 WHERE id = $3 \
             AND state = $4",
        )
        .bind(KeyState::Destroyed)
        .bind(now_unix)
        .bind(key_id)
        .bind(KeyState::Destroying)
        .execute(&mut *conn)
        .await?;
            if r.rows_affected() != 1 {
                return Ok(false);
            }
            sqlx::query(
            "UPDATE key_versions SET state = $1, wrapped_material = NULL, hsm_object_id = NULL, \
             hsm_wrapped = NULL, blob_store = NULL, blob_name = NULL, \
             state_reason = 'key destroyed', state_changed_at = $2 WHERE key_id = $3",
        )
        .bind(KeyState::Destroyed)
        .bind(now)
        .bind(key_id)
        .execute(&mut *conn)
        .await?;
            Ok(true)
        })
        .await
    })
}

/// Keys whose deletion window has passed, and keys whose destruction a crash interrupted:
/// those the scheduler never failed on first (see [`note_scheduler_failure`]).
pub async fn due_for_deletion(
    pool: impl Into<Conn<'_>>,
    now: i64,
    limit: i64,
) -> Result<Vec<KeyRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "keys", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM keys WHERE state = $1 \
             OR (state = $2 AND deletion_date <= $3) \
             ORDER BY COALESCE(scheduler_failed_at, 0), deletion_date, id LIMIT $4"
            ))
            .bind(KeyState::Destroying)
            .bind(KeyState::PendingDeletion)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

/// Usage accumulated in memory, added to the stored counters.
pub async fn add_usage(conn: &mut Tx, key_id: &str, version: i64, counts: [i64; 3]) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "key_versions", async move {
            sqlx::query(
                "UPDATE key_versions SET encryptions = encryptions + $1, \
             decryptions = decryptions + $2, signatures = signatures + $3 \
             WHERE key_id = $4 AND version = $5",
            )
            .bind(counts[0])
            .bind(counts[1])
            .bind(counts[2])
            .bind(key_id)
            .bind(version)
            .execute(&mut *conn)
            .await?;
            Ok(())
        })
        .await
    })
}

/// Every `CKA_ID` a committed row names: key versions' objects and import tokens' wrapping
/// keys (what garbage collection keeps).
pub async fn referenced_object_ids(
    pool: impl Into<Conn<'_>>,
) -> Result<std::collections::HashSet<Vec<u8>>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "key_versions", async move {
            let ids: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT hsm_object_id FROM key_versions WHERE hsm_object_id IS NOT NULL \
             UNION SELECT hsm_object_id FROM import_tokens",
            )
            .fetch_all(&mut *pool)
            .await?;
            Ok(ids.into_iter().collect())
        })
        .await
    })
}

/// Which of `ids` (`CKA_ID`s of key versions' objects) a committed version row still names
/// (what a node's cached session objects are checked against, see
/// `Keyring::sweep_session_objects`).
pub async fn named_object_ids(
    pool: impl Into<Conn<'_>>,
    ids: &[Vec<u8>],
) -> Result<std::collections::HashSet<Vec<u8>>> {
    let mut pool: Conn<'_> = pool.into();
    let mut named = std::collections::HashSet::new();
    for chunk in ids.chunks(500) {
        let placeholders = (1..=chunk.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT hsm_object_id FROM key_versions WHERE hsm_object_id IN ({placeholders})"
        );
        let found: Vec<Vec<u8>> = on!(&mut pool => |c| {
            crate::telemetry::spans::db("SELECT", "key_versions", async {
                let mut q = sqlx::query_scalar(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                Ok::<_, crate::error::Error>(q.fetch_all(&mut *c).await?)
            })
            .await?
        });
        named.extend(found);
    }
    Ok(named)
}

/// Those of `ids` whose keys hold no usable material any more: destroyed or being destroyed,
/// or whose imported material was deleted (pending import, or being deleted).
pub async fn without_material(pool: impl Into<Conn<'_>>, ids: &[String]) -> Result<Vec<String>> {
    let mut pool: Conn<'_> = pool.into();
    let mut gone = Vec::new();
    for chunk in ids.chunks(500) {
        let placeholders = (5..chunk.len() + 5)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT id FROM keys WHERE state IN ($1, $2, $3, $4) AND id IN ({placeholders})"
        );
        let found: Vec<String> = on!(&mut pool => |c| {
            crate::telemetry::spans::db("SELECT", "keys", async {
                let mut q = sqlx::query_scalar(&sql)
                    .bind(KeyState::Destroying)
                    .bind(KeyState::Destroyed)
                    .bind(KeyState::PendingImport)
                    .bind(KeyState::Expiring);
                for id in chunk {
                    q = q.bind(id);
                }
                Ok::<_, crate::error::Error>(q.fetch_all(&mut *c).await?)
            })
            .await?
        });
        gone.extend(found);
    }
    Ok(gone)
}

/// The names of the blobs that `tenant`'s key versions keep, in whichever storage plugin:
/// two plugins of one tenant may share a namespace (two built on the `kv` capability, two
/// pointed at one bucket), so a name is kept if any version names it. Names are unique per
/// creation attempt, so this keeps no more than it should.
pub async fn referenced_blobs(
    pool: impl Into<Conn<'_>>,
    tenant: &str,
) -> Result<std::collections::HashSet<String>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "key_versions", async move {
            let rows: Vec<KeyVersionRow> = sqlx::query_as(&format!(
                "SELECT {} FROM key_versions v JOIN keys k ON k.id = v.key_id \
             WHERE k.tenant_id = $1 AND v.blob_store IS NOT NULL",
                version_columns_of("v")
            ))
            .bind(tenant)
            .fetch_all(&mut *pool)
            .await?;
            Ok(rows.iter().map(KeyVersionRow::blob).collect())
        })
        .await
    })
}

/// Set a key's description.
/// Set a key's description if it is still in `state` (compare-and-set: false otherwise).
pub async fn set_description(
    conn: &mut Tx,
    key_id: &str,
    state: KeyState,
    description: &str,
) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            let r = sqlx::query("UPDATE keys SET description = $1 WHERE id = $2 AND state = $3")
                .bind(description)
                .bind(key_id)
                .bind(state)
                .execute(conn)
                .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}

/// Replace a key's tags (JSON) if they are still `from` and the key still in `state`: a
/// compare-and-set, so two requests tagging one key at once cannot lose each other's tags, and
/// a key destroyed meanwhile keeps the tags it had. False if either changed meanwhile. (One
/// statement, not a `hold_state` before it: two taggers each holding the row `FOR SHARE`
/// would deadlock on their updates on PostgreSQL.)
pub async fn set_tags(
    conn: &mut Tx,
    key_id: &str,
    state: KeyState,
    from: &str,
    to: &str,
) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            let r =
                sqlx::query("UPDATE keys SET tags = $1 WHERE id = $2 AND tags = $3 AND state = $4")
                    .bind(to)
                    .bind(key_id)
                    .bind(from)
                    .bind(state)
                    .execute(conn)
                    .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}

/// Whether a key's deletion protection is on (read inside the caller's transaction).
pub async fn deletion_protected(conn: &mut Tx, key_id: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "keys", async move {
            let on: Option<bool> =
                sqlx::query_scalar("SELECT deletion_protection FROM keys WHERE id = $1")
                    .bind(key_id)
                    .fetch_optional(conn)
                    .await?;
            Ok(on.unwrap_or(false))
        })
        .await
    })
}

/// Whether key `key_id` is still in `state`, held there until the transaction ends: a write
/// that depends on a key's state without changing it (an alias, a rotation schedule) is a
/// compare-and-set against that state too. PostgreSQL: `FOR SHARE`, so a state change of
/// the key (deletion, destruction, whose transaction removes the key's aliases and schedule)
/// waits for this transaction, then finds what it wrote; SQLite's writer transaction already
/// excludes every other writer.
pub async fn hold_state(conn: &mut Tx, key_id: &str, state: KeyState) -> Result<bool> {
    let lock = conn.dialect().for_share();
    on!(conn, {
        let held: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT 1 FROM keys WHERE id = $1 AND state = $2{lock}"
        ))
        .bind(key_id)
        .bind(state)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(held.is_some())
    })
}

/// Set a key's deletion protection to `to` if it is still `from` and the key still in `state`
/// (so protection is never turned on for a key whose deletion was scheduled meanwhile).
pub async fn set_deletion_protection(
    conn: &mut Tx,
    key_id: &str,
    state: KeyState,
    from: bool,
    to: bool,
) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            let r = sqlx::query(
            "UPDATE keys SET deletion_protection = $1 WHERE id = $2 AND deletion_protection = $3 \
             AND state = $4",
        )
        .bind(to)
        .bind(key_id)
        .bind(from)
        .bind(state)
        .execute(conn)
        .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}

/// Turn a key's automatic rotation on (every `period_days`, next at `next`) or off (`None`).
/// Set or clear a key's automatic rotation if it is still in `state` (compare-and-set: false
/// otherwise).
pub async fn set_rotation(
    conn: &mut Tx,
    key_id: &str,
    state: KeyState,
    period: Option<(i64, i64)>,
) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            let r = sqlx::query(
                "UPDATE keys SET rotation_period_days = $1, next_rotation_at = $2 WHERE id = $3 \
                 AND state = $4",
            )
            .bind(period.map(|(days, _)| days))
            .bind(period.map(|(_, next)| next))
            .bind(key_id)
            .bind(state)
            .execute(conn)
            .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}

/// Enabled keys whose automatic rotation is due at `now`, oldest due first.
pub async fn due_for_rotation(
    pool: impl Into<Conn<'_>>,
    now: i64,
    limit: i64,
) -> Result<Vec<KeyRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "keys", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM keys WHERE next_rotation_at <= $1 AND state = $2 \
             ORDER BY COALESCE(scheduler_failed_at, 0), next_rotation_at, id LIMIT $3"
            ))
            .bind(now)
            .bind(KeyState::Enabled)
            .bind(limit)
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

/// The bound of [`worn_out`] and of the partial index `key_versions_worn_out` (both literal):
/// `crypto::RANDOM_NONCE_ROTATE_AT`, which the scheduler checks is the same.
pub const WORN_OUT_SEALS: i64 = 2_147_483_648;

/// Enabled symmetric encryption keys of keyplane's own material whose primary version has sealed at
/// least [`WORN_OUT_SEALS`] messages (by its stored counts): what the scheduler
/// rotates before random nonces run out. The bound is a literal in the query, as in the
/// partial index `key_versions_worn_out` (a planner uses a partial index only for a query
/// whose terms imply its predicate, which a bound parameter does not).
pub async fn worn_out(pool: impl Into<Conn<'_>>, limit: i64) -> Result<Vec<KeyRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "keys", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM keys WHERE id IN (SELECT key_id FROM key_versions \
                 WHERE encryptions >= 2147483648) AND EXISTS (SELECT 1 FROM key_versions v \
                 WHERE v.key_id = keys.id AND v.version = keys.primary_version \
                 AND v.encryptions >= 2147483648) AND state = $1 AND usage = $2 \
                 AND origin <> $3 AND spec IN ($4, $5, $6) \
                 ORDER BY COALESCE(scheduler_failed_at, 0), id LIMIT $7"
            ))
            .bind(KeyState::Enabled)
            .bind(KeyUsage::EncryptDecrypt)
            .bind(crate::store::imports::ORIGIN_EXTERNAL)
            .bind(KeySpec::Aes256Gcm)
            .bind(KeySpec::Aes128Gcm)
            .bind(KeySpec::ChaCha20Poly1305)
            .bind(limit)
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

/// Remember that the scheduler failed to act on a key at `now` (a destruction, a rotation, an
/// expiry). Each pass takes a page of due keys, never-failed first and then by oldest failure,
/// so keys that fail on every pass (a tenant's broken storage plugin) cannot fill every page
/// and starve everyone else's. Not a column any cache holds.
pub async fn note_scheduler_failure(conn: &mut Tx, key_id: &str, now: i64) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            sqlx::query("UPDATE keys SET scheduler_failed_at = $1 WHERE id = $2")
                .bind(now)
                .bind(key_id)
                .execute(conn)
                .await?;
            Ok(())
        })
        .await
    })
}

/// Move a key's next automatic rotation from `from` to `to` (a compare-and-set: false if it
/// changed meanwhile, e.g. rotation was turned off or another pass rotated it).
pub async fn advance_rotation(conn: &mut Tx, key_id: &str, from: i64, to: i64) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            let r = sqlx::query(
                "UPDATE keys SET next_rotation_at = $1 WHERE id = $2 AND next_rotation_at = $3",
            )
            .bind(to)
            .bind(key_id)
            .bind(from)
            .execute(conn)
            .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}
