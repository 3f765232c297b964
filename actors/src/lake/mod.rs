//! The lake: Apache Iceberg tables `market.trades` and `market.quotes` under an
//! SQL catalog on SQLite with the warehouse on local disk (the embedded
//! default) or in an S3-compatible store, or under a REST catalog; any engine
//! can open them (pyiceberg, Spark, Trino, DuckDB).
//!
//! - [`catalog`]: which catalog and which storage `[storage]` asks for.
//! - [`schema`]: table schemas derived from the v2 Avro definition.
//! - [`batch`]: v2 events → Arrow batches.
//! - [`summary`]: what a snapshot covers (flush generation, source marks);
//!   [`summary_file`]: the larger of those keys, in a file the summary names.
//! - [`writer`]: Parquet data files and `fast_append` commits;
//!   [`writing`]: the files written and not committed yet.
//! - [`tail`]: one table's rows accepted but not yet committed, queryable;
//!   [`tails`]: both tables' together, as the sinks, the consumer, the
//!   flusher and the queries share them.
//! - [`flusher`]: the actor that commits the tails.
//! - [`claims`]: Kafka mode's partitions this process may commit.
//! - [`pinned`]: commits that fail rather than land on a newer table.
//! - [`maintenance`]: compaction, snapshot expiry, orphan files, retention;
//!   [`pins`]: the snapshots queries read, which expiry keeps.
//! - [`pressure`]: injected commit delays and failures (drills).

pub mod batch;
pub mod books;
pub mod catalog;
pub mod claims;
pub mod flusher;
pub mod maintenance;
pub mod pinned;
pub mod pins;
pub mod pressure;
pub mod schema;
pub mod summary;
pub mod summary_file;
pub mod tail;
pub mod tails;
pub mod writer;
pub mod writing;

pub use tails::Tails;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iceberg::spec::Schema;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use thiserror::Error;

use crate::runtime::config::StorageConfig;
use crate::runtime::errors::{Retry, Retryable, io_retry, text_retry};

#[derive(Debug, Error)]
pub enum LakeError {
    #[error("table schema: {0}")]
    Schema(String),
    #[error("data directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("opening the tables in {what}: {source}")]
    Open { what: String, source: Box<iceberg::Error> },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("data directory {0} is in use by another K2 process (one writer per directory)")]
    InUse(PathBuf),
    #[error(
        "fenced: partition {partition} of {topic} is at offset {found:?} in the table, not {expected:?} where this flush started; another flusher owns it now"
    )]
    Fenced { topic: String, partition: i32, expected: Option<i64>, found: Option<i64> },
    #[error("{0}")]
    Injected(String),
    #[error("the Kafka partitions of this flush were revoked before it committed")]
    Revoked,
    #[error("snapshot summary of {table}: {reason}")]
    Summary { table: &'static str, reason: String },
    #[error("{what} task failed: {reason}")]
    Task { what: &'static str, reason: String },
}

impl Retryable for LakeError {
    fn retry(&self) -> Retry {
        match self {
            LakeError::Dir { source, .. } => io_retry(source.kind()),
            LakeError::Iceberg(e) => iceberg_retry(e),
            LakeError::Open { source, .. } => iceberg_retry(source),
            LakeError::Injected(_) | LakeError::Task { .. } => Retry::Transient,
            LakeError::Schema(_)
            | LakeError::Config(_)
            | LakeError::Arrow(_)
            | LakeError::InUse(_)
            | LakeError::Fenced { .. }
            | LakeError::Revoked
            | LakeError::Summary { .. } => Retry::Permanent,
        }
    }
}

/// iceberg-rust says little by kind: storage failures (a refused write, a
/// missing bucket) arrive as `Unexpected` with the store's text.
fn iceberg_retry(e: &iceberg::Error) -> Retry {
    match e.kind() {
        iceberg::ErrorKind::CatalogCommitConflicts => Retry::Transient,
        iceberg::ErrorKind::DataInvalid | iceberg::ErrorKind::FeatureUnsupported => Retry::Permanent,
        _ => {
            // The source chain holds the store's own words.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text_retry(&text)
        }
    }
}

/// The two tables K2 writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableKind {
    Trades,
    Quotes,
}

