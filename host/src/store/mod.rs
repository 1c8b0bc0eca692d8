//! Metadata storage: keyplane's one interface to its database.
//!
//! Everything keyplane keeps (tenants, principals, keys and versions, aliases, grants,
//! plugins, leases, the audit log) is read and written through the functions of the
//! submodules, one per table, which take a [`Db`] (reads on committed data) or a [`Tx`] (an
//! open write transaction, for reads that must see it and for every write). No driver type
//! leaves this module: callers name only [`Db`], [`Tx`] and the row types.
//!
//! Two backends implement it, chosen by the URL given to [`Db::open`]:
//! - [`sqlite`] (`sqlite://…`, the embedded default): one writer connection, a read pool, WAL;
//! - [`postgres`] (`postgres://…`, several nodes on one database).
//!
//! The queries are written once, in the SQL both dialects accept (`$1` placeholders, `TRUE`
//! and `FALSE`, `ON CONFLICT`, `RETURNING`); [`on!`] runs a function's body on whichever
//! backend holds the connection, so each body is compiled once per backend with that driver's
//! types, and no query pays for dynamic dispatch. Each backend has its own migrations
//! (`migrations/sqlite`, `migrations/postgres`) that give the same tables and columns.
//!
//! The database also counts committed write transactions (its *generation*): [`cache`] keeps
//! hot rows only while the generation they were read at is still current, so any committed
//! change (a key disabled, a token's principal removed) is seen by the very next request.
//! Transactions that change nothing a cache holds (audit records, usage counters) are begun
//! with [`Db::begin_bookkeeping`] and leave the generation alone.

pub mod access_keys;
pub mod aliases;
pub mod approvals;
pub mod bulk;
pub mod cache;
pub mod grants;
pub mod imports;
pub mod key_policies;
pub mod keys;
pub mod leases;
pub mod meta;
pub mod plugin_kv;
pub mod plugins;
pub mod postgres;
pub mod principals;
pub mod sqlite;
pub mod tenants;
#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Sqlite, SqliteConnection, Transaction};
use tokio::sync::broadcast;

use crate::error::Result;

/// Run `$body` with `$conn` rebound from a [`Conn`] (anything `Into<Conn>`: `&Db`, `&mut Tx`)
/// to the backend's own connection: the body is compiled once per backend. The second form,
/// `on!(expr => |c| body)`, binds the backend's connection to `c` for one expression.
macro_rules! on {
    ($conn:expr => |$c:ident| $body:expr) => {{
        let conn: $crate::store::Conn<'_> = ($conn).into();
        let mut guard = conn.acquire().await?;
        match guard.exec() {
            $crate::store::Exec::Sqlite($c) => $body,
            $crate::store::Exec::Postgres($c) => $body,
        }
    }};
    ($conn:ident, $body:block) => {{
        let conn: $crate::store::Conn<'_> = $conn.into();
        let mut guard = conn.acquire().await?;
        match guard.exec() {
            $crate::store::Exec::Sqlite($conn) => $body,
            $crate::store::Exec::Postgres($conn) => $body,
        }
    }};
}
pub(crate) use on;

/// Handles to the database.
#[derive(Clone)]
pub struct Db {
    backend: Backend,
    /// How long a writer waits for another holding the lock (then `503`).
    busy_wait: Duration,
    /// Count of committed write transactions (see the module doc).
    generation: Arc<AtomicU64>,
    /// Other nodes' notices (see [`Notice`]).
    notices: broadcast::Sender<Notice>,
    /// The audit chains this handle writes.
    audit_chains: Arc<AuditChains>,
}

/// The audit chains a [`Db`] handle writes (`crate::audit::chains` says what a chain is and
/// takes them): the chain that records appended inside its transactions join, and every chain
/// this process owns (whose heads its checkpoints sign). Kept here, with the handle, because
/// every [`Tx`] needs the first.
#[derive(Debug, Default)]
pub struct AuditChains {
    /// The chains of records appended inside transactions, taken in turn: none (so the shared
    /// chain 0) until the process takes chains of its own.
    transactions: std::sync::RwLock<Vec<i64>>,
    /// Which of them the next transaction joins.
    turn: AtomicU64,
    /// The chains this process took (the shared chain is nobody's).
    owned: Mutex<Vec<i64>>,
}

