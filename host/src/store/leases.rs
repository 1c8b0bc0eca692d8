//! The `leases` table: a named lease held by one holder until it expires, so work that must
//! run once per cluster runs in one place at a time: a scheduler pass (one node), garbage
//! collection and archiving (once per interval), and the deletion of one key's imported
//! material (`material:<key>`, one request or expiry; `ops::delete_imported_key_material`).

use super::{on, Tx};

use crate::error::Result;

/// Take or renew `name` for `holder` until `expires_at` if it is free, expired, or already
/// ours. Returns whether we hold it.
pub async fn acquire(
    conn: &mut Tx,
    name: &str,
    holder: &str,
    now: i64,
    expires_at: i64,
) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPSERT", "leases", async move {
            let r = sqlx::query(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.expires_at < $4 OR leases.holder = excluded.holder",
            )
            .bind(name)
            .bind(holder)
            .bind(expires_at)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}

/// Give `name` up if we hold it.
pub async fn release(conn: &mut Tx, name: &str, holder: &str) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("DELETE", "leases", async move {
            sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await
    })
}
