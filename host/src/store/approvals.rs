//! The `deletion_approvals` table: a second admin's approval of one key's deletion, asked for
//! by one principal, valid for a short window and used at most once.

use super::{on, Conn, Tx};

use crate::error::Result;

/// An approval row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApprovalRow {
    pub id: String,
    pub tenant_id: String,
    pub key_id: String,
    pub requester_id: String,
    pub approver_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

pub async fn insert(conn: &mut Tx, a: &ApprovalRow) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "deletion_approvals", async move {
            sqlx::query(
            "INSERT INTO deletion_approvals (id, tenant_id, key_id, requester_id, approver_id, \
             created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
        )
        .bind(&a.id)
        .bind(&a.tenant_id)
        .bind(&a.key_id)
        .bind(&a.requester_id)
        .bind(&a.approver_id)
        .bind(a.created_at)
        .bind(a.expires_at)
        .execute(conn)
        .await?;
            Ok(())
        })
        .await
    })
}

/// The most recent approval of deleting `key_id` asked for by `requester` that is unused and
/// still valid at `now`.
pub async fn valid(
    pool: impl Into<Conn<'_>>,
    key_id: &str,
    requester: &str,
    now: i64,
) -> Result<Option<ApprovalRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "deletion_approvals", async move {
            Ok(sqlx::query_as(
                "SELECT * FROM deletion_approvals WHERE key_id = $1 AND requester_id = $2 \
             AND used_at IS NULL AND expires_at > $3 ORDER BY created_at DESC LIMIT 1",
            )
            .bind(key_id)
            .bind(requester)
            .bind(now)
            .fetch_optional(&mut *pool)
            .await?)
        })
        .await
    })
}

/// Use an approval (compare-and-set: false if it was used meanwhile or has expired).
pub async fn consume(conn: &mut Tx, id: &str, now: i64) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("UPDATE", "deletion_approvals", async move {
            let r = sqlx::query(
                "UPDATE deletion_approvals SET used_at = $1 WHERE id = $2 AND used_at IS NULL \
             AND expires_at > $3",
            )
            .bind(now)
            .bind(id)
            .bind(now)
            .execute(conn)
            .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    })
}