impl AuditChains {
    /// The chain the records appended inside the next transaction join.
    pub fn transactions(&self) -> i64 {
        let chains = self
            .transactions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if chains.is_empty() {
            return 0;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) as usize;
        chains[turn % chains.len()]
    }

    /// Add `chain` (which this process took) to those records appended inside transactions
    /// join.
    pub fn add_transactions(&self, chain: i64) {
        self.transactions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(chain);
    }

    /// Note that this process took `chain`.
    pub fn add_owned(&self, chain: i64) {
        self.owned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(chain);
    }

    /// The chains this process took, oldest first.
    pub fn owned(&self) -> Vec<i64> {
        self.owned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What one node tells the others sharing its database (PostgreSQL `NOTIFY`; a SQLite
/// database has one node, and none are sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Rows the caches hold changed (the generation advances; sent by every commit of a
    /// [`Db::begin`] transaction).
    Changed,
    /// The policy set was reloaded: reload it here too.
    PoliciesReloaded,
    /// A key's material was shredded (destroyed, or imported material deleted or expired):
    /// drop every copy derived from it (the HSM session objects unwrapped from its stored
    /// copies, and, for a key being destroyed, any token object of it this node holds).
    MaterialShredded { key_id: String },
    /// Notices may have been missed (the listener reconnected): resynchronise what notices
    /// would have said.
    Resync,
}

impl Notice {
    fn encode(&self) -> String {
        match self {
            Notice::Changed => "changed".into(),
            Notice::PoliciesReloaded => "policies".into(),
            Notice::MaterialShredded { key_id } => format!("shredded|{key_id}"),
            Notice::Resync => "resync".into(),
        }
    }

    fn decode(s: &str) -> Option<Notice> {
        Some(match s.split_once('|') {
            Some(("shredded", key_id)) => Notice::MaterialShredded {
                key_id: key_id.to_string(),
            },
            _ => match s {
                "changed" => Notice::Changed,
                "policies" => Notice::PoliciesReloaded,
                "resync" => Notice::Resync,
                _ => return None,
            },
        })
    }
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Pools),
    Postgres(postgres::Pools),
}

/// Which backend a [`Db`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The clause that keeps a row read in a transaction from changing until it commits:
    /// PostgreSQL's `FOR SHARE`; nothing on SQLite, whose writer transaction already excludes
    /// every other writer.
    pub(crate) fn for_share(self) -> &'static str {
        match self {
            Dialect::Postgres => " FOR SHARE",
            Dialect::Sqlite => "",
        }
    }
}

impl Db {
    /// Open (creating if needed) the database at `url` and run its backend's migrations, with
    /// the default busy wait.
    pub async fn open(url: &str) -> anyhow::Result<Db> {
        Self::open_with(url, DEFAULT_BUSY_WAIT).await
    }

    /// [`Db::open`], waiting up to `busy_wait` for a lock another writer holds (another
    /// process or node included) before a write fails.
    pub async fn open_with(url: &str, busy_wait: Duration) -> anyhow::Result<Db> {
        let generation = Arc::<AtomicU64>::default();
        let (notices, _) = broadcast::channel(NOTICES);
        let backend = if postgres::is_url(url) {
            Backend::Postgres(
                postgres::Pools::open(url, busy_wait, generation.clone(), notices.clone()).await?,
            )
        } else {
            Backend::Sqlite(sqlite::Pools::open(url, busy_wait).await?)
        };
        Ok(Db {
            backend,
            busy_wait,
            generation,
            notices,
            audit_chains: Arc::default(),
        })
    }

    /// Other nodes' notices from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Tell the other nodes about `notice` (nothing on SQLite).
    pub async fn announce(&self, notice: &Notice) -> Result<()> {
        if let Backend::Postgres(p) = &self.backend {
            p.notify(&mut *p.acquire().await?, notice).await?;
        }
        Ok(())
    }

    /// Open an existing database without migrating or writing (for offline tools).
    pub async fn open_read_only(url: &str) -> anyhow::Result<Db> {
        let backend = if postgres::is_url(url) {
            Backend::Postgres(postgres::Pools::open_read_only(url).await?)
        } else {
            Backend::Sqlite(sqlite::Pools::open_read_only(url).await?)
        };
        Ok(Db {
            backend,
            busy_wait: DEFAULT_BUSY_WAIT,
            generation: Arc::default(),
            notices: broadcast::channel(NOTICES).0,
            audit_chains: Arc::default(),
        })
    }

