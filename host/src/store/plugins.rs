//! The `plugins`, `plugin_components` and `rotation_schedules` tables.
//!
//! A plugin row names its component by SHA-256; the component's bytes are a row of
//! `plugin_components`, shared by every plugin (of any tenant) with the same bytes, written in
//! the upload's transaction and deleted with the last plugin row that names it.

use super::{on, Conn, Tx};

use crate::error::Result;

/// An uploaded plugin.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PluginRow {
    pub tenant_id: String,
    pub name: String,
    pub sha256: String,
    pub world: String,
    pub size: i64,
    pub imports: String,
    pub created_at: String,
    pub created_by: String,
    /// JSON array of granted capabilities beyond the world's defaults (e.g. `filesystem`).
    pub capabilities: String,
}

impl PluginRow {
    /// Whether the plugin was granted `capability`.
    pub fn granted(&self, capability: &str) -> bool {
        self.capabilities().iter().any(|x| x == capability)
    }

    /// The capabilities granted at upload.
    pub fn capabilities(&self) -> Vec<String> {
        serde_json::from_str(&self.capabilities).unwrap_or_default()
    }
}

/// A tenant's storage backend.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BackendRow {
    pub tenant_id: String,
    pub plugin_name: String,
    pub config: String,
    pub updated_at: String,
}

pub async fn storage_backend(
    pool: impl Into<Conn<'_>>,
    tenant: &str,
) -> Result<Option<BackendRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "storage_backends", async {
        Ok(sqlx::query_as(
            "SELECT tenant_id, plugin_name, config, updated_at FROM storage_backends WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_optional(&mut *pool)
        .await?)
    })
    .await
    })
}

/// Make `row` the tenant's storage backend, and keep its configuration as the one that
/// reaches the plugin's blobs (also once another plugin is the backend).
pub async fn set_storage_backend(conn: &mut Tx, row: &BackendRow) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("UPSERT", "storage_backends", async {
        for table in ["storage_backends", "storage_backend_configs"] {
            let conflict = if table == "storage_backends" {
                "tenant_id"
            } else {
                "tenant_id, plugin_name"
            };
            sqlx::query(&format!(
                "INSERT INTO {table} (tenant_id, plugin_name, config, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT ({conflict}) DO UPDATE SET plugin_name = excluded.plugin_name, \
                 config = excluded.config, updated_at = excluded.updated_at"
            ))
            .bind(&row.tenant_id)
            .bind(&row.plugin_name)
            .bind(&row.config)
            .bind(&row.updated_at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    })
    .await
    })
}

/// The (sealed) configuration last given to a storage-backend plugin of `tenant`, whether or
/// not it is the tenant's backend now: the one that reaches the blobs it holds.
pub async fn backend_config(
    pool: impl Into<Conn<'_>>,
    tenant: &str,
    plugin: &str,
) -> Result<Option<String>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "storage_backend_configs", async {
            Ok(sqlx::query_scalar(
            "SELECT config FROM storage_backend_configs WHERE tenant_id = $1 AND plugin_name = $2",
        )
        .bind(tenant)
        .bind(plugin)
        .fetch_optional(&mut *pool)
        .await?)
        })
        .await
    })
}

/// Every storage-backend plugin a tenant has configured, with its (sealed) configuration:
/// where garbage collection looks for blobs.
pub async fn backend_configs(pool: impl Into<Conn<'_>>) -> Result<Vec<BackendRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "storage_backend_configs", async {
            Ok(sqlx::query_as(
                "SELECT tenant_id, plugin_name, config, updated_at FROM storage_backend_configs \
             ORDER BY tenant_id, plugin_name",
            )
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

/// Lock the plugin's row for its deletion until the transaction ends (PostgreSQL: exclusively,
/// waiting for every transaction committing a version into it, see
/// `keys::check_blob_store`; SQLite has one writer at a time). Call it before
/// [`blob_count`], which then counts those versions too. False if the plugin is gone.
pub async fn lock_for_deletion(conn: &mut Tx, tenant: &str, name: &str) -> Result<bool> {
    let lock = match conn.dialect() {
        super::Dialect::Postgres => " FOR UPDATE",
        super::Dialect::Sqlite => "",
    };
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "plugins", async {
            let found: Option<i32> = sqlx::query_scalar(&format!(
                "SELECT 1 FROM plugins WHERE tenant_id = $1 AND name = $2{lock}"
            ))
            .bind(tenant)
            .bind(name)
            .fetch_optional(conn)
            .await?;
            Ok(found.is_some())
        })
        .await
    })
}

