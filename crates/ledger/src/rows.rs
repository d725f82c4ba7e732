//! Many rows of values as one table of a statement, on either backend.
//!
//! A batch (a month-end of renewals, a page of events) writes many rows of
//! the same shape. One statement for all of them, instead of one per row,
//! saves a round trip per row, and inside a transaction that holds a lock
//! (a receipt numbering row, a balance slot) that is what decides how long
//! the lock is held. [`Rows`] is that table: the statement names it in a
//! `WITH` clause ([`Rows::with_clause`]) and reads it like any other.
//!
//! On PostgreSQL each column goes as one array parameter, unnested, so the
//! statement's text is the same whatever the number of rows. SQLite has no
//! arrays: there the rows are a `VALUES` list of scalar parameters. A
//! statement's own scalar parameters come first (`$1`…`$k`); the table's
//! follow.
//!
//! A batch statement is planned for each batch (an unnamed statement, not
//! a prepared one). A pooled connection would otherwise settle, after five
//! runs, on a generic plan made for the tables as they were then: made on a
//! young database, a lookup of the batch's ids stays a scan of the whole
//! table long after the table has grown. Planning costs little beside the
//! batch it plans. The other statements that take a batch as one array
//! (`id = ANY($1)`) are planned the same way, and say so.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, FromRow};

use crate::Timestamp;
use crate::db::{Backend, Db, Tx, TxConn};

/// One column's values, one per row.
#[derive(Clone, Debug)]
enum Column {
    Int(Vec<i64>),
    OptInt(Vec<Option<i64>>),
    Text(Vec<String>),
    OptText(Vec<Option<String>>),
    Time(Vec<Timestamp>),
    OptTime(Vec<Option<Timestamp>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Int(v) => v.len(),
            Column::OptInt(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::OptText(v) => v.len(),
            Column::Time(v) => v.len(),
            Column::OptTime(v) => v.len(),
        }
    }

    fn pg_type(&self) -> &'static str {
        match self {
            Column::Int(_) | Column::OptInt(_) => "bigint[]",
            Column::Text(_) | Column::OptText(_) => "text[]",
            Column::Time(_) | Column::OptTime(_) => "timestamptz[]",
        }
    }
}

/// A statement's own parameter, bound before the table's.
#[derive(Clone, Debug)]
pub enum Scalar {
    Int(i64),
    Text(String),
    OptText(Option<String>),
    Time(Timestamp),
}

impl From<i64> for Scalar {
    fn from(v: i64) -> Scalar {
        Scalar::Int(v)
    }
}

impl From<&str> for Scalar {
    fn from(v: &str) -> Scalar {
        Scalar::Text(v.to_owned())
    }
}

impl From<Timestamp> for Scalar {
    fn from(v: Timestamp) -> Scalar {
        Scalar::Time(v)
    }
}

