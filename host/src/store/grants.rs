//! The `grants` table: a grantee principal may perform the listed operations (Cedar action
//! names) on a key, within an encryption-context constraint if the grant has one.

use std::collections::BTreeMap;

use super::{on, Conn, Tx};

use crate::error::{Error, Result};

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

impl Grant {
    /// Whether the grant's constraint holds for a request with encryption context `ec`.
    pub fn constraint_holds(&self, ec: &BTreeMap<String, String>) -> bool {
        let subset = self
            .context_subset
            .as_ref()
            .is_none_or(|want| want.iter().all(|(k, v)| ec.get(k) == Some(v)));
        let equals = self.context_equals.as_ref().is_none_or(|want| want == ec);
        subset && equals
    }
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
    }
}
