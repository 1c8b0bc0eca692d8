//! Databases for the store's own tests, on either backend.
//!
//! PostgreSQL: the cluster named by `KEYPLANE_TEST_POSTGRES` (a URL of any database on it; the
//! test command starts one for the whole run), else a throwaway cluster of the test's own
//! ([`pgtest::Cluster`], stopped when the returned guard drops). Each call makes a new
//! database, so tests never see each other's rows.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{on, Db};

/// What keeps a test database alive.
pub enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Cluster(#[allow(dead_code)] Option<pgtest::Cluster>),
}

/// A fresh, migrated SQLite database.
pub async fn sqlite() -> (Guard, Db) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (Guard::Dir(dir), Db::open(&url).await.unwrap())
}

/// A fresh, migrated PostgreSQL database.
pub async fn postgres() -> (Guard, Db) {
    let (guard, url) = postgres_database().await;
    let db = Db::open(&url).await.unwrap();
    (guard, db)
}

/// A fresh PostgreSQL database and its URL (for tests that open it more than once, as the
/// nodes of a cluster do).
pub async fn postgres_database() -> (Guard, String) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (cluster, admin_url) = match std::env::var("KEYPLANE_TEST_POSTGRES") {
        Ok(url) => (None, url),
        Err(_) => {
            let c = pgtest::Cluster::start().expect("start a throwaway PostgreSQL cluster");
            let url = c.url("postgres");
            (Some(c), url)
        }
    };
    let name = format!(
        "t_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let admin = Db::open_read_only(&admin_url).await.unwrap();
    let created: crate::error::Result<()> = async {
        let db = &admin;
        on!(db, {
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(db)
                .await?;
            Ok(())
        })
    }
    .await;
    created.unwrap();
    admin.close().await;
    (Guard::Cluster(cluster), with_database(&admin_url, &name))
}

/// Both backends, each with a fresh database.
pub async fn both() -> Vec<(Guard, Db)> {
    vec![sqlite().await, postgres().await]
}

/// `url` with its database path replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|i| base[i..].find('/').map(|j| i + j))
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A tenant row with a placeholder KEK (for tests of tables that reference tenants).
pub async fn insert_tenant(db: &Db, id: &str) {
    let mut tx = db.begin().await.unwrap();
    super::tenants::insert(
        &mut tx,
        &super::tenants::TenantRow {
            id: id.into(),
            created_at: String::new(),
            kek_wrapped: vec![0],
            account_id: format!("{:012}", id.len()),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Run one statement (test fixtures: literal values only) inside `tx`.
pub async fn execute(tx: &mut super::Tx, sql: &str) {
    let done: crate::error::Result<()> = async {
        on!(tx, {
            sqlx::query(sql).execute(tx).await?;
            Ok(())
        })
    }
    .await;
    done.unwrap();
}
