//! The audit log's chains: one hash chain per writer.
//!
//! A single chain has one writer at a time: the head is read and the next record chained
//! after it while a lock is held until the commit. On PostgreSQL that lock was cluster-wide and
//! held across network round trips, and it bounded every node (held 98–100% of the time at
//! 9.6k `encrypt`s a second on one node, and three nodes together did less). So the log is
//! several chains, each with one writer:
//!
//! - chain 0, the *shared* chain: every record of a SQLite database (one process writes it, and
//!   the database's write lock orders its transactions), and on PostgreSQL the records of
//!   processes that took no chain of their own (the key ceremony's commands), under an
//!   advisory lock that only they take;
//! - on PostgreSQL, chains a node takes when it starts ([`take`], a row of `audit_chains`):
//!   [`TRANSACTION_CHAINS`] for the records appended inside its transactions, joined in turn (a
//!   per-chain advisory lock orders the transactions that join one; no other node ever waits
//!   on it), and one per group-commit writer
//!   (`super::group_commit`), which alone writes it and keeps its head in memory, so a batch
//!   is one `INSERT`. A node that restarts takes new chains, so a chain never has two writers,
//!   even while a dying process and its successor overlap.
//!
//! Chain `c` owns the sequence numbers `(c << 40) + 1 ..= (c << 40) + 2^40 - 1`. `seq` stays
//! the table's primary key, and a record's chain is `seq >> 40`: no column or index is added,
//! checkpoints and archived segments keep naming records by `seq` alone, and the records
//! written before there were chains are chain 0, unchanged. Within a chain, records are
//! numbered from its first `seq` without a gap and each links to its predecessor by hash,
//! exactly as the single chain did; verification walks each chain on its own (`ORDER BY seq`
//! visits them one after another). A chain holds 2^40 records (about 14 months at 25k a
//! second); a group-commit writer whose chain is full takes another.
//!
//! What a chain per writer leaves open, and what covers it: a whole chain deleted together
//! with every checkpoint of it is indistinguishable from a chain never written, like a whole
//! log deleted before; the checkpoint file each node keeps (`super::checkpoint`) still names
//! it. Each node signs the heads of its own chains (and of the shared one), so
//! `keyplane audit verify` takes every node's public key.

use crate::error::{Error, Result};
use crate::store::{now_rfc3339, on, Conn, Db, Dialect};

/// Bits of `seq` numbering the records within a chain.
pub const BITS: u32 = 40;

/// Highest chain id that fits (`seq` is a signed 64-bit integer).
const MAX_CHAIN: i64 = (1 << (63 - BITS)) - 1;

/// The chain a record of sequence number `seq` belongs to.
pub fn of(seq: i64) -> i64 {
    seq >> BITS
}

/// The sequence number before the first of `chain` (its head while it is empty).
pub fn origin(chain: i64) -> i64 {
    chain << BITS
}

/// The last sequence number `chain` can hold.
pub fn last(chain: i64) -> i64 {
    origin(chain) + ((1 << BITS) - 1)
}

/// The head of `chain` while it holds no record.
pub fn empty_head(chain: i64) -> (i64, String) {
    (origin(chain), super::GENESIS.to_string())
}

/// What a chain is taken for (recorded in `audit_chains`).
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// Records appended inside the node's transactions.
    Transactions,
    /// One group-commit writer's batches.
    GroupCommit,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Transactions => "transactions",
            Purpose::GroupCommit => "group-commit",
        }
    }
}

