//! The PostgreSQL backend, for several keyplane nodes sharing one database.
//!
//! One pool serves reads and transactions alike. Transactions run at PostgreSQL's default
//! isolation (read committed): every state change in the store is a compare-and-set whose
//! `WHERE` names the state it was authorized for (PostgreSQL re-checks it against the newest
//! row version once a concurrent writer commits), and rows that must be unique are unique in
//! the schema, so no transaction relies on a lock held from its start as the SQLite backend's
//! `BEGIN IMMEDIATE` gives.
//!
//! Nodes tell each other about changes through `LISTEN`/`NOTIFY` on one channel: every
//! committed transaction that changes rows the caches hold notifies `changed` inside the
//! transaction (PostgreSQL delivers it only if it commits, and right after), and each node's
//! listener (one connection of its own) advances the database generation when another node's
//! notice arrives, so its row caches read again at their next use: a change made on one node
//! is honoured by every other within the notice's delivery (milliseconds). While the listener
//! is disconnected notices may be lost; it advances the generation when it reconnects, and
//! the caches' TTL (1 s by default) bounds what goes unseen meanwhile. Other notices name
//! events that are not row changes (a policy set reloaded, key versions shredded), handed to
//! subscribers of [`super::Db::subscribe`].

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::broadcast;

use super::Notice;

/// The channel every node listens on.
const CHANNEL: &str = "keyplane";

/// Whether `url` names a PostgreSQL database.
pub fn is_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Connections one node keeps at most.
const MAX_CONNECTIONS: u32 = 16;

/// The pool of a PostgreSQL database.
#[derive(Clone)]
pub struct Pools {
    pool: PgPool,
    /// This node's name in its notices (its own are not acted on twice).
    node: Arc<str>,
}

impl Pools {
    /// Connect and run the migrations in `migrations/postgres` (PostgreSQL's advisory lock
    /// keeps nodes starting together from running them twice).
    pub(super) async fn open(
        url: &str,
        busy_wait: Duration,
        generation: Arc<AtomicU64>,
        notices: broadcast::Sender<Notice>,
    ) -> anyhow::Result<Pools> {
        let pool = Self::connect(url, busy_wait).await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        let node: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        tokio::spawn(listen(listener, node.clone(), generation, notices));
        Ok(Pools { pool, node })
    }

    /// Connect without migrating or listening (for offline tools; they only read).
    pub(super) async fn open_read_only(url: &str) -> anyhow::Result<Pools> {
        Ok(Pools {
            pool: Self::connect(url, super::DEFAULT_BUSY_WAIT).await?,
            node: "offline".into(),
        })
    }

    /// Tell the other nodes about `notice` inside `conn`'s transaction (delivered when it
    /// commits) or at once outside one (this node's listener skips its own notices).
    pub(super) async fn notify(
        &self,
        conn: &mut PgConnection,
        notice: &Notice,
    ) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("{}|{}", self.node, notice.encode()))
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn connect(url: &str, busy_wait: Duration) -> anyhow::Result<PgPool> {
        // A lock another transaction holds is waited for as long as a SQLite writer waits
        // for the write lock; past it the statement fails and the request answers 503.
        let lock_timeout = busy_wait.as_millis().to_string();
        let opts = PgConnectOptions::from_str(url)?
            .application_name("keyplane")
            .options([("lock_timeout", lock_timeout.as_str())]);
        // No ping before each acquire (sqlx's default): it is a round trip before every
        // statement outside a transaction and every transaction, the audit group commit's
        // batches included. A connection that died meanwhile (PostgreSQL restarted) fails its
        // first statement instead, is dropped from the pool, and that request answers 503, as
        // it would have while PostgreSQL was away.
        Ok(PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .test_before_acquire(false)
            .acquire_timeout(busy_wait)
            .connect_with(opts)
            .await?)
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn begin(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        self.pool.begin().await
    }

    /// A read-only transaction on one snapshot (`REPEATABLE READ`).
    pub(super) async fn snapshot(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        Transaction::begin(
            self.pool.acquire().await?,
            Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into()),
        )
        .await
    }

    /// A connection from the pool (for [`Pools::notify`] outside a transaction).
    pub(super) async fn acquire(&self) -> sqlx::Result<sqlx::pool::PoolConnection<Postgres>> {
        self.pool.acquire().await
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

/// The listener task: act on other nodes' notices until the pool closes. A notice of a row
/// change advances `generation`; every notice goes to the subscribers. While the connection is
/// lost (PostgreSQL away) the generation advances at every failed attempt and attempts back
/// off up to [`MAX_LISTEN_BACKOFF`]; once it is back (the [`PgListener`] reconnects and listens
/// again by itself), notices may have been missed meanwhile, so [`Notice::Resync`] goes out
/// once.
async fn listen(
    mut listener: PgListener,
    node: Arc<str>,
    generation: Arc<AtomicU64>,
    notices: broadcast::Sender<Notice>,
) {
    let resync = || {
        generation.fetch_add(1, Ordering::SeqCst);
        let _ = notices.send(Notice::Resync);
    };
    let mut backoff = MIN_LISTEN_BACKOFF;
    let mut down = false;
    // Test hook: a node that misses other nodes' row changes (their notices lost), so that a
    // test can show what its caches' TTL, and grant tokens, bound.
    let deaf = cfg!(all(feature = "test-hooks", debug_assertions))
        && std::env::var_os("KEYPLANE_TEST_IGNORE_CHANGE_NOTICES").is_some();
    loop {
        if down {
            // Reconnect (and listen again) before waiting for notices, to say when it is back.
            match sqlx::Executor::execute(&mut listener, "SELECT 1").await {
                Ok(_) => {
                    tracing::info!("PostgreSQL notices are back");
                    down = false;
                    backoff = MIN_LISTEN_BACKOFF;
                    resync();
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(_) => {
                    generation.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_LISTEN_BACKOFF);
                    continue;
                }
            }
        }
        match listener.try_recv().await {
            Ok(Some(n)) => {
                let Some((from, body)) = n.payload().split_once('|') else {
                    continue;
                };
                if from == &*node {
                    continue;
                }
                let Some(notice) = Notice::decode(body) else {
                    tracing::debug!(payload = n.payload(), "unknown notice ignored");
                    continue;
                };
                if matches!(notice, Notice::Changed) {
                    // The generation is all a row change needs; not passed on, so the busy
                    // stream of them cannot make the handler lag past the notices it acts on
                    // (a lagging receiver loses the oldest messages).
                    if !deaf {
                        generation.fetch_add(1, Ordering::SeqCst);
                    }
                    continue;
                }
                let _ = notices.send(notice);
            }
            // Lost, and reconnected at once.
            Ok(None) => {
                tracing::warn!("lost the notice connection to PostgreSQL; reconnected");
                resync();
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL notices unavailable; retrying");
                generation.fetch_add(1, Ordering::SeqCst);
                down = true;
            }
        }
    }
}

/// First pause between attempts to reach PostgreSQL for notices.
const MIN_LISTEN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between them (the row TTL bounds what goes unseen meanwhile anyway).
const MAX_LISTEN_BACKOFF: Duration = Duration::from_secs(2);
