//! One statement's DataFusion session: the tables it names, registered as
//! the hybrid view a pin selects; the check that it only reads; its
//! parameters bound.

use std::sync::Arc;

use datafusion::common::ParamValues;
use datafusion::config::Dialect;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast;
use thiserror::Error;

use crate::lake::TableKind;
use crate::lake::books::BookLog;
use crate::lake::books::tables::BookTable;
use crate::query::QueryError;
use crate::query::engine::QueryEngine;
use crate::query::params::Pin;

/// The catalog and schema every table is listed under.
pub const CATALOG: &str = "k2";
pub const SCHEMA: &str = "public";

#[derive(Debug, Error)]
pub enum SqlError {
    /// DDL, DML, `COPY`, `SET` and anything else that is not a query.
    #[error("K2's Flight SQL port is read-only: {0}")]
    NotReadOnly(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// A table a statement may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlTable {
    Market(TableKind),
    /// Only where books are stored.
    Book(BookTable),
}

impl SqlTable {
    pub fn name(self) -> &'static str {
        match self {
            SqlTable::Market(kind) => kind.name(),
            SqlTable::Book(table) => table.name(),
        }
    }

    /// Every table there is: the book tables with `books`.
    pub fn all(books: bool) -> impl Iterator<Item = SqlTable> {
        let market = TableKind::ALL.into_iter().map(SqlTable::Market);
        let book = BookTable::ALL.into_iter().map(SqlTable::Book).filter(move |_| books);
        market.chain(book)
    }

    /// The table `name` names, among [`Self::all`].
    pub fn named(name: &str, books: bool) -> Option<SqlTable> {
        Self::all(books).find(|t| t.name().eq_ignore_ascii_case(name))
    }
}

/// What a statement reads from: the market tables, and the book log where
/// books are stored.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub engine: &'a QueryEngine,
    pub books: Option<&'a BookLog>,
}

/// Plans `sql` over the tables `pin` selects, with `params` bound to its
/// placeholders (`$1`, `$2`, ...). Only a query is planned; the plan is
/// checked again before anything runs.
pub async fn plan(
    sources: Sources<'_>,
    runtime: Arc<RuntimeEnv>,
    sql: &str,
    pin: Pin,
    params: Option<&[ScalarValue]>,
) -> Result<DataFrame, SqlError> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(true)
        .with_information_schema(false)
        .with_target_partitions(2)
        .with_batch_size(8192);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    for name in UNBOUNDED {
        ctx.deregister_udf(name);
    }
    let mut statement =
        ctx.state().sql_to_statement(sql, &Dialect::Generic).map_err(|e| SqlError::Invalid(e.to_string()))?;
    only_a_query(&statement)?;
    number_placeholders(&mut statement);
    let references = ctx.state().resolve_table_references(&statement).map_err(|e| SqlError::Invalid(e.to_string()))?;
    let mut registered = Vec::new();
    for reference in references {
        let Some(table) = SqlTable::named(reference.table(), sources.books.is_some()) else { continue };
        if registered.contains(&table) {
            continue;
        }
        registered.push(table);
        let frame = match (table, sources.books) {
            (SqlTable::Market(kind), _) => sources.engine.table_frame(&ctx, kind, pin).await?,
            (SqlTable::Book(book), Some(log)) => sources.engine.book_frame(&ctx, log, book, pin).await?,
            (SqlTable::Book(_), None) => continue,
        };
        ctx.register_table(table.name(), frame.into_view()).map_err(|e| SqlError::Invalid(e.to_string()))?;
    }
    let state = ctx.state();
    let plan = state.statement_to_plan(statement).await.map_err(|e| SqlError::Invalid(e.to_string()))?;
    let plan = super::decimal_mul::exact_products(plan).map_err(|e| SqlError::Invalid(e.to_string()))?;
    // DataFusion's own check: no DDL, DML (COPY included) or statements.
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| SqlError::NotReadOnly(e.to_string()))?;
    let frame = DataFrame::new(state, plan);
    match params {
        Some(values) => frame
            .with_param_values(ParamValues::from(values.to_vec()))
            .map_err(|e| SqlError::Invalid(format!("parameters: {e}"))),
        None => Ok(frame),
    }
}

