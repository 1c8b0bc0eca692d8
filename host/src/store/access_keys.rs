//! The `access_keys` table: AWS-style access keys of principals. The secret is stored sealed by
//! the HSM's root key (see the migration); rows never hold it in the clear.

use super::{on, Conn, Tx};

use super::principals::PrincipalRow;
use crate::error::Result;

/// An access key row (with the sealed secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccessKeyRow {
    pub id: String,
    pub principal_id: String,
    pub secret_sealed: Vec<u8>,
    pub created_at: String,
    pub created_by: String,
}

/// The AAD an access key's secret is sealed with (under the HSM's root key).
pub fn secret_aad(access_key_id: &str) -> Vec<u8> {
    format!("keyplane/access-key/v1/{access_key_id}").into_bytes()
}

const COLUMNS: &str = "id, principal_id, secret_sealed, created_at, created_by";

/// An access key with its principal and the principal's tenant's account id: what checking a
/// signature needs.
#[derive(Debug, Clone)]
pub struct AccessKeyOwner {
    pub key: AccessKeyRow,
    pub principal: PrincipalRow,
    pub account_id: String,
}

pub async fn insert(conn: &mut Tx, row: &AccessKeyRow) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "access_keys", async move {
            sqlx::query(&format!(
                "INSERT INTO access_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
            ))
            .bind(&row.id)
            .bind(&row.principal_id)
            .bind(&row.secret_sealed)
            .bind(&row.created_at)
            .bind(&row.created_by)
            .execute(conn)
            .await?;
            Ok(())
        })
        .await
    })
}

pub async fn get(pool: impl Into<Conn<'_>>, id: &str) -> Result<Option<AccessKeyRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "access_keys", async move {
            Ok(
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM access_keys WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *pool)
                    .await?,
            )
        })
        .await
    })
}

/// An access key with its owner, for authentication.
pub async fn owner(pool: impl Into<Conn<'_>>, id: &str) -> Result<Option<AccessKeyOwner>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "access_keys", async move {
            #[derive(sqlx::FromRow)]
            struct Joined {
                #[sqlx(flatten)]
                key: AccessKeyRow,
                p_id: String,
                tenant_id: String,
                name: String,
                kind: String,
                role: String,
                operator: bool,
                p_created_at: String,
                account_id: String,
            }
            let row: Option<Joined> = sqlx::query_as(
                "SELECT a.id, a.principal_id, a.secret_sealed, a.created_at, a.created_by, \
             p.id AS p_id, p.tenant_id, p.name, p.kind, p.role, p.operator, \
             p.created_at AS p_created_at, t.account_id \
             FROM access_keys a JOIN principals p ON p.id = a.principal_id \
             JOIN tenants t ON t.id = p.tenant_id WHERE a.id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *pool)
            .await?;
            Ok(row.map(|j| AccessKeyOwner {
                key: j.key,
                principal: PrincipalRow {
                    id: j.p_id,
                    tenant_id: j.tenant_id,
                    name: j.name,
                    kind: j.kind,
                    role: j.role,
                    operator: j.operator,
                    created_at: j.p_created_at,
                },
                account_id: j.account_id,
            }))
        })
        .await
    })
}

/// A principal's access keys, oldest first.
pub async fn of_principal(pool: impl Into<Conn<'_>>, principal: &str) -> Result<Vec<AccessKeyRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "access_keys", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM access_keys WHERE principal_id = $1 ORDER BY created_at, id"
            ))
            .bind(principal)
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}

/// How many access keys `principal` has, counted with the principal held until the
/// transaction ends, so that a limit checked against the count holds when a key is then
/// inserted: on PostgreSQL (READ COMMITTED) two creations would each count the keys without
/// the other's and both insert, so the principal's row is locked first (`FOR NO KEY UPDATE`:
/// it excludes another such lock, not the key-share locks of rows that merely name the
/// principal) and the second creation counts after the first commits; SQLite's writer transaction already
/// excludes every other writer.
pub async fn count(conn: &mut Tx, principal: &str) -> Result<i64> {
    if conn.dialect() == super::Dialect::Postgres {
        on!(conn, {
            sqlx::query("SELECT 1 FROM principals WHERE id = $1 FOR NO KEY UPDATE")
                .bind(principal)
                .execute(&mut *conn)
                .await?;
            Ok::<(), crate::error::Error>(())
        })?;
    }
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "access_keys", async move {
            Ok(
                sqlx::query_scalar("SELECT COUNT(*) FROM access_keys WHERE principal_id = $1")
                    .bind(principal)
                    .fetch_one(conn)
                    .await?,
            )
        })
        .await
    })
}

/// Delete an access key; whether it existed.
pub async fn delete(conn: &mut Tx, id: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("DELETE", "access_keys", async move {
            let r = sqlx::query("DELETE FROM access_keys WHERE id = $1")
                .bind(id)
                .execute(conn)
                .await?;
            Ok(r.rows_affected() > 0)
        })
        .await
    })
}
