//! Import and export bookkeeping: the `import_tokens` table and the origin, exportability and
//! imported-material columns of `keys`.

use super::{on, Conn, Tx};
use crate::model::KeyState;

use crate::error::Result;

/// Material made by keyplane's HSM.
pub const ORIGIN_KEYPLANE: &str = "keyplane";
/// Material imported by the tenant (bring your own key).
pub const ORIGIN_EXTERNAL: &str = "external";

/// An import token row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImportTokenRow {
    pub id: String,
    pub tenant_id: String,
    pub key_id: String,
    pub wrapping_algorithm: String,
    pub wrapping_key_spec: String,
    pub hsm_object_id: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Where a key's material came from and what may be done with it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyMaterialRow {
    pub origin: String,
    pub exportable: bool,
    pub material_expires_at: Option<i64>,
    pub material_check: Option<Vec<u8>>,
}

pub async fn insert_token(conn: &mut Tx, t: &ImportTokenRow) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "import_tokens", async move {
        sqlx::query(
            "INSERT INTO import_tokens (id, tenant_id, key_id, wrapping_algorithm, \
             wrapping_key_spec, hsm_object_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(&t.tenant_id)
        .bind(&t.key_id)
        .bind(&t.wrapping_algorithm)
        .bind(&t.wrapping_key_spec)
        .bind(&t.hsm_object_id)
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
    })
}

pub async fn token(pool: impl Into<Conn<'_>>, id: &str) -> Result<Option<ImportTokenRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "import_tokens", async move {
            Ok(sqlx::query_as("SELECT * FROM import_tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *pool)
                .await?)
        })
        .await
    })
}

/// Remove a token; false if it was already gone (used concurrently).
pub async fn delete_token(conn: &mut Tx, id: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("DELETE", "import_tokens", async move {
            Ok(sqlx::query("DELETE FROM import_tokens WHERE id = $1")
                .bind(id)
                .execute(conn)
                .await?
                .rows_affected()
                == 1)
        })
        .await
    })
}

/// The tokens of a key not yet used or expired, oldest first.
pub async fn tokens_of_key(conn: &mut Tx, key_id: &str) -> Result<Vec<ImportTokenRow>> {
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "import_tokens", async move {
            Ok(sqlx::query_as(
                "SELECT * FROM import_tokens WHERE key_id = $1 ORDER BY created_at, id",
            )
            .bind(key_id)
            .fetch_all(conn)
            .await?)
        })
        .await
    })
}

/// Tokens past their expiry (their HSM objects are to be destroyed).
pub async fn expired_tokens(
    pool: impl Into<Conn<'_>>,
    now: i64,
    limit: i64,
) -> Result<Vec<ImportTokenRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "import_tokens", async move {
            Ok(
                sqlx::query_as("SELECT * FROM import_tokens WHERE expires_at <= $1 LIMIT $2")
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&mut *pool)
                    .await?,
            )
        })
        .await
    })
}

pub async fn material(pool: impl Into<Conn<'_>>, key_id: &str) -> Result<Option<KeyMaterialRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "keys", async move {
        Ok(sqlx::query_as(
            "SELECT origin, exportable, material_expires_at, material_check FROM keys WHERE id = $1",
        )
        .bind(key_id)
        .fetch_optional(&mut *pool)
        .await?)
    })
    .await
    })
}

/// Set a new key's origin and exportability (in its creation transaction).
pub async fn set_origin(conn: &mut Tx, key_id: &str, origin: &str, exportable: bool) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            sqlx::query("UPDATE keys SET origin = $1, exportable = $2 WHERE id = $3")
                .bind(origin)
                .bind(exportable)
                .bind(key_id)
                .execute(conn)
                .await?;
            Ok(())
        })
        .await
    })
}

/// Record imported material: a key pending import becomes enabled, or disabled again if it was
/// disabled when its previous material expired. Returns the state it is now in, or `None` if
/// it was no longer pending import (compare-and-set).
pub async fn set_imported(
    conn: &mut Tx,
    key_id: &str,
    expires_at: Option<i64>,
    check: &[u8],
) -> Result<Option<String>> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            Ok(sqlx::query_scalar(
            "UPDATE keys SET state = CASE WHEN state_before_expiry = 'disabled' THEN 'disabled' \
             ELSE 'enabled' END, state_before_expiry = NULL, material_expires_at = $1, \
             material_check = $2 WHERE id = $3 AND state = $4 RETURNING state",
        )
        .bind(expires_at)
        .bind(check)
        .bind(key_id)
        .bind(KeyState::PendingImport)
        .fetch_optional(conn)
        .await?)
        })
        .await
    })
}