    /// The backend.
    pub fn dialect(&self) -> Dialect {
        match &self.backend {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite pools, when this database is SQLite (the audit group commit drives a
    /// connection of its own there).
    pub fn sqlite(&self) -> Option<&sqlite::Pools> {
        match &self.backend {
            Backend::Sqlite(p) => Some(p),
            Backend::Postgres(_) => None,
        }
    }

    /// How long a writer waits for a lock another holds.
    pub fn busy_wait(&self) -> Duration {
        self.busy_wait
    }

    /// The audit chains this handle (and every clone of it) writes.
    pub fn audit_chains(&self) -> &AuditChains {
        &self.audit_chains
    }

    /// Begin a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(Tx {
            inner: self.begin_inner().await?,
            generation: Some(self.generation.clone()),
            audit_chain: self.audit_chains.transactions(),
        })
    }

    /// Begin a write transaction that changes no row a [`cache`] holds (audit records and
    /// checkpoints, usage counters), so committing it keeps cached rows valid.
    pub async fn begin_bookkeeping(&self) -> Result<Tx> {
        Ok(Tx {
            inner: self.begin_inner().await?,
            generation: None,
            audit_chain: self.audit_chains.transactions(),
        })
    }

    /// Begin a read-only transaction: every read in it sees the database of one moment (the
    /// audit walks). It writes nothing, so it holds no write lock.
    pub async fn snapshot(&self) -> Result<Tx> {
        let inner = match &self.backend {
            Backend::Sqlite(p) => TxInner::Sqlite(p.reader().begin().await?),
            Backend::Postgres(p) => TxInner::Postgres(p.snapshot().await?, p.clone()),
        };
        Ok(Tx {
            inner,
            generation: None,
            audit_chain: self.audit_chains.transactions(),
        })
    }

    async fn begin_inner(&self) -> sqlx::Result<TxInner> {
        Ok(match &self.backend {
            Backend::Sqlite(p) => TxInner::Sqlite(p.begin().await?),
            Backend::Postgres(p) => TxInner::Postgres(p.begin().await?, p.clone()),
        })
    }

    /// Count of committed write transactions so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Readiness probe.
    pub async fn ping(&self) -> Result<()> {
        let db = self;
        on!(db, {
            sqlx::query("SELECT 1").execute(db).await?;
            Ok(())
        })
    }

    /// Close the pools (SQLite: flushes the WAL on the last connection).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(p) => p.close().await,
            Backend::Postgres(p) => p.close().await,
        }
    }
}

/// Notices a slow subscriber may fall behind by (it then sees `Lagged` and resynchronises).
const NOTICES: usize = 256;

/// How long a writer waits by default for a lock another writer holds.
pub const DEFAULT_BUSY_WAIT: Duration = Duration::from_secs(10);

/// A write transaction. Committing it advances the database generation (unless it was begun
/// as bookkeeping).
pub struct Tx {
    inner: TxInner,
    generation: Option<Arc<AtomicU64>>,
    /// The audit chain records appended in it join ([`AuditChains::transactions`]).
    audit_chain: i64,
}

enum TxInner {
    Sqlite(Transaction<'static, Sqlite>),
    /// With the pools, to notify other nodes at commit.
    Postgres(Transaction<'static, Postgres>, postgres::Pools),
}

impl Tx {
    /// Commit, then advance the generation (also when the commit reports an error: whether it
    /// took effect is then unknown, and a needless cache miss is harmless).
    /// On PostgreSQL such a transaction also notifies the other nodes ([`Notice::Changed`]).
    pub async fn commit(self) -> Result<()> {
        let result = match self.inner {
            TxInner::Sqlite(t) => t.commit().await,
            TxInner::Postgres(mut t, pools) => {
                if self.generation.is_some() {
                    pools.notify(&mut t, &Notice::Changed).await?;
                }
                t.commit().await
            }
        };
        if let Some(g) = &self.generation {
            g.fetch_add(1, Ordering::SeqCst);
        }
        Ok(result?)
    }

    /// Roll back (nothing changed, so the generation stays).
    pub async fn rollback(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(t) => t.rollback().await?,
            TxInner::Postgres(t, _) => t.rollback().await?,
        }
        Ok(())
    }

    /// The audit chain records appended in it join.
    pub fn audit_chain(&self) -> i64 {
        self.audit_chain
    }

    /// The backend it runs on.
    pub fn dialect(&self) -> Dialect {
        match self.inner {
            TxInner::Sqlite(_) => Dialect::Sqlite,
            TxInner::Postgres(..) => Dialect::Postgres,
        }
    }
}

/// Where a store function runs its statements: on the read side of a [`Db`] (committed
/// data), or inside an open [`Tx`].
pub enum Conn<'a> {
    Db(&'a Db),
    Tx(&'a mut Tx),
}

impl<'a> From<&'a Db> for Conn<'a> {
    fn from(db: &'a Db) -> Self {
        Conn::Db(db)
    }
}

impl<'a, 'b> From<&'a mut &'b mut Tx> for Conn<'a> {
    fn from(tx: &'a mut &'b mut Tx) -> Self {
        Conn::Tx(tx)
    }
}

