//! The `principals` table. Tokens are stored only as their keyed hash.

use super::{on, Conn, Tx};

use crate::error::Result;

/// A principal row (without its token hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PrincipalRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub kind: String,
    pub role: String,
    pub operator: bool,
    pub created_at: String,
}

const COLUMNS: &str = "id, tenant_id, name, kind, role, operator, created_at";

/// Look a principal up by the keyed hash of its token.
pub async fn by_token_hash(
    pool: impl Into<Conn<'_>>,
    hash: &[u8],
) -> Result<Option<(PrincipalRow, Vec<u8>)>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "principals", async move {
            #[derive(sqlx::FromRow)]
            struct WithHash {
                #[sqlx(flatten)]
                row: PrincipalRow,
                token_hash: Vec<u8>,
            }
            let found: Option<WithHash> = sqlx::query_as(&format!(
                "SELECT {COLUMNS}, token_hash FROM principals WHERE token_hash = $1"
            ))
            .bind(hash)
            .fetch_optional(&mut *pool)
            .await?;
            Ok(found.map(|f| (f.row, f.token_hash)))
        })
        .await
    })
}

pub async fn get(pool: impl Into<Conn<'_>>, id: &str) -> Result<Option<PrincipalRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "principals", async move {
            Ok(
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM principals WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *pool)
                    .await?,
            )
        })
        .await
    })
}

/// A principal of `tenant` by name.
pub async fn by_name(
    pool: impl Into<Conn<'_>>,
    tenant: &str,
    name: &str,
) -> Result<Option<PrincipalRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "principals", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM principals WHERE tenant_id = $1 AND name = $2"
            ))
            .bind(tenant)
            .bind(name)
            .fetch_optional(&mut *pool)
            .await?)
        })
        .await
    })
}

pub async fn name_taken(conn: &mut Tx, tenant: &str, name: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "principals", async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM principals WHERE tenant_id = $1 AND name = $2",
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

pub async fn insert(conn: &mut Tx, row: &PrincipalRow, token_hash: &[u8]) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "principals", async move {
        sqlx::query(
            "INSERT INTO principals (id, tenant_id, name, kind, role, operator, token_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&row.id)
        .bind(&row.tenant_id)
        .bind(&row.name)
        .bind(&row.kind)
        .bind(&row.role)
        .bind(row.operator)
        .bind(token_hash)
        .bind(&row.created_at)
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
    })
}

/// Of `ids`, those that are principals of `tenant`.
pub async fn existing_in_tenant(
    conn: impl Into<Conn<'_>>,
    tenant: &str,
    ids: &[String],
) -> Result<Vec<String>> {
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "principals", async move {
            let mut found = Vec::new();
            for id in ids {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM principals WHERE id = $1 AND tenant_id = $2",
                )
                .bind(id)
                .bind(tenant)
                .fetch_one(&mut *conn)
                .await?;
                if n > 0 {
                    found.push(id.clone());
                }
            }
            Ok(found)
        })
        .await
    })
}

/// Every principal of every tenant, by tenant then id (`keyplane policy who-can`).
pub async fn all(pool: impl Into<Conn<'_>>) -> Result<Vec<PrincipalRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "principals", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM principals ORDER BY tenant_id, id"
            ))
            .fetch_all(&mut *pool)
            .await?)
        })
        .await
    })
}
