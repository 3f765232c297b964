//! The snapshots iceberg-rust 0.10 cannot make yet: a `replace` (compaction:
//! the same rows in other files) and a `delete` (retention: whole files
//! dropped). Its public transactions are only `fast_append` and
//! `expire_snapshots`, and a `TableCommit` cannot be built outside it, so
//! this module writes the manifests and the manifest list itself (with
//! iceberg's public `ManifestWriter` and `ManifestListWriter`), builds the
//! updates and requirements a `Transaction` would, and commits them the way
//! each catalog does: the SQL catalog by writing the next metadata file and
//! swapping `metadata_location` in its `iceberg_tables` row only if it is
//! still the one the change was computed on; a REST catalog by its
//! `POST .../tables/{table}` commit with the same requirements.
//!
//! When iceberg-rust gains a rewrite-files and a delete-files transaction,
//! this whole file goes: [`commit_change`]'s callers build that transaction
//! instead, and [`super::live`] stays for planning.

use std::collections::{HashMap, HashSet};

use iceberg::spec::{
    DataFile, FormatVersion, MAIN_BRANCH, ManifestFile, ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot,
    SnapshotReference, SnapshotRetention, SnapshotSummaryCollector, Summary,
};
use iceberg::table::Table;
use iceberg::{MetadataLocation, TableIdent, TableRequirement, TableUpdate};

use super::live::{self, Contents};
use super::tables::Maintained;
use crate::lake::books::COMPLETE_UNTIL;
use crate::lake::summary::{GENERATION, KAFKA_OFFSETS, OPEN_GAPS, SOURCES, WRITER};
use crate::lake::summary_file::STATE;
use crate::lake::{Lake, LakeError};
use crate::runtime::config::CatalogKind;

/// K2's keys a maintenance snapshot carries over from the newest snapshot K2
/// wrote, so that a flusher or consumer starting after it continues exactly
/// as before (the shed counts are not carried: they count once, where they
/// happened).
const CARRIED: [&str; 7] = [GENERATION, SOURCES, KAFKA_OFFSETS, WRITER, OPEN_GAPS, STATE, COMPLETE_UNTIL];

/// Snapshot summary key naming the maintenance step that wrote a snapshot.
pub const MAINTENANCE: &str = "k2.maintenance";

/// Commits lost to another writer before a change gives up for this round.
const MAX_CONFLICTS: u32 = 20;

/// Files to take out of a table and files to put in, as one snapshot.
#[derive(Debug, Clone)]
pub struct Change {
    pub operation: Operation,
    /// Paths of data files live when the change was planned.
    pub remove: HashSet<String>,
    pub add: Vec<DataFile>,
    /// What wrote it (`compaction`, `retention`).
    pub step: &'static str,
}

/// How a change ended.
#[derive(Debug)]
pub enum Outcome {
    Committed {
        snapshot_id: i64,
        conflicts: u32,
    },
    /// A file it removes is no longer live (another compaction or a
    /// retention got there first): nothing was committed.
    Stale {
        missing: usize,
    },
}

