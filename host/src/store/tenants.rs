//! The `tenants` table.

use super::{on, Conn, Tx};

use crate::error::Result;

/// A tenant row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub id: String,
    pub created_at: String,
    pub kek_wrapped: Vec<u8>,
    /// The 12-digit account id AWS-style ARNs name the tenant by.
    pub account_id: String,
}

const COLUMNS: &str = "id, created_at, kek_wrapped, account_id";

pub async fn get(pool: impl Into<Conn<'_>>, id: &str) -> Result<Option<TenantRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "tenants", async move {
            Ok(
                sqlx::query_as(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *pool)
                    .await?,
            )
        })
        .await
    })
}

pub async fn exists(conn: &mut Tx, id: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("SELECT", "tenants", async move {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_one(conn)
                .await?;
            Ok(n > 0)
        })
        .await
    })
}

pub async fn insert(conn: &mut Tx, row: &TenantRow) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("INSERT", "tenants", async move {
            sqlx::query(&format!(
                "INSERT INTO tenants ({COLUMNS}) VALUES ($1, $2, $3, $4)"
            ))
            .bind(&row.id)
            .bind(&row.created_at)
            .bind(&row.kek_wrapped)
            .bind(&row.account_id)
            .execute(conn)
            .await?;
            Ok(())
        })
        .await
    })
}

/// Every tenant's stored KEK (`kek_wrapped`), for garbage collection: the token objects a
/// KEK's stored form names are referenced.
pub async fn stored_keks(pool: impl Into<Conn<'_>>) -> Result<Vec<Vec<u8>>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "tenants", async move {
            Ok(sqlx::query_scalar("SELECT kek_wrapped FROM tenants")
                .fetch_all(&mut *pool)
                .await?)
        })
        .await
    })
}

/// The tenant whose account id is `account`.
pub async fn by_account(pool: impl Into<Conn<'_>>, account: &str) -> Result<Option<TenantRow>> {
    on!(pool, {
        crate::telemetry::spans::db("SELECT", "tenants", async move {
            Ok(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM tenants WHERE account_id = $1"
            ))
            .bind(account)
            .fetch_optional(&mut *pool)
            .await?)
        })
        .await
    })
}

/// An account id from 8 random bytes: 12 decimal digits, not starting with 0 (some tools
/// read account ids as numbers).
pub fn account_id_from(random: &[u8]) -> String {
    let mut b = [0u8; 8];
    let n = random.len().min(8);
    b[..n].copy_from_slice(&random[..n]);
    (u64::from_le_bytes(b) % 900_000_000_000 + 100_000_000_000).to_string()
}

/// Whether `s` is an account id: 12 decimal digits.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}