/// A table of values with named columns, built column by column; every
/// column must have one value per row. Besides its columns the table has
/// `n`, each row's position from 1.
#[derive(Clone, Debug)]
pub struct Rows {
    len: usize,
    columns: Vec<(&'static str, Column)>,
}

impl Rows {
    /// A table of `len` rows, no columns yet.
    pub fn new(len: usize) -> Rows {
        Rows { len, columns: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn column(mut self, name: &'static str, column: Column) -> Rows {
        assert_eq!(column.len(), self.len, "column {name} has a value per row");
        self.columns.push((name, column));
        self
    }

    pub fn int(self, name: &'static str, values: impl IntoIterator<Item = i64>) -> Rows {
        self.column(name, Column::Int(values.into_iter().collect()))
    }

    pub fn opt_int(self, name: &'static str, values: impl IntoIterator<Item = Option<i64>>) -> Rows {
        self.column(name, Column::OptInt(values.into_iter().collect()))
    }

    pub fn text<S: Into<String>>(self, name: &'static str, values: impl IntoIterator<Item = S>) -> Rows {
        self.column(name, Column::Text(values.into_iter().map(Into::into).collect()))
    }

    pub fn opt_text<S: Into<String>>(self, name: &'static str, values: impl IntoIterator<Item = Option<S>>) -> Rows {
        self.column(name, Column::OptText(values.into_iter().map(|v| v.map(Into::into)).collect()))
    }

    pub fn time(self, name: &'static str, values: impl IntoIterator<Item = Timestamp>) -> Rows {
        self.column(name, Column::Time(values.into_iter().collect()))
    }

    pub fn opt_time(self, name: &'static str, values: impl IntoIterator<Item = Option<Timestamp>>) -> Rows {
        self.column(name, Column::OptTime(values.into_iter().collect()))
    }

    /// `WITH {table}(columns…, n) AS (…)`, the table's parameters numbered
    /// after the statement's `scalars` own. A statement may go on with
    /// `, other AS (…)` before its body.
    pub fn with_clause(&self, table: &str, backend: Backend, scalars: usize) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).chain(["n"]).collect();
        let source = match backend {
            Backend::Postgres => {
                let arrays: Vec<String> = self
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, column))| format!("${}::{}", scalars + i + 1, column.pg_type()))
                    .collect();
                format!("SELECT * FROM UNNEST({}) WITH ORDINALITY", arrays.join(", "))
            }
            Backend::Sqlite => {
                let width = self.columns.len();
                let rows: Vec<String> = (0..self.len)
                    .map(|row| {
                        let params = (0..width).map(|col| format!("${}, ", scalars + row * width + col + 1));
                        format!("({}{})", params.collect::<String>(), row + 1)
                    })
                    .collect();
                format!("VALUES {}", rows.join(", "))
            }
        };
        format!("WITH {table}({}) AS ({source})", names.join(", "))
    }

    fn pg_arguments(&self, scalars: &[Scalar]) -> Result<PgArguments, sqlx::Error> {
        let mut args = PgArguments::default();
        let mut add = || -> Result<(), sqlx::error::BoxDynError> {
            for scalar in scalars {
                match scalar {
                    Scalar::Int(v) => args.add(*v)?,
                    Scalar::Text(v) => args.add(v.as_str())?,
                    Scalar::OptText(v) => args.add(v.as_deref())?,
                    Scalar::Time(v) => args.add(*v)?,
                }
            }
            for (_, column) in &self.columns {
                match column {
                    Column::Int(v) => args.add(v.as_slice())?,
                    Column::OptInt(v) => args.add(v.as_slice())?,
                    Column::Text(v) => args.add(v.as_slice())?,
                    Column::OptText(v) => args.add(v.as_slice())?,
                    Column::Time(v) => args.add(v.as_slice())?,
                    Column::OptTime(v) => args.add(v.as_slice())?,
                }
            }
            Ok(())
        };
        add().map_err(sqlx::Error::Encode)?;
        Ok(args)
    }

    fn sqlite_arguments(&self, scalars: &[Scalar]) -> Result<SqliteArguments, sqlx::Error> {
        let mut args = SqliteArguments::default();
        let mut add = || -> Result<(), sqlx::error::BoxDynError> {
            for scalar in scalars {
                match scalar {
                    Scalar::Int(v) => args.add(*v)?,
                    Scalar::Text(v) => args.add(v.clone())?,
                    Scalar::OptText(v) => args.add(v.clone())?,
                    Scalar::Time(v) => args.add(*v)?,
                }
            }
            for row in 0..self.len {
                for (_, column) in &self.columns {
                    match column {
                        Column::Int(v) => args.add(v[row])?,
                        Column::OptInt(v) => args.add(v[row])?,
                        Column::Text(v) => args.add(v[row].clone())?,
                        Column::OptText(v) => args.add(v[row].clone())?,
                        Column::Time(v) => args.add(v[row])?,
                        Column::OptTime(v) => args.add(v[row])?,
                    }
                }
            }
            Ok(())
        };
        add().map_err(sqlx::Error::Encode)?;
        Ok(args)
    }

    /// Runs `sql` (which names this table through [`Rows::with_clause`])
    /// in `tx`; the number of rows it changed.
    pub async fn execute(&self, tx: &mut Tx, sql: &str, scalars: &[Scalar]) -> Result<u64, sqlx::Error> {
        let sql = AssertSqlSafe(sql.to_owned());
        Ok(match &mut tx.conn {
            TxConn::Postgres(c) => sqlx::query_with(sql, self.pg_arguments(scalars)?)
                .persistent(false)
                .execute(&mut **c)
                .await?
                .rows_affected(),
            TxConn::Sqlite(c) => {
                sqlx::query_with(sql, self.sqlite_arguments(scalars)?).execute(&mut **c).await?.rows_affected()
            }
        })
    }

    /// Runs a query outside any transaction (on SQLite, on a reader) and
    /// returns its rows.
    pub async fn read_all<O>(&self, db: &Db, sql: &str, scalars: &[Scalar]) -> Result<Vec<O>, sqlx::Error>
    where
        O: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
    {
        let sql = AssertSqlSafe(sql.to_owned());
        Ok(match db {
            Db::Postgres(pool) => {
                sqlx::query_as_with(sql, self.pg_arguments(scalars)?).persistent(false).fetch_all(pool).await?
            }
            Db::Sqlite { read, .. } => {
                sqlx::query_as_with(sql, self.sqlite_arguments(scalars)?).fetch_all(read).await?
            }
        })
    }

    /// Runs `sql` in `tx` and returns the rows it returns.
    pub async fn fetch_all<O>(&self, tx: &mut Tx, sql: &str, scalars: &[Scalar]) -> Result<Vec<O>, sqlx::Error>
    where
        O: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
    {
        let sql = AssertSqlSafe(sql.to_owned());
        Ok(match &mut tx.conn {
            TxConn::Postgres(c) => {
                sqlx::query_as_with(sql, self.pg_arguments(scalars)?).persistent(false).fetch_all(&mut **c).await?
            }
            TxConn::Sqlite(c) => sqlx::query_as_with(sql, self.sqlite_arguments(scalars)?).fetch_all(&mut **c).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_rows_are_a_values_list_after_the_scalars() {
        let rows = Rows::new(2).int("id", [7, 8]).text("name", ["a", "b"]);
        assert_eq!(
            rows.with_clause("v", Backend::Sqlite, 1),
            "WITH v(id, name, n) AS (VALUES ($2, $3, 1), ($4, $5, 2))"
        );
    }

    #[test]
    fn postgres_rows_are_one_array_per_column_whatever_their_number() {
        let rows = Rows::new(3).int("id", [1, 2, 3]).opt_text("name", [Some("a"), None, Some("c")]);
        let clause = "WITH v(id, name, n) AS (SELECT * FROM UNNEST($3::bigint[], $4::text[]) WITH ORDINALITY)";
        assert_eq!(rows.with_clause("v", Backend::Postgres, 2), clause);
        assert_eq!(
            Rows::new(1).int("id", [1]).opt_text("name", [None::<String>]).with_clause("v", Backend::Postgres, 2),
            clause
        );
    }

    #[test]
    #[should_panic(expected = "column id has a value per row")]
    fn a_column_of_the_wrong_length_is_refused() {
        let _ = Rows::new(2).int("id", [1]);
    }
}