/// Commits `change` on the newest state of the table: a commit another
/// writer wins is retried at once on the state it left (appends never touch
/// the files a change removes, so it still applies). A retry is cheap, so
/// that a change can win against writers that commit every few hundred
/// milliseconds: it reads only the manifests the winner added and reuses
/// its own merged manifest, whose sources an append leaves alone.
pub async fn commit_change(
    lake: &Lake,
    kind: Maintained,
    change: &Change,
    lock: Option<&tokio::sync::Mutex<()>>,
    cache: &mut live::ManifestCache,
) -> Result<Outcome, LakeError> {
    let ident = kind.ident(lake);
    let mut conflicts = 0;
    let mut merged: Option<Merged> = None;
    loop {
        // This process's flushes wait while the snapshot is staged and
        // committed; other processes' may still win (retried).
        let _held = match lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let table = lake.catalog().load_table(&ident).await?;
        let Some(current) = table.metadata().current_snapshot().cloned() else {
            discard(&table, merged.take()).await;
            return Ok(Outcome::Stale { missing: change.remove.len() });
        };
        let contents = live::contents_cached(&table, &current, cache).await?;
        let live: HashSet<&str> = contents.files().map(|f| f.path()).collect();
        let missing = change.remove.iter().filter(|p| !live.contains(p.as_str())).count();
        if missing > 0 {
            discard(&table, merged.take()).await;
            return Ok(Outcome::Stale { missing });
        }
        let staged = stage(&table, &contents, change, merged.take()).await?;
        let snapshot_id = staged.snapshot_id;
        match commit_updates(lake, &table, staged.updates, staged.requirements).await {
            Ok(_) => return Ok(Outcome::Committed { snapshot_id, conflicts }),
            Err(LakeError::Iceberg(e)) if e.kind() == iceberg::ErrorKind::CatalogCommitConflicts => {
                // Its manifest list names a parent that is no longer current.
                for path in staged.written {
                    let _ = table.file_io().delete(&path).await;
                }
                merged = staged.merged;
                conflicts += 1;
                metrics::counter!("k2_maintenance_commit_conflicts_total", "table" => kind.name()).increment(1);
                if conflicts >= MAX_CONFLICTS {
                    discard(&table, merged.take()).await;
                    return Err(LakeError::Iceberg(e));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// A snapshot written but not committed.
struct Staged {
    snapshot_id: i64,
    updates: Vec<TableUpdate>,
    requirements: Vec<TableRequirement>,
    /// The added files' manifest and the manifest list, removed again if
    /// the commit loses (the orphan sweep gets them if the process dies
    /// first).
    written: Vec<String>,
    /// Kept for the next try when the commit loses.
    merged: Option<Merged>,
}

/// The manifest that takes the removed files out (with the other files of
/// the manifests that held them, as existing). It depends only on those
/// source manifests and on the snapshot id its deletions name, so a retry
/// whose sources are all still current reuses it under the same id.
struct Merged {
    snapshot_id: i64,
    sources: Vec<String>,
    path: String,
    manifest: ManifestFile,
}

async fn discard(table: &Table, merged: Option<Merged>) {
    if let Some(m) = merged {
        let _ = table.file_io().delete(&m.path).await;
    }
}

/// Writes the manifests and manifest list of `change` applied to `table`'s
/// current snapshot (whose manifests `contents` holds).
async fn stage(
    table: &Table,
    contents: &Contents,
    change: &Change,
    previous: Option<Merged>,
) -> Result<Staged, LakeError> {
    let metadata = table.metadata();
    if metadata.format_version() != FormatVersion::V2 {
        return Err(LakeError::Schema(format!(
            "table {} is Iceberg format {:?}; maintenance writes format 2 only",
            table.identifier(),
            metadata.format_version()
        )));
    }
    let parent = metadata.current_snapshot().ok_or_else(|| LakeError::Schema("the table has no snapshot".into()))?;
    // Which manifests hold a removed file, decided once (a table of
    // thousands of manifests is walked file by file here).
    let touched: Vec<bool> =
        contents.manifests.iter().map(|(_, files)| files.iter().any(|f| change.remove.contains(f.path()))).collect();
    let sources: Vec<String> = contents
        .manifests
        .iter()
        .zip(&touched)
        .filter(|(_, touched)| **touched)
        .map(|((m, _), _)| m.manifest_path.clone())
        .collect();
    let previous = match previous {
        Some(m) if m.sources == sources && metadata.snapshot_by_id(m.snapshot_id).is_none() => Some(m),
        other => {
            discard(table, other).await;
            None
        }
    };
    let snapshot_id = previous.as_ref().map_or_else(|| unique_snapshot_id(table), |m| m.snapshot_id);
    let sequence_number = metadata.next_sequence_number();
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().clone();
    let commit_id = uuid::Uuid::new_v4();
    let io = table.file_io();
    let mut written = Vec::new();
    let mut counter = 0;
    let manifest_writer = |counter: &mut u32| -> Result<_, LakeError> {
        let path = format!("{}/metadata/{commit_id}-m{counter}.avro", metadata.location());
        *counter += 1;
        let output = io.new_output(&path)?;
        Ok((path, ManifestWriterBuilder::new(output, Some(snapshot_id), schema.clone(), spec.as_ref().clone())))
    };

    let mut summary = SnapshotSummaryCollector::default();
    let mut manifests = Vec::new();
    // Every manifest holding a removed file is merged into this one (its
    // other files as existing, the removed ones as deleted): a table of
    // thousands of one-flush manifests comes out with one, not thousands
    // rewritten.
    let mut writer = None;
    for ((manifest, files), &touched) in contents.manifests.iter().zip(&touched) {
        if !touched {
            // Untouched: the new snapshot reuses it as it is.
            manifests.push(manifest.clone());
            continue;
        }
        for f in files.iter().filter(|f| change.remove.contains(f.path())) {
            summary.remove_file(&f.file, schema.clone(), spec.clone());
        }
        if previous.is_some() {
            continue;
        }
        let w = match &mut writer {
            Some((_, w)) => w,
            None => {
                let (path, builder) = manifest_writer(&mut counter)?;
                &mut writer.insert((path, builder.build_v2_data())).1
            }
        };
        for f in files.iter() {
            if change.remove.contains(f.path()) {
                w.add_delete_file(f.file.clone(), f.sequence_number, Some(f.file_sequence_number))?;
            } else {
                w.add_existing_file(f.file.clone(), f.snapshot_id, f.sequence_number, Some(f.file_sequence_number))?;
            }
        }
    }
    let merged = match (previous, writer) {
        (Some(m), _) => Some(m),
        (None, Some((path, w))) => {
            Some(Merged { snapshot_id, sources, path, manifest: w.write_manifest_file().await? })
        }
        (None, None) => None,
    };
    if let Some(m) = &merged {
        // Its sequence numbers are assigned by the list, so the same file
        // serves a retry under a newer sequence number.
        manifests.push(m.manifest.clone());
    }
    if !change.add.is_empty() {
        let (path, builder) = manifest_writer(&mut counter)?;
        let mut w = builder.build_v2_data();
        for file in &change.add {
            summary.add_file(file, schema.clone(), spec.clone());
            w.add_file(file.clone(), sequence_number)?;
        }
        written.push(path);
        manifests.push(w.write_manifest_file().await?);
    }

    let list_path = format!("{}/metadata/snap-{snapshot_id}-1-{commit_id}.avro", metadata.location());
    let mut list = ManifestListWriter::v2(
        io.new_output(&list_path)?.writer().await?,
        snapshot_id,
        Some(parent.snapshot_id()),
        sequence_number,
    );
    list.add_manifests(manifests.into_iter())?;
    list.close().await?;
    written.push(list_path.clone());

    let mut props = totals(parent.summary(), summary.build());
    props.extend(carried(table));
    props.insert(MAINTENANCE.to_owned(), change.step.to_owned());
    let snapshot = Snapshot::builder()
        .with_manifest_list(list_path)
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(parent.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_summary(Summary { operation: change.operation.clone(), additional_properties: props })
        .with_schema_id(metadata.current_schema_id())
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
        .build();
    let updates = vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: MAIN_BRANCH.to_owned(),
            reference: SnapshotReference::new(snapshot_id, SnapshotRetention::branch(None, None, None)),
        },
    ];
    let requirements = vec![
        TableRequirement::UuidMatch { uuid: metadata.uuid() },
        TableRequirement::RefSnapshotIdMatch { r#ref: MAIN_BRANCH.to_owned(), snapshot_id: Some(parent.snapshot_id()) },
    ];
    Ok(Staged { snapshot_id, updates, requirements, written, merged })
}

/// The change's own counts plus the table's totals after it.
fn totals(parent: &Summary, change: HashMap<String, String>) -> HashMap<String, String> {
    let number =
        |props: &HashMap<String, String>, key: &str| props.get(key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let before = &parent.additional_properties;
    let mut props = change;
    for (total, added, removed) in [
        ("total-records", "added-records", "deleted-records"),
        ("total-data-files", "added-data-files", "deleted-data-files"),
        ("total-files-size", "added-files-size", "removed-files-size"),
    ] {
        let after = number(before, total) + number(&props, added) - number(&props, removed);
        props.insert(total.to_owned(), after.to_string());
    }
    for unchanged in ["total-delete-files", "total-position-deletes", "total-equality-deletes"] {
        props.insert(unchanged.to_owned(), number(before, unchanged).to_string());
    }
    props
}

/// K2's keys of the newest snapshot that has them.
fn carried(table: &Table) -> HashMap<String, String> {
    for snapshot in crate::lake::summary::newest_first(table) {
        let props = &snapshot.summary().additional_properties;
        // Trades and quotes name their flush generation, books the instant
        // they are complete up to.
        if props.contains_key(GENERATION) || props.contains_key(COMPLETE_UNTIL) {
            return CARRIED.iter().filter_map(|k| props.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect();
        }
    }
    HashMap::new()
}

fn unique_snapshot_id(table: &Table) -> i64 {
    loop {
        let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) >> 1) as i64;
        if id != 0 && table.metadata().snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// Commits `updates` under `requirements` to the catalog the lake uses,
/// failing with `CatalogCommitConflicts` when the table moved on.
pub async fn commit_updates(
    lake: &Lake,
    base: &Table,
    updates: Vec<TableUpdate>,
    requirements: Vec<TableRequirement>,
) -> Result<Table, LakeError> {
    match lake.plan().kind {
        CatalogKind::Sql => sql::commit(lake, base, updates, requirements).await,
        CatalogKind::Rest => rest::commit(lake, base, updates, requirements).await,
    }
}

fn conflict(ident: &TableIdent, why: &str) -> LakeError {
    LakeError::Iceberg(
        iceberg::Error::new(iceberg::ErrorKind::CatalogCommitConflicts, format!("commit of {ident} conflicted: {why}"))
            .with_retryable(true),
    )
}

/// The SQL catalog's commit: the same statement iceberg-catalog-sql runs.
mod sql {
    use std::str::FromStr;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::*;

    pub async fn commit(
        lake: &Lake,
        base: &Table,
        updates: Vec<TableUpdate>,
        requirements: Vec<TableRequirement>,
    ) -> Result<Table, LakeError> {
        let ident = base.identifier().clone();
        // Checked on the state the change was computed on; the swap below
        // makes sure that state is still current.
        for requirement in &requirements {
            requirement.check(Some(base.metadata())).map_err(|e| conflict(&ident, &e.to_string()))?;
        }
        let current = base.metadata_location_result()?.to_owned();
        let mut builder = base.metadata().clone().into_builder(Some(current.clone()));
        for update in updates {
            builder = update.apply(builder)?;
        }
        let metadata = builder.build()?.metadata;
        let location = MetadataLocation::from_str(&current)?.with_next_version().with_new_metadata(&metadata);
        metadata.write_to(base.file_io(), &location).await?;
        let next = location.to_string();

        let uri = lake.plan().props.get("uri").cloned().unwrap_or_default();
        let store = |e: sqlx::Error| LakeError::Config(format!("SQL catalog {uri}: {e}"));
        let options = SqliteConnectOptions::from_str(&uri).map_err(store)?;
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(store)?;
        let swapped = sqlx::query(
            "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
             WHERE catalog_name = ? AND table_name = ? AND table_namespace = ? \
             AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = ?",
        )
        .bind(&next)
        .bind(&current)
        .bind(lake.catalog_name())
        .bind(ident.name())
        .bind(ident.namespace().join("."))
        .bind(&current)
        .execute(&pool)
        .await;
        pool.close().await;
        let swapped = swapped.map_err(store)?.rows_affected();
        if swapped == 0 {
            let _ = base.file_io().delete(&next).await;
            return Err(conflict(&ident, "another writer committed first"));
        }
        Ok(lake.catalog().load_table(&ident).await?)
    }
}

/// A REST catalog's commit (`CommitTableRequest` of the Iceberg REST
/// specification).
mod rest {
    use super::*;

    pub async fn commit(
        lake: &Lake,
        base: &Table,
        updates: Vec<TableUpdate>,
        requirements: Vec<TableRequirement>,
    ) -> Result<Table, LakeError> {
        let ident = base.identifier().clone();
        let props = &lake.plan().props;
        let uri = props.get("uri").cloned().unwrap_or_default();
        let http = reqwest::Client::new();
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            LakeError::Iceberg(iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                format!("REST catalog {uri}: {what}: {e}"),
            ))
        };
        let mut config = http.get(format!("{uri}/v1/config"));
        if let Some(warehouse) = props.get("warehouse") {
            config = config.query(&[("warehouse", warehouse)]);
        }
        let config: serde_json::Value = config
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| failed("GET /v1/config", &e))?
            .json()
            .await
            .map_err(|e| failed("GET /v1/config", &e))?;
        let prefix = config["overrides"]["prefix"].as_str().or(config["defaults"]["prefix"].as_str());
        let url = table_url(&uri, prefix, &ident);
        let body = serde_json::json!({
            "identifier": { "namespace": ident.namespace().as_ref(), "name": ident.name() },
            "requirements": requirements,
            "updates": updates,
        });
        let answer = http.post(&url).json(&body).send().await.map_err(|e| failed("commit", &e))?;
        let status = answer.status();
        if status == reqwest::StatusCode::CONFLICT {
            return Err(conflict(&ident, "the catalog refused a requirement (409)"));
        }
        if !status.is_success() {
            let text = answer.text().await.unwrap_or_default();
            return Err(failed("commit", &format!("{status}: {text}")));
        }
        Ok(lake.catalog().load_table(&ident).await?)
    }

    /// `{uri}/v1/{prefix}/namespaces/{namespace}/tables/{table}`, the
    /// namespace's levels joined by the unit separator, every segment
    /// percent-encoded.
    pub fn table_url(uri: &str, prefix: Option<&str>, ident: &TableIdent) -> String {
        let encode = |s: &str| {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                    other => format!("%{other:02X}"),
                })
                .collect::<String>()
        };
        let namespace = encode(&ident.namespace().as_ref().join("\u{1f}"));
        let prefix = prefix.map(|p| format!("/{}", encode(p))).unwrap_or_default();
        format!("{uri}/v1{prefix}/namespaces/{namespace}/tables/{}", encode(ident.name()))
    }
}

#[cfg(test)]
mod tests {
    use iceberg::NamespaceIdent;

    use super::*;

    #[test]
    fn the_rest_commit_goes_to_the_table_under_the_prefix() {
        let ident = TableIdent::new(NamespaceIdent::new("market".into()), "trades".into());
        assert_eq!(
            rest::table_url("http://c:8181", Some("wh 1"), &ident),
            "http://c:8181/v1/wh%201/namespaces/market/tables/trades"
        );
        let nested = TableIdent::new(NamespaceIdent::from_strs(["a", "b"]).unwrap(), "t".into());
        assert_eq!(rest::table_url("http://c", None, &nested), "http://c/v1/namespaces/a%1Fb/tables/t");
    }

    #[test]
    fn totals_follow_the_change() {
        let parent = Summary {
            operation: Operation::Append,
            additional_properties: HashMap::from([
                ("total-records".to_owned(), "100".to_owned()),
                ("total-data-files".to_owned(), "10".to_owned()),
                ("total-files-size".to_owned(), "1000".to_owned()),
            ]),
        };
        let change = HashMap::from([
            ("added-records".to_owned(), "60".to_owned()),
            ("deleted-records".to_owned(), "60".to_owned()),
            ("added-data-files".to_owned(), "1".to_owned()),
            ("deleted-data-files".to_owned(), "6".to_owned()),
            ("added-files-size".to_owned(), "500".to_owned()),
            ("removed-files-size".to_owned(), "600".to_owned()),
        ]);
        let t = totals(&parent, change);
        assert_eq!((t["total-records"].as_str(), t["total-data-files"].as_str()), ("100", "5"));
        assert_eq!((t["total-files-size"].as_str(), t["total-delete-files"].as_str()), ("900", "0"));
    }
}
