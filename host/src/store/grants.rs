//! The `grants` table: a grantee principal may perform the listed operations (Cedar action
//! names) on a key, within an encryption-context constraint if the grant has one. The
//! constraint applies to the operations that take an encryption context ([`WITH_CONTEXT`])
//! only: a constrained grant's `DescribeKey`, `RetireGrant` or `CreateGrant` is not refused
//! for a request that carries none (AWS's grant constraints likewise).

use std::collections::BTreeMap;

use super::{on, Conn, Tx};

use crate::error::{Error, Result};
use crate::model::KeyState;

/// A grant, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub key_id: String,
    pub name: Option<String>,
    pub grantee: String,
    pub retiring_principal: Option<String>,
    /// The names of the grantee, the retiring principal and the creator (read with the grant,
    /// for answers that name principals by name, as ARNs do).
    pub names: GrantNames,
    /// Cedar action names.
    pub operations: Vec<String>,
    /// The request's encryption context must contain these pairs.
    pub context_subset: Option<BTreeMap<String, String>>,
    /// The request's encryption context must be exactly this.
    pub context_equals: Option<BTreeMap<String, String>>,
    pub created_at: String,
    pub created_by: String,
}

/// The names of a grant's principals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantNames {
    pub grantee: String,
    pub retiring_principal: Option<String>,
    pub created_by: String,
}

/// The grantable actions that take an encryption context: the ones a grant's constraint
/// applies to.
pub const WITH_CONTEXT: &[&str] = &[
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "Rewrap",
    "RewrapTo",
];

impl Grant {
    /// Whether the grant's constraint holds for a request with encryption context `ec`. As in
    /// AWS, a constraint's keys match whatever their case, its values exactly.
    pub fn constraint_holds(&self, ec: &BTreeMap<String, String>) -> bool {
        let subset = self
            .context_subset
            .as_ref()
            .is_none_or(|want| want.iter().all(|(k, v)| has_pair(ec, k, v)));
        let equals = self.context_equals.as_ref().is_none_or(|want| {
            want.len() == ec.len()
                && want.iter().all(|(k, v)| has_pair(ec, k, v))
                && ec.iter().all(|(k, v)| has_pair(want, k, v))
        });
        subset && equals
    }

    /// The operations the grant allows a request with encryption context `ec`: those that
    /// take a context within its constraint, the others (`DescribeKey`...) whatever `ec` is,
    /// since they carry no context for a constraint to be checked against.
    pub fn actions_for<'g>(
        &'g self,
        ec: &BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'g str> + 'g {
        let holds = self.constraint_holds(ec);
        self.operations
            .iter()
            .map(String::as_str)
            .filter(move |a| holds || !WITH_CONTEXT.contains(a))
    }

    /// Whether every request a constraint of `subset` and `equals` admits, this grant's
    /// constraint admits too: a grant created through this one's `CreateGrant` must be at
    /// least as strict (AWS). An equals constraint admits only its own context; a subset
    /// constraint admits every context that contains it, so only a grant with no equals
    /// constraint, whose subset pairs it has, admits them all.
    pub fn admits_all_of(
        &self,
        subset: Option<&BTreeMap<String, String>>,
        equals: Option<&BTreeMap<String, String>>,
    ) -> bool {
        match equals {
            Some(only) => self.constraint_holds(only),
            None => {
                let least = subset.cloned().unwrap_or_default();
                self.context_equals.is_none() && self.constraint_holds(&least)
            }
        }
    }
}

/// Whether `ec` has the pair `key` (in any case) = `value` (exactly).
fn has_pair(ec: &BTreeMap<String, String>, key: &str, value: &str) -> bool {
    ec.iter()
        .any(|(k, v)| k.eq_ignore_ascii_case(key) && v == value)
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    key_id: String,
    name: Option<String>,
    grantee: String,
    retiring_principal: Option<String>,
    operations: String,
    context_subset: Option<String>,
    context_equals: Option<String>,
    created_at: String,
    created_by: String,
    grantee_name: Option<String>,
    retiring_name: Option<String>,
    creator_name: Option<String>,
}

fn corrupt(e: serde_json::Error) -> Error {
    tracing::error!(error = %e, "a stored grant does not decode");
    Error::Internal
}

impl TryFrom<Row> for Grant {
    type Error = Error;

    fn try_from(r: Row) -> Result<Grant> {
        let map = |s: Option<String>| -> Result<Option<BTreeMap<String, String>>> {
            s.map(|s| serde_json::from_str(&s).map_err(corrupt))
                .transpose()
        };
        Ok(Grant {
            operations: serde_json::from_str(&r.operations).map_err(corrupt)?,
            context_subset: map(r.context_subset)?,
            context_equals: map(r.context_equals)?,
            id: r.id,
            key_id: r.key_id,
            name: r.name,
            grantee: r.grantee,
            retiring_principal: r.retiring_principal,
            names: GrantNames {
                grantee: r.grantee_name.unwrap_or_default(),
                retiring_principal: r.retiring_name,
                created_by: r.creator_name.unwrap_or_default(),
            },
            created_at: r.created_at,
            created_by: r.created_by,
        })
    }
}

