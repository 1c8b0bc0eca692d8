//! The `plugin_kv` table: the tenant-scoped key-value rows behind the plugins' `kv`
//! capability. Every function takes the tenant; callers fix it per plugin instance.
//!
//! The rows are the tenant's, not one plugin's: all of a tenant's storage backends share them
//! (two backends built on `kv` read each other's blobs, which garbage collection and a
//! re-uploaded backend rely on). So the caps on rows and bytes are per tenant
//! ([`MAX_ROWS_PER_TENANT`], [`MAX_BYTES_PER_TENANT`]), and rows are deleted with the
//! tenant's last storage backend ([`delete_unreachable`]).

use super::{on, Db, Tx};
use crate::error::{Error, Result};
use crate::telemetry::spans;

/// Rows a tenant may keep in the table: a write that would add one more is refused with
/// [`Written::Full`] (changing or deleting rows still works). Each blob of a key version in a
/// `kv` backend is one row, so this is also how many such versions a tenant can have there.
/// Checked by counting the tenant's rows in the writing transaction, so on PostgreSQL writers
/// racing at the limit may overshoot it by as many rows as they are (at most the tenant's
/// concurrent plugin calls, `plugins.tenant_concurrency` on each node). The count is an index
/// range scan of the tenant's rows, made only by a write that adds a row.
pub const MAX_ROWS_PER_TENANT: i64 = 100_000;

/// Bytes of values a tenant may keep in the table: a write that would grow them past this is
/// refused with [`Written::Full`]. Rows alone would let a tenant's plugin keep 100,000 values
/// of the 1 MiB a value may have (100 GB of the shared database); a key version's blob is a
/// few hundred bytes, so this leaves room for every row the row cap allows at ten times that,
/// and for a plugin's own state besides. Checked as the rows are (in the writing transaction,
/// by a scan of the tenant's rows, made only by a write that grows its value or adds a row).
pub const MAX_BYTES_PER_TENANT: i64 = 256 << 20;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// It changed this many rows (0: its condition did not hold).
    Rows(u64),
    /// It would have added a row past [`MAX_ROWS_PER_TENANT`], or grown the values past
    /// [`MAX_BYTES_PER_TENANT`]; nothing was written.
    Full,
}

/// The value of `key`.
pub async fn get(db: &Db, tenant: &str, key: &str) -> Result<Option<Vec<u8>>> {
    spans::db("SELECT", "plugin_kv", async {
        Ok(on!(db => |c| sqlx::query_scalar(
            "SELECT value FROM plugin_kv WHERE tenant_id = $1 AND key = $2"
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(c)
        .await?))
    })
    .await
}

/// A write to one row, run in a transaction of its own.
pub enum Write<'a> {
    /// Set the value, whatever it was.
    Set { value: &'a [u8] },
    /// Set it if its value is `expected` now (`None`: if it is absent), in one statement, so
    /// two plugin calls racing on one key cannot both succeed.
    SetIf {
        expected: Option<&'a [u8]>,
        value: &'a [u8],
    },
    /// Delete it if its value is `expected` now.
    DeleteIf { expected: &'a [u8] },
    /// Delete it.
    Delete,
}

/// Apply `write` to `key`; returns the rows it changed. A write past the tenant's cap is
/// refused as [`Error::InvalidState`]; [`write_within_cap`] tells it apart.
pub async fn write(db: &Db, tenant: &str, key: &str, write: Write<'_>) -> Result<u64> {
    match write_within_cap(db, tenant, key, write).await? {
        Written::Rows(n) => Ok(n),
        Written::Full => Err(Error::InvalidState(full_message())),
    }
}

/// Why a write past the cap was refused.
pub fn full_message() -> String {
    format!(
        "the tenant's key-value table is full (at most {MAX_ROWS_PER_TENANT} rows and \
         {MAX_BYTES_PER_TENANT} bytes of values); delete rows to add more"
    )
}

/// Apply `write` to `key`: the rows it changed, or [`Written::Full`] if it would have added a
/// row past the tenant's cap.
pub async fn write_within_cap(
    db: &Db,
    tenant: &str,
    key: &str,
    write: Write<'_>,
) -> Result<Written> {
    let operation = match write {
        Write::Set { .. } => "UPSERT",
        Write::SetIf { .. } => "UPDATE",
        Write::DeleteIf { .. } | Write::Delete => "DELETE",
    };
    spans::db(operation, "plugin_kv", async {
        let mut tx = db.begin().await?;
        let written = write_in(&mut tx, tenant, key, write).await?;
        if written == Written::Full {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(written)
    })
    .await
}

/// The length of `key`'s value, if it is a row of the tenant's.
async fn own_length(conn: &mut Tx, tenant: &str, key: &str) -> Result<Option<i64>> {
    on!(conn, {
        Ok(sqlx::query_scalar(
            "SELECT CAST(LENGTH(value) AS BIGINT) FROM plugin_kv WHERE tenant_id = $1 AND key = $2",
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(conn)
        .await?)
    })
}

/// The tenant's rows and the bytes of their values.
async fn usage(conn: &mut Tx, tenant: &str) -> Result<(i64, i64)> {
    on!(conn, {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(LENGTH(value)), 0) AS BIGINT) \
             FROM plugin_kv WHERE tenant_id = $1",
        )
        .bind(tenant)
        .fetch_one(conn)
        .await?)
    })
}

