//! What a client browses before it queries: the catalog, schema and tables
//! (each with its Arrow schema), what the server is (`GetSqlInfo`) and the
//! SQL types it answers with (`GetXdbcTypeInfo`, JDBC's `getTypeInfo`).

use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, Nullable,
    Searchable, SqlInfo, SqlSupportedTransaction, XdbcDataType, XdbcDatetimeSubcode,
};

use super::session::{CATALOG, SCHEMA};

pub const TABLE_TYPE: &str = "TABLE";

const KEYWORDS: &[&str] = &["ASOF", "EXPLAIN", "QUALIFY", "UNNEST", "WINDOW"];
const NUMERIC: &[&str] = &[
    "abs", "acos", "asin", "atan", "atan2", "ceil", "cos", "exp", "floor", "ln", "log", "log10", "log2", "pi", "power",
    "random", "round", "signum", "sin", "sqrt", "tan", "trunc",
];
const STRING: &[&str] = &[
    "ascii",
    "btrim",
    "char_length",
    "chr",
    "concat",
    "concat_ws",
    "initcap",
    "left",
    "length",
    "lower",
    "ltrim",
    "md5",
    "octet_length",
    "replace",
    "reverse",
    "right",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "to_hex",
    "translate",
    "trim",
    "upper",
];
const DATETIME: &[&str] = &[
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "from_unixtime",
    "now",
    "to_timestamp",
    "to_timestamp_micros",
    "to_timestamp_millis",
    "to_timestamp_seconds",
];