impl TableKind {
    pub const ALL: [TableKind; 2] = [TableKind::Trades, TableKind::Quotes];

    pub fn name(self) -> &'static str {
        match self {
            TableKind::Trades => "trades",
            TableKind::Quotes => "quotes",
        }
    }

    fn avsc(self) -> &'static str {
        match self {
            TableKind::Trades => k2_core::schema::TRADE_V2_AVSC,
            TableKind::Quotes => k2_core::schema::QUOTE_V2_AVSC,
        }
    }

    /// The Iceberg schema this table is created with.
    pub fn schema(self) -> Result<Schema, LakeError> {
        schema::iceberg_schema(self.avsc())
    }
}

/// How a process shares the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Embedded mode: the only writer. Two ingesting processes would each
    /// dedup alone and land the same trades twice.
    Exclusive,
    /// Kafka mode: rows come from the topics, and several flushers in one
    /// consumer group may share the tables, each committing the partitions
    /// it owns.
    Shared,
    /// A query node: commits no rows, so it takes no lock and may sit
    /// beside any writer (maintenance commits, which it may run, are
    /// retried on conflict like every commit).
    Reader,
}

/// Iceberg table property of iceberg-rust's own commit retries: K2 retries
/// itself, recomputing what the snapshot covers against the newer table.
const COMMIT_RETRIES: &str = "commit.retry.num-retries";

/// The catalog and where it lives.
#[derive(Clone)]
pub struct Lake {
    catalog: Arc<dyn Catalog>,
    namespace: NamespaceIdent,
    dir: PathBuf,
    /// Where the tables are, for people.
    describe: Arc<str>,
    catalog_name: String,
    /// How the catalog was opened: maintenance commits snapshots
    /// iceberg-rust cannot make yet straight to it.
    plan: Arc<catalog::Plan>,
    /// This process's writer id in snapshot summaries.
    writer: Arc<str>,
    /// Held while the lake is open (exclusively in embedded mode).
    _lock: Arc<std::fs::File>,
}

impl Lake {
    /// Opens (creating on first use) the catalog, the namespace and both
    /// tables. Must run on the long-lived multi-threaded runtime: the catalog
    /// and its tables keep a handle to it.
    pub async fn open(config: &StorageConfig) -> Result<Self, LakeError> {
        Self::open_with(config, Access::Exclusive).await
    }