/// Whether `plugin` is still the row it was read as (same component, world, capabilities and
/// upload: not deleted and uploaded again under its name meanwhile), locked until the
/// transaction ends so that it cannot be deleted before it commits (PostgreSQL: `FOR SHARE`,
/// which a deletion's `FOR UPDATE` waits for; SQLite has one writer at a time). A request
/// that checked and called a plugin before its transaction opened calls this before it
/// writes a row naming it.
pub async fn hold(conn: &mut Tx, plugin: &PluginRow) -> Result<bool> {
    let lock = conn.dialect().for_share();
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "plugins", async {
            let found: Option<i32> = sqlx::query_scalar(&format!(
                "SELECT 1 FROM plugins WHERE tenant_id = $1 AND name = $2 AND sha256 = $3 \
                 AND world = $4 AND capabilities = $5 AND created_at = $6{lock}"
            ))
            .bind(&plugin.tenant_id)
            .bind(&plugin.name)
            .bind(&plugin.sha256)
            .bind(&plugin.world)
            .bind(&plugin.capabilities)
            .bind(&plugin.created_at)
            .fetch_optional(conn)
            .await?;
            Ok(found.is_some())
        })
        .await
    })
}

/// How many key versions hold a blob in the plugin (the blobs that keep it from being deleted).
pub async fn blob_count(conn: &mut Tx, tenant: &str, name: &str) -> Result<i64> {
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "key_versions", async {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM key_versions v JOIN keys k ON k.id = v.key_id \
             WHERE k.tenant_id = $1 AND v.blob_store = $2",
            )
            .bind(tenant)
            .bind(name)
            .fetch_one(conn)
            .await?)
        })
        .await
    })
}

/// Whether the plugin is the tenant's storage backend now.
pub async fn is_backend(conn: &mut Tx, tenant: &str, name: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "storage_backends", async {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM storage_backends WHERE tenant_id = $1 AND plugin_name = $2",
            )
            .bind(tenant)
            .bind(name)
            .fetch_one(conn)
            .await?;
            Ok(n > 0)
        })
        .await
    })
}

/// A key's rotation schedule.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub key_id: String,
    pub tenant_id: String,
    pub plugin_name: String,
    pub config: String,
    pub updated_at: String,
    /// The last scheduler check's error, if it failed (only some queries read it).
    #[sqlx(default)]
    pub last_error: Option<String>,
}

const COLUMNS: &str =
    "tenant_id, name, sha256, world, size, imports, created_at, created_by, capabilities";

pub async fn get(pool: impl Into<Conn<'_>>, tenant: &str, name: &str) -> Result<Option<PluginRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "plugins", async {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM plugins WHERE tenant_id = $1 AND name = $2"
            ))
            .bind(tenant)
            .bind(name)
            .fetch_optional(&mut *pool)
            .await?)
        })
        .await
    })
}

pub async fn list(pool: impl Into<Conn<'_>>, tenant: &str) -> Result<Vec<PluginRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "plugins", async {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM plugins WHERE tenant_id = $1 ORDER BY name"
            ))
            .bind(tenant)
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

pub async fn insert(conn: &mut Tx, row: &PluginRow) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "plugins", async {
            sqlx::query(&format!(
                "INSERT INTO plugins ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&row.tenant_id)
            .bind(&row.name)
            .bind(&row.sha256)
            .bind(&row.world)
            .bind(row.size)
            .bind(&row.imports)
            .bind(&row.created_at)
            .bind(&row.created_by)
            .bind(&row.capabilities)
            .execute(conn)
            .await?;
            Ok(())
        })
        .await
    })
}