const COLUMNS: &str = "id, key_id, name, grantee, retiring_principal, operations, \
                       context_subset, context_equals, created_at, created_by";

/// A `SELECT` of grants (aliased `g`) with their principals' names, then `rest`.
fn select(rest: &str) -> String {
    let columns: Vec<String> = COLUMNS.split(", ").map(|c| format!("g.{c}")).collect();
    format!(
        "SELECT {}, pg.name AS grantee_name, pr.name AS retiring_name, pc.name AS creator_name \
         FROM grants g LEFT JOIN principals pg ON pg.id = g.grantee \
         LEFT JOIN principals pr ON pr.id = g.retiring_principal \
         LEFT JOIN principals pc ON pc.id = g.created_by {rest}",
        columns.join(", ")
    )
}

fn decode(rows: Vec<Row>) -> Result<Vec<Grant>> {
    rows.into_iter().map(Grant::try_from).collect()
}

pub async fn insert(conn: &mut Tx, g: &Grant) -> Result<()> {
    on!(conn, {
        let json = |m: &Option<BTreeMap<String, String>>| -> Result<Option<String>> {
            m.as_ref()
                .map(|m| serde_json::to_string(m).map_err(|_| Error::Internal))
                .transpose()
        };
        let operations = serde_json::to_string(&g.operations).map_err(|_| Error::Internal)?;
        let (subset, equals) = (json(&g.context_subset)?, json(&g.context_equals)?);
        crate::telemetry::spans::db("INSERT", "grants", async move {
            sqlx::query(&format!(
                "INSERT INTO grants ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(&g.id)
            .bind(&g.key_id)
            .bind(&g.name)
            .bind(&g.grantee)
            .bind(&g.retiring_principal)
            .bind(operations)
            .bind(subset)
            .bind(equals)
            .bind(&g.created_at)
            .bind(&g.created_by)
            .execute(conn)
            .await?;
            Ok(())
        })
        .await
    })
}

pub async fn get(pool: impl Into<Conn<'_>>, id: &str) -> Result<Option<Grant>> {
    on!(pool, {
        let row: Option<Row> = crate::telemetry::spans::db("SELECT", "grants", async move {
            Ok::<_, Error>(
                sqlx::query_as(&select("WHERE g.id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *pool)
                    .await?,
            )
        })
        .await?;
        row.map(Grant::try_from).transpose()
    })
}

/// Every grant of a key (what Cedar's `context.granted` is computed from).
pub async fn of_key(pool: impl Into<Conn<'_>>, key_id: &str) -> Result<Vec<Grant>> {
    on!(pool, {
        let rows: Vec<Row> = crate::telemetry::spans::db("SELECT", "grants", async move {
            Ok::<_, Error>(
                sqlx::query_as(&select("WHERE g.key_id = $1 ORDER BY g.id"))
                    .bind(key_id)
                    .fetch_all(&mut *pool)
                    .await?,
            )
        })
        .await?;
        decode(rows)
    })
}

/// Every grant of a key, read with the key held until the transaction ends, so that what is
/// decided from them (a name's grant made before, the number of grants) still holds when a
/// grant is then inserted: on PostgreSQL (READ COMMITTED) two creations would each read the
/// grants without the other's and both insert, so the key's row is locked first (`FOR NO KEY
/// UPDATE`: it excludes another such lock, not the key-share lock of a grant row naming the
/// key) and the second creation reads after the first commits; SQLite's writer transaction
/// already excludes every other writer. The key must still be in `state` (the state the
/// request was authorized for: a key destroyed meanwhile, whose grants were deleted with it,
/// gets none after). `None`: the key is gone or no longer in `state`.
pub async fn of_key_held(
    conn: &mut Tx,
    key_id: &str,
    state: KeyState,
) -> Result<Option<Vec<Grant>>> {
    let lock = match conn.dialect() {
        super::Dialect::Postgres => " FOR NO KEY UPDATE",
        super::Dialect::Sqlite => "",
    };
    let found = on!(conn, {
        crate::telemetry::spans::db("SELECT", "keys", async {
            let found: Option<i32> = sqlx::query_scalar(&format!(
                "SELECT 1 FROM keys WHERE id = $1 AND state = $2{lock}"
            ))
            .bind(key_id)
            .bind(state)
            .fetch_optional(&mut *conn)
            .await?;
            Ok::<_, Error>(found.is_some())
        })
        .await
    })?;
    if !found {
        return Ok(None);
    }
    of_key(conn, key_id).await.map(Some)
}

/// A page of the grants a principal may retire, after grant id `after`.
pub async fn retirable_by(
    pool: impl Into<Conn<'_>>,
    principal: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<Grant>> {
    on!(pool, {
        let rows: Vec<Row> = crate::telemetry::spans::db("SELECT", "grants", async move {
            Ok::<_, Error>(
                sqlx::query_as(&select(
                    "WHERE g.retiring_principal = $1 AND g.id > $2 ORDER BY g.id LIMIT $3",
                ))
                .bind(principal)
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *pool)
                .await?,
            )
        })
        .await?;
        decode(rows)
    })
}

/// Delete a grant; whether it existed.
pub async fn delete(conn: &mut Tx, id: &str) -> Result<bool> {
    on!(conn, {
        crate::telemetry::spans::db("DELETE", "grants", async move {
            let r = sqlx::query("DELETE FROM grants WHERE id = $1")
                .bind(id)
                .execute(conn)
                .await?;
            Ok(r.rows_affected() > 0)
        })
        .await
    })
}

/// Delete every grant of a destroyed key (AWS forgets a deleted key's grants; a retiring
/// principal would otherwise keep listing grants of a key that is gone).
pub async fn delete_for_key(conn: &mut Tx, key_id: &str) -> Result<()> {
    on!(conn, {
        crate::telemetry::spans::db("DELETE", "grants", async move {
            sqlx::query("DELETE FROM grants WHERE key_id = $1")
                .bind(key_id)
                .execute(conn)
                .await?;
            Ok(())
        })
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(subset: &[(&str, &str)], equals: Option<&[(&str, &str)]>) -> Grant {
        let map = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Grant {
            id: "g".into(),
            key_id: "k".into(),
            name: None,
            grantee: "p".into(),
            retiring_principal: None,
            names: GrantNames::default(),
            operations: vec!["Decrypt".into()],
            context_subset: (!subset.is_empty()).then(|| map(subset)),
            context_equals: equals.map(map),
            created_at: String::new(),
            created_by: String::new(),
        }
    }

    #[test]
    fn constraints_hold_as_aws_defines_them() {
        let ec = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let none = grant(&[], None);
        assert!(none.constraint_holds(&ec(&[])));
        let subset = grant(&[("a", "1")], None);
        assert!(subset.constraint_holds(&ec(&[("a", "1"), ("b", "2")])));
        assert!(!subset.constraint_holds(&ec(&[("a", "2")])));
        assert!(!subset.constraint_holds(&ec(&[])));
        let equals = grant(&[], Some(&[("a", "1")]));
        assert!(equals.constraint_holds(&ec(&[("a", "1")])));
        assert!(!equals.constraint_holds(&ec(&[("a", "1"), ("b", "2")])));
        // Keys in any case, values exactly.
        let subset = grant(&[("App", "billing")], None);
        assert!(subset.constraint_holds(&ec(&[("app", "billing"), ("b", "2")])));
        assert!(!subset.constraint_holds(&ec(&[("app", "Billing")])));
        let equals = grant(&[], Some(&[("App", "billing"), ("Env", "prod")]));
        assert!(equals.constraint_holds(&ec(&[("APP", "billing"), ("env", "prod")])));
        assert!(!equals.constraint_holds(&ec(&[("app", "billing")])));
        assert!(!equals.constraint_holds(&ec(&[("app", "billing"), ("env", "Prod")])));
        assert!(!equals.constraint_holds(&ec(&[("app", "billing"), ("x", "prod")])));
    }

    #[test]
    fn a_constraint_applies_only_to_operations_that_take_a_context() {
        let mut g = grant(&[("a", "1")], None);
        g.operations = ["Decrypt", "DescribeKey", "CreateGrant", "RetireGrant"]
            .map(String::from)
            .to_vec();
        let within: BTreeMap<String, String> = [("a".into(), "1".into())].into();
        assert_eq!(
            g.actions_for(&within).collect::<Vec<_>>(),
            ["Decrypt", "DescribeKey", "CreateGrant", "RetireGrant"]
        );
        assert_eq!(
            g.actions_for(&BTreeMap::new()).collect::<Vec<_>>(),
            ["DescribeKey", "CreateGrant", "RetireGrant"]
        );
    }

    #[test]
    fn a_grant_made_through_another_is_at_least_as_strict() {
        let map = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (a, ab, b) = (
            map(&[("a", "1")]),
            map(&[("a", "1"), ("b", "2")]),
            map(&[("b", "2")]),
        );
        let none = grant(&[], None);
        assert!(none.admits_all_of(None, None));
        assert!(none.admits_all_of(Some(&b), None));
        assert!(none.admits_all_of(None, Some(&b)));
        let subset = grant(&[("a", "1")], None);
        assert!(!subset.admits_all_of(None, None));
        assert!(subset.admits_all_of(Some(&a), None));
        assert!(subset.admits_all_of(Some(&ab), None));
        assert!(!subset.admits_all_of(Some(&b), None));
        assert!(subset.admits_all_of(None, Some(&ab)));
        assert!(!subset.admits_all_of(None, Some(&b)));
        let equals = grant(&[], Some(&[("a", "1")]));
        assert!(!equals.admits_all_of(None, None));
        assert!(!equals.admits_all_of(Some(&a), None));
        assert!(equals.admits_all_of(None, Some(&a)));
        assert!(!equals.admits_all_of(None, Some(&ab)));
    }
}