/// The columns of `GetPrimaryKeys`' answer, as the protocol gives them.
fn primary_keys_schema() -> SchemaRef {
    let text = |name, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("catalog_name", true),
        text("db_schema_name", true),
        text("table_name", false),
        text("column_name", false),
        text("key_name", true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The columns of the foreign-key calls' answers (imported, exported,
/// cross reference).
fn foreign_keys_schema() -> SchemaRef {
    let text = |name, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// The tables have no primary or foreign keys: each key call answers with
/// no rows, in the protocol's columns (a tool's key and diagram views then
/// show none instead of an error).
macro_rules! no_keys {
    ($($command:ty => $schema:ident),*) => {$(
        impl Browse for $command {
            fn schema(&self) -> SchemaRef {
                $schema()
            }

            fn rows(self, _: &[(&'static str, SchemaRef)]) -> Result<RecordBatch, FlightError> {
                Ok(RecordBatch::new_empty($schema()))
            }
        }
    )*};
}

no_keys!(
    CommandGetPrimaryKeys => primary_keys_schema,
    CommandGetImportedKeys => foreign_keys_schema,
    CommandGetExportedKeys => foreign_keys_schema,
    CommandGetCrossReference => foreign_keys_schema
);

/// The answer to one browsing call: its schema (for the FlightInfo) and,
/// when asked to run, its rows.
pub trait Browse {
    fn schema(&self) -> SchemaRef;
    fn rows(self, tables: &[(&'static str, SchemaRef)]) -> Result<RecordBatch, FlightError>;
}

/// The SQL types of K2's columns and of what queries compute from them.
fn type_info() -> Result<XdbcTypeInfoData, FlightError> {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let text = |s: &str| Some(s.to_owned());
    let base = |name: &str, data_type: XdbcDataType, size: Option<i32>| XdbcTypeInfo {
        type_name: name.to_owned(),
        data_type,
        column_size: size,
        nullable: Nullable::NullabilityNullable,
        searchable: Searchable::Full,
        local_type_name: text(name),
        sql_data_type: data_type,
        ..Default::default()
    };
    let number = |name: &str, data_type: XdbcDataType, size: i32| XdbcTypeInfo {
        unsigned_attribute: Some(false),
        auto_increment: Some(false),
        num_prec_radix: Some(10),
        minimum_scale: Some(0),
        maximum_scale: Some(0),
        ..base(name, data_type, Some(size))
    };
    b.append(base("BOOLEAN", XdbcDataType::XdbcBit, Some(1)));
    b.append(number("INTEGER", XdbcDataType::XdbcInteger, 10));
    b.append(number("BIGINT", XdbcDataType::XdbcBigint, 19));
    b.append(XdbcTypeInfo { maximum_scale: None, ..number("DOUBLE", XdbcDataType::XdbcDouble, 15) });
    // Prices and quantities: exact, decimal(38, s) at most.
    b.append(XdbcTypeInfo {
        create_params: Some(vec!["precision".to_owned(), "scale".to_owned()]),
        maximum_scale: Some(38),
        ..number("DECIMAL", XdbcDataType::XdbcDecimal, 38)
    });
    b.append(XdbcTypeInfo {
        literal_prefix: text("'"),
        literal_suffix: text("'"),
        case_sensitive: true,
        ..base("VARCHAR", XdbcDataType::XdbcVarchar, Some(i32::MAX))
    });
    let datetime =
        |name: &str, data_type: XdbcDataType, size: i32, subcode: XdbcDatetimeSubcode, scale: i32| XdbcTypeInfo {
            literal_prefix: Some(format!("{name} '")),
            literal_suffix: text("'"),
            minimum_scale: Some(scale),
            maximum_scale: Some(scale),
            sql_data_type: XdbcDataType::XdbcDatetime,
            datetime_subcode: Some(subcode),
            ..base(name, data_type, Some(size))
        };
    // The protocol's XDBC_SUBCODE_DATE is an alias of the year code (1).
    b.append(datetime("DATE", XdbcDataType::XdbcDate, 10, XdbcDatetimeSubcode::XdbcSubcodeYear, 0));
    // Every stored time: microseconds, UTC.
    b.append(datetime(
        "TIMESTAMP",
        XdbcDataType::XdbcTimestamp,
        32,
        XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone,
        6,
    ));
    b.build()
}

impl Browse for CommandGetXdbcTypeInfo {
    fn schema(&self) -> SchemaRef {
        // The same whatever the rows; an empty table's schema if they
        // could not be built (the call then fails with the reason).
        type_info().map_or_else(|_| Arc::new(Schema::empty()), |t| t.schema())
    }

    fn rows(self, _: &[(&'static str, SchemaRef)]) -> Result<RecordBatch, FlightError> {
        type_info()?.record_batch(self.data_type)
    }
}

impl Browse for CommandGetCatalogs {
    fn schema(&self) -> SchemaRef {
        (*self).into_builder().schema()
    }

    fn rows(self, _: &[(&'static str, SchemaRef)]) -> Result<RecordBatch, FlightError> {
        let mut b = self.into_builder();
        b.append(CATALOG);
        b.build()
    }
}

impl Browse for CommandGetDbSchemas {
    fn schema(&self) -> SchemaRef {
        self.clone().into_builder().schema()
    }

    fn rows(self, _: &[(&'static str, SchemaRef)]) -> Result<RecordBatch, FlightError> {
        let mut b = self.into_builder();
        b.append(CATALOG, SCHEMA);
        b.build()
    }
}

impl Browse for CommandGetTableTypes {
    fn schema(&self) -> SchemaRef {
        (*self).into_builder().schema()
    }

    fn rows(self, _: &[(&'static str, SchemaRef)]) -> Result<RecordBatch, FlightError> {
        let mut b = self.into_builder();
        b.append(TABLE_TYPE);
        b.build()
    }
}

impl Browse for CommandGetTables {
    fn schema(&self) -> SchemaRef {
        self.clone().into_builder().schema()
    }

    fn rows(self, tables: &[(&'static str, SchemaRef)]) -> Result<RecordBatch, FlightError> {
        // The builder applies the request's catalog, schema, name pattern
        // and type filters.
        let mut b = self.into_builder();
        for (name, schema) in tables {
            b.append(CATALOG, SCHEMA, *name, TABLE_TYPE, schema)?;
        }
        b.build()
    }
}

impl Browse for CommandGetSqlInfo {
    fn schema(&self) -> SchemaRef {
        self.clone().into_builder(sql_info()).schema()
    }

    fn rows(self, _: &[(&'static str, SchemaRef)]) -> Result<RecordBatch, FlightError> {
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
        // JDBC's DatabaseMetaData reads these on connecting (DBeaver does):
        // a key left out is an error there, not a default.
        // Unquoted names are folded to lower case; quoted ones are kept.
        b.append(SqlInfo::SqlIdentifierCase, 2i32);
        b.append(SqlInfo::SqlQuotedIdentifierCase, 3i32);
        // Nulls sort last ascending, first descending: high.
        b.append(SqlInfo::SqlNullOrdering, 0i32);
        b.append(SqlInfo::SqlKeywords, KEYWORDS);
        b.append(SqlInfo::SqlNumericFunctions, NUMERIC);
        b.append(SqlInfo::SqlStringFunctions, STRING);
        b.append(SqlInfo::SqlSystemFunctions, &[] as &[&str]);
        b.append(SqlInfo::SqlDatetimeFunctions, DATETIME);
        b.append(SqlInfo::SqlSearchStringEscape, "\\");
        b.append(SqlInfo::SqlExtraNameCharacters, "");
        b.append(SqlInfo::SqlSupportsColumnAliasing, true);
        b.append(SqlInfo::SqlNullPlusNullIsNull, true);
        b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
        b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
        b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
        b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
        // GROUP BY: unrelated and beyond the SELECT list.
        b.append(SqlInfo::SqlSupportedGroupBy, 3i32);
        b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
        b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
        // Minimum SQL grammar, ANSI-92 entry level.
        b.append(SqlInfo::SqlSupportedGrammar, 1i32);
        b.append(SqlInfo::SqlAnsi92SupportedLevel, 1i32);
        b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
        // Full outer joins.
        b.append(SqlInfo::SqlOuterJoinsSupportLevel, 2i32);
        b.append(SqlInfo::SqlSchemaTerm, "schema");
        b.append(SqlInfo::SqlProcedureTerm, "procedure");
        b.append(SqlInfo::SqlCatalogTerm, "catalog");
        b.append(SqlInfo::SqlCatalogAtStart, true);
        b.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
        b.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
        b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
        b.append(SqlInfo::SqlSelectForUpdateSupported, false);
        b.append(SqlInfo::SqlStoredProceduresSupported, false);
        // Subqueries in comparisons, EXISTS, IN and quantified comparisons.
        b.append(SqlInfo::SqlSupportedSubqueries, 15i32);
        b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
        // UNION and UNION ALL.
        b.append(SqlInfo::SqlSupportedUnions, 3i32);
        // Zero: no limit, or none known.
        for limit in [
            SqlInfo::SqlMaxBinaryLiteralLength,
            SqlInfo::SqlMaxCharLiteralLength,
            SqlInfo::SqlMaxColumnNameLength,
            SqlInfo::SqlMaxColumnsInGroupBy,
            SqlInfo::SqlMaxColumnsInIndex,
            SqlInfo::SqlMaxColumnsInOrderBy,
            SqlInfo::SqlMaxColumnsInSelect,
            SqlInfo::SqlMaxColumnsInTable,
            SqlInfo::SqlMaxConnections,
            SqlInfo::SqlMaxCursorNameLength,
            SqlInfo::SqlMaxIndexLength,
            SqlInfo::SqlDbSchemaNameLength,
            SqlInfo::SqlMaxProcedureNameLength,
            SqlInfo::SqlMaxCatalogNameLength,
            SqlInfo::SqlMaxRowSize,
            SqlInfo::SqlMaxStatementLength,
            SqlInfo::SqlMaxStatements,
            SqlInfo::SqlMaxTableNameLength,
            SqlInfo::SqlMaxTablesInSelect,
            SqlInfo::SqlMaxUsernameLength,
        ] {
            b.append(limit, 0i64);
        }
        b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, true);
        b.append(SqlInfo::SqlDefaultTransactionIsolation, 0i32);
        b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0i32);
        b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
        b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
        // Forward-only result sets, read-only.
        b.append(SqlInfo::SqlSupportedResultSetTypes, 2i32);
        b.append(SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified, 0i32);
        b.append(SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly, 2i32);
        b.append(SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive, 0i32);
        b.append(SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive, 0i32);
        b.append(SqlInfo::SqlBatchUpdatesSupported, false);
        b.append(SqlInfo::SqlSavepointsSupported, false);
        b.append(SqlInfo::SqlNamedParametersSupported, false);
        b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
        b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
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
        let tables = [("trades", schema.clone()), ("quotes", schema)];
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
