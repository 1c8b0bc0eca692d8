//! Many rows in one statement (the audit log's batches), atomic on its own.
//!
//! SQLite: `INSERT … VALUES (…), (…), …`, one placeholder a value. PostgreSQL:
//! `INSERT … SELECT * FROM UNNEST($1::bigint[], $2::text[], …)`, one array a column: the
//! statement is the same whatever the row count, so each connection prepares and plans it
//! once, where a `VALUES` list is a new statement for every row count (the group commit's
//! batches have dozens), and the rows travel as a few arrays instead of one value each.

use super::{Conn, Exec};
use crate::error::Result;

/// A value of one column of a row, bound by either driver.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Int(i64),
    Text(&'a str),
    MaybeText(Option<&'a str>),
}

/// A table and the columns [`insert`] fills, in the order of each row's values.
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [&'static str],
}

/// SQLite's statement: `INSERT` of `rows` rows with numbered placeholders, row by row.
pub fn values_sql(table: &Table, rows: usize) -> String {
    let width = table.columns.len();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        table.name,
        table.columns.join(", ")
    );
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for column in 1..=width {
            if column > 1 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", row * width + column));
        }
        sql.push(')');
    }
    sql
}

/// PostgreSQL's statement: the columns' arrays unnested, typed after `row`'s values.
fn unnest_sql<const N: usize>(table: &Table, row: &[Value<'_>; N]) -> String {
    let arrays: Vec<String> = row
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Int(_) => format!("${}::bigint[]", i + 1),
            Value::Text(_) | Value::MaybeText(_) => format!("${}::text[]", i + 1),
        })
        .collect();
    format!(
        "INSERT INTO {} ({}) SELECT * FROM UNNEST({})",
        table.name,
        table.columns.join(", "),
        arrays.join(", ")
    )
}

/// Insert `rows` into `table` with one statement (so all or none, also outside a
/// transaction). Each row has a value for each of the table's columns, of the same kind in
/// every row. On SQLite at most `32766 / N` rows (its limit on bound values).
pub async fn insert<const N: usize>(
    conn: impl Into<Conn<'_>>,
    table: &Table,
    rows: &[[Value<'_>; N]],
) -> Result<()> {
    debug_assert_eq!(table.columns.len(), N);
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let conn: Conn<'_> = conn.into();
    let mut guard = conn.acquire().await?;
    match guard.exec() {
        Exec::Sqlite(c) => {
            let sql = values_sql(table, rows.len());
            let mut insert = sqlx::query(&sql);
            for value in rows.iter().flatten() {
                insert = match *value {
                    Value::Int(v) => insert.bind(v),
                    Value::Text(v) => insert.bind(v),
                    Value::MaybeText(v) => insert.bind(v),
                };
            }
            insert.execute(c).await?;
        }
        Exec::Postgres(c) => {
            let sql = unnest_sql(table, first);
            let mut insert = sqlx::query(&sql);
            for (column, kind) in first.iter().enumerate() {
                insert = match kind {
                    Value::Int(_) => insert.bind(
                        rows.iter()
                            .map(|r| match r[column] {
                                Value::Int(v) => v,
                                _ => 0,
                            })
                            .collect::<Vec<i64>>(),
                    ),
                    Value::Text(_) | Value::MaybeText(_) => insert.bind(
                        rows.iter()
                            .map(|r| match r[column] {
                                Value::Text(v) => Some(v),
                                Value::MaybeText(v) => v,
                                Value::Int(_) => None,
                            })
                            .collect::<Vec<Option<&str>>>(),
                    ),
                };
            }
            insert.execute(c).await?;
        }
    }
    Ok(())
}