    /// As [`Lake::open`]; `access` says whether other K2 writers may share
    /// the directory. Readers (other engines) need no lock. The lock is on
    /// the local data directory: it keeps two K2 processes of one host off
    /// one SQL catalog, but cannot see a K2 on another host sharing a REST
    /// catalog or an S3 warehouse.
    pub async fn open_with(config: &StorageConfig, access: Access) -> Result<Self, LakeError> {
        let dir = absolute_dir(&config.data_dir)?;
        let lock_path = dir.join("k2.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| LakeError::Dir { path: lock_path.clone(), source })?;
        let locked = match access {
            Access::Exclusive => lock.try_lock(),
            Access::Shared => lock.try_lock_shared(),
            Access::Reader => Ok(()),
        };
        if locked.is_err() {
            return Err(LakeError::InUse(dir));
        }
        let plan = catalog::plan(config, &dir)?;
        let catalog = catalog::open(&plan, &config.catalog_name).await?;
        let namespace = NamespaceIdent::new(config.namespace.clone());
        // A REST catalog is first reached here: say which one failed.
        let open = |source| LakeError::Open { what: plan.describe.clone(), source: Box::new(source) };
        if !catalog.namespace_exists(&namespace).await.map_err(open)? {
            catalog.create_namespace(&namespace, HashMap::new()).await.map_err(open)?;
        }
        let writer = uuid::Uuid::new_v4().simple().to_string().into();
        let lake = Self {
            catalog,
            namespace,
            dir,
            describe: plan.describe.clone().into(),
            catalog_name: config.catalog_name.clone(),
            plan: Arc::new(plan),
            writer,
            _lock: Arc::new(lock),
        };
        for kind in TableKind::ALL {
            let table = lake.table(kind).await?;
            // Tables made by an earlier K2 lack the property.
            if table.metadata().properties().get(COMMIT_RETRIES).is_none_or(|n| n != "0") {
                let tx = Transaction::new(&table);
                let tx = tx.update_table_properties().set(COMMIT_RETRIES.to_owned(), "0".to_owned()).apply(tx)?;
                tx.commit(lake.catalog.as_ref()).await?;
            }
        }
        Ok(lake)
    }

    /// Loads a table, creating it when missing.
    pub async fn table(&self, kind: TableKind) -> Result<Table, LakeError> {
        let ident = self.ident(kind);
        if self.catalog.table_exists(&ident).await? {
            return Ok(self.catalog.load_table(&ident).await?);
        }
        let schema = kind.schema()?;
        let creation = TableCreation::builder()
            .name(kind.name().to_owned())
            .partition_spec(schema::partition_spec(&schema)?)
            .sort_order(schema::sort_order(&schema)?)
            .schema(schema)
            .properties(HashMap::from([
                ("write.parquet.compression-codec".to_owned(), "zstd".to_owned()),
                ("k2.schema".to_owned(), format!("v2 {}", kind.name())),
                (COMMIT_RETRIES.to_owned(), "0".to_owned()),
            ]))
            .build();
        match self.catalog.create_table(&self.namespace, creation).await {
            Ok(table) => Ok(table),
            // Another K2 sharing the directory created it meanwhile.
            Err(e) if self.catalog.table_exists(&ident).await.unwrap_or(false) => {
                tracing::debug!(error = %e, "table created by another process");
                Ok(self.catalog.load_table(&ident).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn ident(&self, kind: TableKind) -> TableIdent {
        TableIdent::new(self.namespace.clone(), kind.name().to_owned())
    }

    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// The data directory (absolute): K2's own files (`k2.lock`, the
    /// spill, the schema registry in `catalog.db`) and, by default, the SQL
    /// catalog and `warehouse/`. Table files are not necessarily here: they
    /// are reached through the catalog's FileIO only.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the tables are, for people: the data directory by default,
    /// else the warehouse and the catalog.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// This process's writer id, recorded in every snapshot it commits.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    pub fn catalog_name(&self) -> &str {
        &self.catalog_name
    }

    pub fn plan(&self) -> &catalog::Plan {
        &self.plan
    }
}

fn absolute_dir(dir: &Path) -> Result<PathBuf, LakeError> {
    std::fs::create_dir_all(dir).map_err(|source| LakeError::Dir { path: dir.to_owned(), source })?;
    dir.canonicalize().map_err(|source| LakeError::Dir { path: dir.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The errors the fault tests and a missing bucket produce, as they
    /// arrive from iceberg-rust.
    #[test]
    fn storage_errors_no_retry_can_fix_are_permanent_and_a_conflict_transient() {
        // Local storage keeps only the I/O error's text (here: a file where
        // the table's data directory should be).
        let local = iceberg::Error::new(
            iceberg::ErrorKind::Unexpected,
            "Failed to create directory /data/warehouse/market/trades/data/timestamp_day=2024-08-04: Not a directory (os error 20)",
        );
        assert_eq!(LakeError::Iceberg(local).retry(), Retry::Permanent);
        // S3 (moto's answer for a bucket that does not exist): the store's
        // words are in the source.
        let s3 = iceberg::Error::new(iceberg::ErrorKind::Unexpected, "Failure in doing io operation").with_source(
            std::io::Error::other(
                "ConfigInvalid (persistent) at write => S3Error { code: \"NoSuchBucket\", message: \"The specified bucket does not exist\" }",
            ),
        );
        assert_eq!(LakeError::Iceberg(s3).retry(), Retry::Permanent);
        let refused = iceberg::Error::new(iceberg::ErrorKind::Unexpected, "Failure in doing io operation").with_source(
            std::io::Error::other("error sending request: tcp connect: Connection refused (os error 111)"),
        );
        assert_eq!(LakeError::Iceberg(refused).retry(), Retry::Transient);
        let conflict = iceberg::Error::new(iceberg::ErrorKind::CatalogCommitConflicts, "another writer committed");
        assert_eq!(LakeError::Iceberg(conflict).retry(), Retry::Transient);
    }
}