/// Take a new chain for this process (a committed row of `audit_chains`, so no other process
/// ever takes it) and note it among the chains `db` owns.
pub async fn take(db: &Db, purpose: Purpose) -> Result<i64> {
    let node = format!(
        "{}:{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "-".into()),
        std::process::id()
    );
    let id: i64 = on!(db => |c| sqlx::query_scalar(
        "INSERT INTO audit_chains (node, purpose, created_at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(&node)
    .bind(purpose.as_str())
    .bind(now_rfc3339())
    .fetch_one(c)
    .await?);
    if !(1..=MAX_CHAIN).contains(&id) {
        tracing::error!(id, "no audit chain id left");
        return Err(Error::Internal);
    }
    db.audit_chains().add_owned(id);
    tracing::debug!(chain = id, purpose = purpose.as_str(), "audit chain taken");
    Ok(id)
}

/// Chains a node on PostgreSQL takes for the records appended inside its transactions, joined
/// in turn: a transaction holds its chain's lock from its append to its commit (about 0.7 ms
/// for a `create-key`), so with one chain a node's state changes ran one at a time.
pub const TRANSACTION_CHAINS: usize = 4;

/// On PostgreSQL, give this node [`TRANSACTION_CHAINS`] chains of its own for the records
/// appended inside its transactions (at start, before any request). On SQLite everything
/// stays on the shared chain.
pub async fn take_for_transactions(db: &Db) -> Result<()> {
    if db.dialect() == Dialect::Postgres {
        for _ in 0..TRANSACTION_CHAINS {
            let chain = take(db, Purpose::Transactions).await?;
            db.audit_chains().add_transactions(chain);
        }
    }
    Ok(())
}

/// The last record of `chain`: (seq, hash).
pub async fn head(conn: impl Into<Conn<'_>>, chain: i64) -> Result<Option<(i64, String)>> {
    on!(conn => |c| Ok(sqlx::query_as(HEAD_SQL)
        .bind(origin(chain))
        .bind(last(chain))
        .fetch_optional(c)
        .await?))
}

/// [`head`]'s statement: the bounds are bound, so it is one seek on the primary key.
pub const HEAD_SQL: &str =
    "SELECT seq, hash FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1";

/// Every chain a process took (chain 0, nobody's, is not among them). None on SQLite, where
/// every record is on chain 0 (so a database that predates `audit_chains`, opened read-only
/// by an auditor's tool, needs no such table).
pub async fn taken(conn: impl Into<Conn<'_>>) -> Result<std::collections::BTreeSet<i64>> {
    let conn: Conn<'_> = conn.into();
    if conn.dialect() == Dialect::Sqlite {
        return Ok(Default::default());
    }
    on!(conn => |c| {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_chains")
            .fetch_all(c)
            .await?;
        Ok(ids.into_iter().collect())
    })
}

/// A table whose rows are named by an audit `seq`.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Log,
    Checkpoints,
}

/// The chains that have rows in `table`, lowest first: one seek per chain (a skip scan over the
/// primary key), not a scan of the table.
pub async fn present(conn: impl Into<Conn<'_>>, table: Table) -> Result<Vec<i64>> {
    let sql = match table {
        Table::Log => "SELECT MIN(seq) FROM audit_log WHERE seq > $1",
        Table::Checkpoints => "SELECT MIN(seq) FROM audit_checkpoints WHERE seq > $1",
    };
    let conn: Conn<'_> = conn.into();
    on!(conn, {
        let mut chains = Vec::new();
        let mut after = 0;
        loop {
            let next: Option<i64> = sqlx::query_scalar(sql)
                .bind(after)
                .fetch_one(&mut *conn)
                .await?;
            let Some(seq) = next else {
                return Ok(chains);
            };
            chains.push(of(seq));
            after = last(of(seq));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_partition_the_sequence_numbers() {
        assert_eq!(of(1), 0);
        assert_eq!(of(last(0)), 0);
        assert_eq!(of(last(0) + 1), 1);
        assert_eq!(origin(1), last(0) + 1);
        assert_eq!(of(origin(7) + 1), 7);
        assert_eq!(of(last(MAX_CHAIN)), MAX_CHAIN);
        assert_eq!(last(MAX_CHAIN), i64::MAX);
        assert_eq!(empty_head(0), (0, super::super::GENESIS.to_string()));
    }
}