/// External keys whose imported material has expired and still has to be deleted, and keys
/// whose expiry a crash interrupted: those the scheduler never failed on first (see
/// `keys::note_scheduler_failure`).
pub async fn expired_material(
    pool: impl Into<Conn<'_>>,
    now: i64,
    limit: i64,
) -> Result<Vec<String>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "keys", async move {
            Ok(sqlx::query_scalar(
                "SELECT id FROM keys WHERE origin = 'external' AND (state = $1 OR \
             (material_expires_at <= $2 AND state IN ('enabled', 'disabled'))) \
             ORDER BY COALESCE(scheduler_failed_at, 0), id LIMIT $3",
            )
            .bind(KeyState::Expiring)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

/// Start deleting a key's imported material on request (`delete-imported-key-material`):
/// enabled or disabled to [`KeyState::Expiring`] (remembering which), committed before the
/// material is deleted; the scheduler finishes it if a crash interrupts. True also when the
/// key is expiring already; false if it holds no imported material to delete.
pub async fn begin_deletion(conn: &mut Tx, key_id: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            let r = sqlx::query(
                "UPDATE keys SET state_before_expiry = state, state = $1 WHERE id = $2 \
             AND origin = 'external' AND state IN ('enabled', 'disabled')",
            )
            .bind(KeyState::Expiring)
            .bind(key_id)
            .execute(&mut *conn)
            .await?;
            if r.rows_affected() == 1 {
                return Ok(true);
            }
            let state: Option<KeyState> =
                sqlx::query_scalar("SELECT state FROM keys WHERE id = $1")
                    .bind(key_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            Ok(state == Some(KeyState::Expiring))
        })
        .await
    })
}

/// Start deleting a key's expired material: enabled or disabled to [`KeyState::Expiring`]
/// (remembering which), committed before the material is deleted. True also when the key is
/// expiring already (a crash interrupted the last attempt); false if it is in no state to
/// expire (cancelled, scheduled for deletion, ...).
pub async fn begin_expiry(conn: &mut Tx, key_id: &str, now: i64) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
        let r = sqlx::query(
            "UPDATE keys SET state_before_expiry = state, state = $1 WHERE id = $2 \
             AND origin = 'external' AND material_expires_at <= $3 AND state IN ('enabled', 'disabled')",
        )
        .bind(KeyState::Expiring)
        .bind(key_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(true);
        }
        let state: Option<KeyState> = sqlx::query_scalar("SELECT state FROM keys WHERE id = $1")
            .bind(key_id)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(state == Some(KeyState::Expiring))
    })
    .await
    })
}

/// After expiry or deletion (material deleted): the key waits for the same material again;
/// its version keeps its row but no material, and `reason` as its state's reason. A version
/// revoked before stays compromised. Only from [`KeyState::Expiring`] (false otherwise).
pub async fn clear_material(conn: &mut Tx, key_id: &str, now: &str, reason: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "keys", async move {
            let r = sqlx::query(
            "UPDATE keys SET state = $1, material_expires_at = NULL WHERE id = $2 AND state = $3",
        )
        .bind(KeyState::PendingImport)
        .bind(key_id)
        .bind(KeyState::Expiring)
        .execute(&mut *conn)
        .await?;
            if r.rows_affected() != 1 {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE key_versions SET wrapped_material = NULL, hsm_object_id = NULL, \
             hsm_wrapped = NULL, blob_store = NULL, blob_name = NULL, state_changed_at = $1, \
             state = CASE WHEN state = 'compromised' THEN state ELSE $2 END, \
             state_reason = CASE WHEN state = 'compromised' THEN state_reason \
             ELSE $3 END WHERE key_id = $4",
            )
            .bind(now)
            .bind(KeyState::PendingImport)
            .bind(reason)
            .bind(key_id)
            .execute(&mut *conn)
            .await?;
            Ok(true)
        })
        .await
    })
}