/// Delete a plugin row (and the backend configuration kept for it).
pub async fn delete(conn: &mut Tx, tenant: &str, name: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("DELETE", "plugins", async {
            sqlx::query(
                "DELETE FROM storage_backend_configs WHERE tenant_id = $1 AND plugin_name = $2",
            )
            .bind(tenant)
            .bind(name)
            .execute(&mut *conn)
            .await?;
            let n = sqlx::query("DELETE FROM plugins WHERE tenant_id = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .execute(conn)
                .await?
                .rows_affected();
            Ok(n > 0)
        })
        .await
    })
}

/// Store a component's bytes under their SHA-256. A row already there holds the same bytes,
/// by construction of the key, unless they were altered in the database: then the upload
/// (whose bytes the caller hashed) puts them right. On PostgreSQL the upsert locks a row
/// already there until the transaction ends, also when its `WHERE` updates nothing (every
/// row an `ON CONFLICT DO UPDATE` meets is locked): [`delete_component_if_unreferenced`]
/// relies on it to wait for the upload's plugin row. (`DO NOTHING` would lock nothing.)
pub async fn insert_component(
    conn: &mut Tx,
    sha256: &str,
    bytes: &[u8],
    created_at: &str,
) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "plugin_components", async {
        sqlx::query(
            "INSERT INTO plugin_components (sha256, bytes, size, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sha256) DO UPDATE SET bytes = excluded.bytes, size = excluded.size \
             WHERE plugin_components.bytes <> excluded.bytes",
        )
        .bind(sha256)
        .bind(bytes)
        .bind(bytes.len() as i64)
        .bind(created_at)
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
    })
}

/// The bytes stored under `sha256`, as stored (the caller checks them against the digest).
pub async fn component(pool: impl Into<Conn<'_>>, sha256: &str) -> Result<Option<Vec<u8>>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "plugin_components", async {
            Ok(
                sqlx::query_scalar("SELECT bytes FROM plugin_components WHERE sha256 = $1")
                    .bind(sha256)
                    .fetch_optional(&mut *pool)
                    .await?,
            )
        })
        .await
    })
}

/// Whether the database holds the component `sha256`.
pub async fn has_component(pool: impl Into<Conn<'_>>, sha256: &str) -> Result<bool> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "plugin_components", async {
            let n: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM plugin_components WHERE sha256 = $1")
                    .bind(sha256)
                    .fetch_one(&mut *pool)
                    .await?;
            Ok(n > 0)
        })
        .await
    })
}

/// Whether any plugin row names the component `sha256`.
pub async fn component_referenced(pool: impl Into<Conn<'_>>, sha256: &str) -> Result<bool> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "plugins", async {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plugins WHERE sha256 = $1")
                .bind(sha256)
                .fetch_one(&mut *pool)
                .await?;
            Ok(n > 0)
        })
        .await
    })
}

/// Delete the component `sha256` if no plugin row names it (any more); whether it was deleted.
///
/// PostgreSQL (READ COMMITTED) needs two statements. An upload of the same bytes (by any
/// tenant) locks the component's row with its upsert ([`insert_component`]) and then inserts
/// its plugin row. A lone `DELETE … AND NOT EXISTS (plugins …)` that meets that lock waits
/// for the upload to commit, but then deletes the row anyway: its `NOT EXISTS` reads the
/// snapshot the statement began with, which lacks the plugin row, and the new plugin would
/// name a missing component. So the row is locked first (`FOR UPDATE`: waiting for such an upload to end),
/// and the `DELETE` is a second statement, whose fresh snapshot sees the committed plugin row.
/// If this locks first, the upload's upsert waits for this transaction, and inserts the row
/// again once the deletion is committed. SQLite has one writer at a time.
pub async fn delete_component_if_unreferenced(conn: &mut Tx, sha256: &str) -> Result<bool> {
    let lock_first = matches!(conn.dialect(), super::Dialect::Postgres);
    on!(conn, {
        crate::telemetry::spans::db("DELETE", "plugin_components", async {
        if lock_first {
            let found: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM plugin_components WHERE sha256 = $1 FOR UPDATE")
                    .bind(sha256)
                    .fetch_optional(&mut *conn)
                    .await?;
            if found.is_none() {
                return Ok(false);
            }
        }
        let n = sqlx::query(
            "DELETE FROM plugin_components WHERE sha256 = $1 \
             AND NOT EXISTS (SELECT 1 FROM plugins WHERE plugins.sha256 = plugin_components.sha256)",
        )
        .bind(sha256)
        .execute(conn)
        .await?
        .rows_affected();
        Ok(n > 0)
    })
    .await
    })
}