impl<'a> From<&'a mut Tx> for Conn<'a> {
    fn from(tx: &'a mut Tx) -> Self {
        Conn::Tx(tx)
    }
}

impl<'a, 'b> From<&'a mut Conn<'b>> for Conn<'a> {
    fn from(c: &'a mut Conn<'b>) -> Self {
        match c {
            Conn::Db(db) => Conn::Db(db),
            Conn::Tx(tx) => Conn::Tx(tx),
        }
    }
}

impl<'a> Conn<'a> {
    /// The backend it runs on.
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Db(db) => db.dialect(),
            Conn::Tx(tx) => tx.dialect(),
        }
    }

    /// A connection to run statements on: one from the read pool, or the transaction's.
    pub(crate) async fn acquire(self) -> sqlx::Result<Guard<'a>> {
        Ok(match self {
            Conn::Db(db) => match &db.backend {
                Backend::Sqlite(p) => Guard::SqlitePooled(p.reader().acquire().await?),
                Backend::Postgres(p) => Guard::PostgresPooled(p.pool().acquire().await?),
            },
            Conn::Tx(tx) => match &mut tx.inner {
                TxInner::Sqlite(t) => Guard::SqliteBorrowed(t),
                TxInner::Postgres(t, _) => Guard::PostgresBorrowed(t),
            },
        })
    }
}

/// A connection held for the statements of one store function.
pub(crate) enum Guard<'a> {
    SqlitePooled(PoolConnection<Sqlite>),
    SqliteBorrowed(&'a mut SqliteConnection),
    PostgresPooled(PoolConnection<Postgres>),
    PostgresBorrowed(&'a mut PgConnection),
}

/// The backend's own connection, for [`on!`].
pub(crate) enum Exec<'g> {
    Sqlite(&'g mut SqliteConnection),
    Postgres(&'g mut PgConnection),
}

impl Guard<'_> {
    pub(crate) fn exec(&mut self) -> Exec<'_> {
        match self {
            Guard::SqlitePooled(c) => Exec::Sqlite(c),
            Guard::SqliteBorrowed(c) => Exec::Sqlite(c),
            Guard::PostgresPooled(c) => Exec::Postgres(c),
            Guard::PostgresBorrowed(c) => Exec::Postgres(c),
        }
    }
}

/// Domain enums stored as text columns: encoded by their name, decoded by parsing it (a name
/// no variant has is a decode error, which the query reports as a database error), on either
/// backend.
macro_rules! text_column {
    ($($ty:ty => $parse:expr),* $(,)?) => {$(
        impl<DB: sqlx::Database> sqlx::Type<DB> for $ty
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $ty
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&'q str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $ty
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> std::result::Result<Self, sqlx::error::BoxDynError> {
                let s = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                let parse: fn(&str) -> Option<$ty> = $parse;
                parse(s).ok_or_else(|| format!("unknown {} {s:?}", stringify!($ty)).into())
            }
        }
    )*};
}

text_column! {
    crate::model::KeyState => crate::model::KeyState::parse,
    crate::model::Protection => crate::model::Protection::parse,
    crate::algorithms::KeySpec => |s| crate::algorithms::KeySpec::parse(s).ok(),
    crate::algorithms::KeyUsage => |s| crate::algorithms::KeyUsage::parse(s).ok(),
}

/// Current time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