/// Whether writing `value` to `key` would take the tenant past a cap: adding a row at
/// [`MAX_ROWS_PER_TENANT`], or growing its values past [`MAX_BYTES_PER_TENANT`]. A write
/// that neither adds a row nor grows its value is never refused (nor pays for the scan), and
/// neither is a conditional one (`expected`: `Some`) whose condition cannot hold (a create of
/// a row there is, an update of one there is not): it changes nothing, and is answered as
/// the conflict it is.
async fn past_cap(
    conn: &mut Tx,
    tenant: &str,
    key: &str,
    value: &[u8],
    expected: Option<Option<&[u8]>>,
) -> Result<bool> {
    let new = i64::try_from(value.len()).unwrap_or(i64::MAX);
    let own = own_length(conn, tenant, key).await?;
    let changes_nothing = matches!(
        (expected, own),
        (Some(None), Some(_)) | (Some(Some(_)), None)
    );
    if changes_nothing || own.is_some_and(|old| new <= old) {
        return Ok(false);
    }
    let (rows, bytes) = usage(conn, tenant).await?;
    let adds_row = own.is_none() && rows >= MAX_ROWS_PER_TENANT;
    let grows_past = bytes - own.unwrap_or(0) + new > MAX_BYTES_PER_TENANT;
    Ok(adds_row || grows_past)
}

async fn write_in(conn: &mut Tx, tenant: &str, key: &str, write: Write<'_>) -> Result<Written> {
    // A write of a value is refused past a cap (a conditional one too: its condition is
    // checked by the statement, after).
    let value = match &write {
        Write::Set { value } => Some((*value, None)),
        Write::SetIf { value, expected } => Some((*value, Some(*expected))),
        Write::DeleteIf { .. } | Write::Delete => None,
    };
    if let Some((value, expected)) = value {
        if past_cap(conn, tenant, key, value, expected).await? {
            return Ok(Written::Full);
        }
    }
    let n = on!(conn, {
        match write {
            Write::Set { value } => sqlx::query(
                "INSERT INTO plugin_kv (tenant_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, key) DO UPDATE SET value = excluded.value",
            )
            .bind(tenant)
            .bind(key)
            .bind(value)
            .execute(conn)
            .await?
            .rows_affected(),
            Write::SetIf {
                expected: None,
                value,
            } => sqlx::query(
                "INSERT INTO plugin_kv (tenant_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, key) DO NOTHING",
            )
            .bind(tenant)
            .bind(key)
            .bind(value)
            .execute(conn)
            .await?
            .rows_affected(),
            Write::SetIf {
                expected: Some(expected),
                value,
            } => sqlx::query(
                "UPDATE plugin_kv SET value = $1 WHERE tenant_id = $2 AND key = $3 AND value = $4",
            )
            .bind(value)
            .bind(tenant)
            .bind(key)
            .bind(expected)
            .execute(conn)
            .await?
            .rows_affected(),
            Write::DeleteIf { expected } => sqlx::query(
                "DELETE FROM plugin_kv WHERE tenant_id = $1 AND key = $2 AND value = $3",
            )
            .bind(tenant)
            .bind(key)
            .bind(expected)
            .execute(conn)
            .await?
            .rows_affected(),
            Write::Delete => sqlx::query("DELETE FROM plugin_kv WHERE tenant_id = $1 AND key = $2")
                .bind(tenant)
                .bind(key)
                .execute(conn)
                .await?
                .rows_affected(),
        }
    });
    Ok(Written::Rows(n))
}

/// Delete the tenant's rows if it has no storage backend left (no plugin could reach them any
/// more), in the caller's transaction: `delete-plugin` of a storage backend, after deleting
/// its row. Returns how many went.
pub async fn delete_unreachable(conn: &mut Tx, tenant: &str) -> Result<u64> {
    on!(conn, {
        spans::db("DELETE", "plugin_kv", async {
            Ok(sqlx::query(
                "DELETE FROM plugin_kv WHERE tenant_id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM plugins WHERE tenant_id = $1 AND world = 'storage-backend')",
            )
            .bind(tenant)
            .execute(conn)
            .await?
            .rows_affected())
        })
        .await
    })
}

/// Keys starting with `prefix`, after `after`, in order, at most `limit`.
pub async fn list(
    db: &Db,
    tenant: &str,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>> {
    spans::db("SELECT", "plugin_kv", async {
        Ok(on!(db => |c| sqlx::query_scalar(
            "SELECT key FROM plugin_kv WHERE tenant_id = $1 AND substr(key, 1, length($2)) = $2 \
             AND key > $3 ORDER BY key LIMIT $4",
        )
        .bind(tenant)
        .bind(prefix)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(c)
        .await?))
    })
    .await
}