/// The components no plugin row names (what garbage collection removes).
pub async fn unreferenced_components(pool: impl Into<Conn<'_>>) -> Result<Vec<String>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "plugin_components", async {
        Ok(sqlx::query_scalar(
            "SELECT c.sha256 FROM plugin_components c \
             WHERE NOT EXISTS (SELECT 1 FROM plugins p WHERE p.sha256 = c.sha256) ORDER BY c.sha256",
        )
        .fetch_all(&mut *pool)
        .await?)
    })
    .await
    })
}

/// The SHA-256 of every component the database holds.
pub async fn component_digests(pool: impl Into<Conn<'_>>) -> Result<Vec<String>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "plugin_components", async {
            Ok(sqlx::query_scalar("SELECT sha256 FROM plugin_components")
                .fetch_all(&mut *pool)
                .await?)
        })
        .await
    })
}

/// Keys whose rotation schedule uses the plugin.
pub async fn attached_keys(conn: &mut Tx, tenant: &str, name: &str) -> Result<i64> {
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "rotation_schedules", async {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM rotation_schedules WHERE tenant_id = $1 AND plugin_name = $2",
            )
            .bind(tenant)
            .bind(name)
            .fetch_one(conn)
            .await?)
        })
        .await
    })
}

pub async fn schedule(pool: impl Into<Conn<'_>>, key_id: &str) -> Result<Option<ScheduleRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "rotation_schedules", async {
        Ok(sqlx::query_as(
            "SELECT key_id, tenant_id, plugin_name, config, updated_at FROM rotation_schedules WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&mut *pool)
        .await?)
    })
    .await
    })
}

pub async fn set_schedule(conn: &mut Tx, row: &ScheduleRow) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("UPSERT", "rotation_schedules", async {
        sqlx::query(
            "INSERT INTO rotation_schedules (key_id, tenant_id, plugin_name, config, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key_id) DO UPDATE SET plugin_name = excluded.plugin_name, config = excluded.config, \
             updated_at = excluded.updated_at, last_checked_at = NULL, next_rotation = NULL, last_error = NULL",
        )
        .bind(&row.key_id)
        .bind(&row.tenant_id)
        .bind(&row.plugin_name)
        .bind(&row.config)
        .bind(&row.updated_at)
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
    })
}

/// Whether `key`'s rotation schedule is still `row` (same plugin and sealed configuration:
/// each `set-rotation-schedule` seals anew, with a fresh nonce), locked until the transaction
/// ends as [`hold`] locks a plugin. The scheduler asks a schedule and rotates outside any
/// transaction; it acts on the decision only if the schedule that made it still stands.
pub async fn hold_schedule(conn: &mut Tx, row: &ScheduleRow) -> Result<bool> {
    let lock = conn.dialect().for_share();
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "rotation_schedules", async {
            let found: Option<i32> = sqlx::query_scalar(&format!(
                "SELECT 1 FROM rotation_schedules WHERE key_id = $1 AND tenant_id = $2 \
                 AND plugin_name = $3 AND config = $4 AND updated_at = $5{lock}"
            ))
            .bind(&row.key_id)
            .bind(&row.tenant_id)
            .bind(&row.plugin_name)
            .bind(&row.config)
            .bind(&row.updated_at)
            .fetch_optional(conn)
            .await?;
            Ok(found.is_some())
        })
        .await
    })
}