/// Scalar functions whose one call can build a value of any size (the
/// memory pool does not see it): a statement could take the process's
/// memory in one row. The table functions `generate_series` and `range`
/// stay: they stream in batches, under the row cap and the deadline.
const UNBOUNDED: [&str; 9] = [
    "range",
    "generate_series",
    "repeat",
    "lpad",
    "rpad",
    "array_repeat",
    "list_repeat",
    "array_resize",
    "list_resize",
];

/// JDBC's `?` placeholders as `$1`, `$2`, ... in the order they are
/// written (DataFusion names every `?` alike, so they could not be bound).
fn number_placeholders(statement: &mut Statement) {
    let Statement::Statement(s) = statement else { return };
    let mut n = 0;
    let _ = ast::visit_expressions_mut(&mut **s, |expr| {
        if let ast::Expr::Value(v) = expr
            && let ast::Value::Placeholder(p) = &mut v.value
            && p == "?"
        {
            n += 1;
            *p = format!("${n}");
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// Refuses every statement but a query (or `EXPLAIN [ANALYZE]` of one),
/// before any table is touched.
fn only_a_query(statement: &Statement) -> Result<(), SqlError> {
    match statement {
        Statement::Statement(s) if matches!(**s, ast::Statement::Query(_)) => Ok(()),
        Statement::Explain(explain) => only_a_query(&explain.statement),
        Statement::Statement(s) => Err(SqlError::NotReadOnly(format!("only SELECT is served, not {}", verb(s)))),
        Statement::CopyTo(_) => Err(SqlError::NotReadOnly("only SELECT is served, not COPY".into())),
        Statement::CreateExternalTable(_) => {
            Err(SqlError::NotReadOnly("only SELECT is served, not CREATE EXTERNAL TABLE".into()))
        }
        _ => Err(SqlError::NotReadOnly("only SELECT is served".into())),
    }
}

/// The statement's first words, for the refusal (`INSERT INTO`, `DROP
/// TABLE`), without its arguments.
fn verb(statement: &ast::Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic())).collect();
    if words.is_empty() { "that statement".into() } else { words.join(" ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> Statement {
        SessionContext::new().state().sql_to_statement(sql, &Dialect::Generic).unwrap()
    }

    #[test]
    fn question_marks_are_numbered_in_order() {
        let mut s = parsed("SELECT * FROM trades WHERE symbol = ? AND price > ? LIMIT ?");
        number_placeholders(&mut s);
        let text = s.to_string();
        assert!(text.contains("symbol = $1 AND price > $2 LIMIT $3"), "{text}");
    }

    #[test]
    fn only_queries_pass_the_first_check() {
        for sql in [
            "SELECT 1",
            "WITH t AS (SELECT 1) SELECT * FROM t",
            "SELECT * FROM trades ORDER BY 1 LIMIT 3",
            "EXPLAIN SELECT * FROM trades",
            "EXPLAIN ANALYZE SELECT count(*) FROM trades",
        ] {
            assert!(only_a_query(&parsed(sql)).is_ok(), "{sql}");
        }
        for (sql, said) in [
            ("INSERT INTO trades VALUES (1)", "INSERT INTO"),
            ("DROP TABLE trades", "DROP TABLE"),
            ("COPY trades TO '/tmp/x.parquet'", "COPY"),
            ("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc'", "CREATE EXTERNAL TABLE"),
            ("CREATE TABLE x AS SELECT 1", "CREATE TABLE"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("EXPLAIN INSERT INTO trades VALUES (1)", "INSERT INTO"),
            ("EXPLAIN ANALYZE COPY trades TO '/tmp/x.parquet'", "COPY"),
        ] {
            let e = only_a_query(&parsed(sql)).unwrap_err();
            assert!(matches!(e, SqlError::NotReadOnly(_)), "{sql}: {e}");
            assert!(e.to_string().contains(said), "{sql}: {e}");
        }
    }
}
