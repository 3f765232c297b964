//! What a client browses before it queries: the catalog, schema and tables
//! (each with its Arrow schema) and what the server is (`GetSqlInfo`).

use std::sync::OnceLock;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, SqlInfo,
    SqlSupportedTransaction,
};

use super::session::{CATALOG, SCHEMA};
use crate::lake::TableKind;

pub const TABLE_TYPE: &str = "TABLE";

/// The answer to one browsing call: its schema (for the FlightInfo) and,
/// when asked to run, its rows.
pub trait Browse {
    fn schema(&self) -> SchemaRef;
    fn rows(self, tables: &[(TableKind, SchemaRef)]) -> Result<RecordBatch, FlightError>;
}

impl Browse for CommandGetCatalogs {
    fn schema(&self) -> SchemaRef {
        (*self).into_builder().schema()
    }

    fn rows(self, _: &[(TableKind, SchemaRef)]) -> Result<RecordBatch, FlightError> {
        let mut b = self.into_builder();
        b.append(CATALOG);
        b.build()
    }
}

impl Browse for CommandGetDbSchemas {
    fn schema(&self) -> SchemaRef {
        self.clone().into_builder().schema()
    }

    fn rows(self, _: &[(TableKind, SchemaRef)]) -> Result<RecordBatch, FlightError> {
        let mut b = self.into_builder();
        b.append(CATALOG, SCHEMA);
        b.build()
    }
}

impl Browse for CommandGetTableTypes {
    fn schema(&self) -> SchemaRef {
        (*self).into_builder().schema()
    }

    fn rows(self, _: &[(TableKind, SchemaRef)]) -> Result<RecordBatch, FlightError> {
        let mut b = self.into_builder();
        b.append(TABLE_TYPE);
        b.build()
    }
}

impl Browse for CommandGetTables {
    fn schema(&self) -> SchemaRef {
        self.clone().into_builder().schema()
    }

    fn rows(self, tables: &[(TableKind, SchemaRef)]) -> Result<RecordBatch, FlightError> {
        // The builder applies the request's catalog, schema, name pattern
        // and type filters.
        let mut b = self.into_builder();
        for (kind, schema) in tables {
            b.append(CATALOG, SCHEMA, kind.name(), TABLE_TYPE, schema)?;
        }
        b.build()
    }
}

impl Browse for CommandGetSqlInfo {
    fn schema(&self) -> SchemaRef {
        self.clone().into_builder(sql_info()).schema()
    }

    fn rows(self, _: &[(TableKind, SchemaRef)]) -> Result<RecordBatch, FlightError> {
        self.into_builder(sql_info()).build()
    }
}

/// What `GetSqlInfo` says of the server: a read-only SQL server without
/// transactions, substrait or cancellation.
pub fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "K2");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "58");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(SqlInfo::SqlAllTablesAreSelectable, true);
        b.append(SqlInfo::SqlTransactionsSupported, false);
        // Built from constants above: a failure here is a bug in this list.
        b.build().unwrap_or_else(|e| panic!("the Flight SQL server's SqlInfo: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, StringArray};

    #[test]
    fn tables_are_listed_with_their_schemas_and_filtered_by_pattern() {
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "symbol",
            arrow::datatypes::DataType::Utf8,
            false,
        )]));
        let tables = [(TableKind::Trades, schema.clone()), (TableKind::Quotes, schema)];
        let all = CommandGetTables { include_schema: true, ..Default::default() }.rows(&tables).unwrap();
        assert_eq!(all.num_rows(), 2);
        let only = CommandGetTables { table_name_filter_pattern: Some("tr%".into()), ..Default::default() }
            .rows(&tables)
            .unwrap();
        let names = only.column_by_name("table_name").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((names.len(), names.value(0)), (1, "trades"));
        let info = CommandGetSqlInfo { info: vec![SqlInfo::FlightSqlServerReadOnly as u32] }.rows(&[]).unwrap();
        assert_eq!(info.num_rows(), 1);
    }
}