/// Every rotation schedule of an enabled key (what a scheduler pass looks at).
pub async fn schedules_of_enabled_keys(pool: impl Into<Conn<'_>>) -> Result<Vec<ScheduleRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "rotation_schedules", async {
            Ok(sqlx::query_as(
            "SELECT s.key_id, s.tenant_id, s.plugin_name, s.config, s.updated_at, s.last_error \
             FROM rotation_schedules s JOIN keys k ON k.id = s.key_id \
             WHERE k.state = 'enabled' ORDER BY s.key_id",
        )
        .fetch_all(&mut *pool)
        .await?)
        })
        .await
    })
}

/// Remember the outcome of the last scheduler check of a key, if its schedule is still `row`
/// (a schedule set meanwhile starts with no check and no error).
pub async fn record_schedule_check(
    conn: &mut Tx,
    row: &ScheduleRow,
    checked_at: i64,
    next_rotation: Option<i64>,
    error: Option<&str>,
) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "rotation_schedules", async {
        sqlx::query(
            "UPDATE rotation_schedules SET last_checked_at = $1, next_rotation = $2, last_error = $3 \
             WHERE key_id = $4 AND config = $5",
        )
        .bind(checked_at)
        .bind(next_rotation)
        .bind(error)
        .bind(&row.key_id)
        .bind(&row.config)
        .execute(&mut *conn)
        .await?;
        Ok(())
    })
    .await
    })
}

/// Drop a key's rotation schedule (the key is destroyed).
pub async fn delete_schedule(conn: &mut Tx, key_id: &str) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("DELETE", "rotation_schedules", async {
            sqlx::query("DELETE FROM rotation_schedules WHERE key_id = $1")
                .bind(key_id)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await
    })
}

/// A stored plugin configuration, wherever it is kept.
#[derive(Debug, Clone)]
pub struct StoredConfig {
    /// `storage_backends`, `storage_backend_configs` or `rotation_schedules`.
    pub table: &'static str,
    pub tenant_id: String,
    pub plugin_name: String,
    /// The key, for a rotation schedule.
    pub key_id: Option<String>,
    pub config: String,
}

/// Every stored plugin configuration (to seal what an older release left in the clear).
pub async fn stored_configs(pool: impl Into<Conn<'_>>) -> Result<Vec<StoredConfig>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "storage_backend_configs", async {
            let mut out = Vec::new();
            for table in ["storage_backends", "storage_backend_configs"] {
                let rows: Vec<(String, String, String)> = sqlx::query_as(&format!(
                    "SELECT tenant_id, plugin_name, config FROM {table}"
                ))
                .fetch_all(&mut *pool)
                .await?;
                out.extend(
                    rows.into_iter()
                        .map(|(tenant_id, plugin_name, config)| StoredConfig {
                            table,
                            tenant_id,
                            plugin_name,
                            key_id: None,
                            config,
                        }),
                );
            }
            let rows: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT key_id, tenant_id, plugin_name, config FROM rotation_schedules",
            )
            .fetch_all(&mut *pool)
            .await?;
            out.extend(
                rows.into_iter()
                    .map(|(key_id, tenant_id, plugin_name, config)| StoredConfig {
                        table: "rotation_schedules",
                        tenant_id,
                        plugin_name,
                        key_id: Some(key_id),
                        config,
                    }),
            );
            Ok(out)
        })
        .await
    })
}

/// Replace a stored configuration if it is still `c.config` (compare-and-set).
pub async fn replace_config(conn: &mut Tx, c: &StoredConfig, new: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", c.table, async {
        let r = match &c.key_id {
            Some(key) => sqlx::query(
                "UPDATE rotation_schedules SET config = $1 WHERE key_id = $2 AND config = $3",
            )
            .bind(new)
            .bind(key)
            .bind(&c.config),
            None => sqlx::query(if c.table == "storage_backends" {
                "UPDATE storage_backends SET config = $1 WHERE tenant_id = $2 AND plugin_name = $3 AND config = $4"
            } else {
                "UPDATE storage_backend_configs SET config = $1 WHERE tenant_id = $2 AND plugin_name = $3 AND config = $4"
            })
            .bind(new)
            .bind(&c.tenant_id)
            .bind(&c.plugin_name)
            .bind(&c.config),
        }
        .execute(conn)
        .await?;
        Ok(r.rows_affected() == 1)
    })
    .await
    })
}
