//! What a snapshot holds: its live data files with the manifest facts a
//! rewrite must carry over (sequence numbers, the snapshot that added them),
//! and every file it reaches (for expiry and the orphan sweep).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use iceberg::spec::{DataFile, Literal, ManifestFile, PrimitiveLiteral, SnapshotRef, TableMetadata};
use iceberg::table::Table;

use crate::lake::LakeError;

/// Manifests read at once.
const CONCURRENT_READS: usize = 8;

/// One live data file of a snapshot.
#[derive(Debug, Clone)]
pub struct LiveFile {
    pub file: DataFile,
    pub snapshot_id: i64,
    pub sequence_number: i64,
    pub file_sequence_number: i64,
}

impl LiveFile {
    pub fn path(&self) -> &str {
        self.file.file_path()
    }

    /// The day partition (days since 1970-01-01), when the table is
    /// partitioned by day as K2's tables are.
    pub fn day(&self) -> Option<i32> {
        match self.file.partition().fields().first() {
            Some(Some(Literal::Primitive(PrimitiveLiteral::Int(day)))) => Some(*day),
            _ => None,
        }
    }
}

/// A snapshot's manifests, each with its live entries.
pub struct Contents {
    pub manifests: Vec<(ManifestFile, Arc<Vec<LiveFile>>)>,
}

impl Contents {
    pub fn files(&self) -> impl Iterator<Item = &LiveFile> {
        self.manifests.iter().flat_map(|(_, files)| files.iter())
    }

    /// Live files by day partition (files outside any day under `None`).
    pub fn by_day(&self) -> BTreeMap<Option<i32>, Vec<LiveFile>> {
        let mut out: BTreeMap<Option<i32>, Vec<LiveFile>> = BTreeMap::new();
        for f in self.files() {
            out.entry(f.day()).or_default().push(f.clone());
        }
        out
    }
}

/// Manifests already read, by path: a manifest never changes once written,
/// so a maintenance round decodes each once, and a commit retried after
/// losing a race reads only the manifests the winner added.
#[derive(Default)]
pub struct ManifestCache {
    live: HashMap<String, Arc<Vec<LiveFile>>>,
}

/// Reads the manifests of `snapshot` that `cache` does not hold yet.
pub async fn contents_cached(
    table: &Table,
    snapshot: &SnapshotRef,
    cache: &mut ManifestCache,
) -> Result<Contents, LakeError> {
    let list = table.manifest_list_reader(snapshot).load().await?;
    let io = table.file_io().clone();
    let fresh: Vec<ManifestFile> =
        list.entries().iter().filter(|m| !cache.live.contains_key(&m.manifest_path)).cloned().collect();
    let loaded: Vec<(String, Vec<LiveFile>)> = futures_util::stream::iter(fresh)
        .map(|manifest| {
            let io = io.clone();
            async move {
                let loaded = manifest.load_manifest(&io).await?;
                let mut live = Vec::new();
                for entry in loaded.entries().iter().filter(|e| e.is_alive()) {
                    let (Some(snapshot_id), Some(sequence_number), Some(file_sequence_number)) =
                        (entry.snapshot_id(), entry.sequence_number(), entry.file_sequence_number)
                    else {
                        return Err(LakeError::Schema(format!(
                            "manifest {} has an entry without its snapshot or sequence numbers",
                            manifest.manifest_path
                        )));
                    };
                    live.push(LiveFile {
                        file: entry.data_file().clone(),
                        snapshot_id,
                        sequence_number,
                        file_sequence_number,
                    });
                }
                Ok::<_, LakeError>((manifest.manifest_path, live))
            }
        })
        .buffer_unordered(CONCURRENT_READS)
        .try_collect()
        .await?;
    for (path, live) in loaded {
        cache.live.insert(path, Arc::new(live));
    }
    let manifests = list
        .entries()
        .iter()
        .map(|m| {
            let live = cache.live.get(&m.manifest_path).cloned().unwrap_or_default();
            (m.clone(), live)
        })
        .collect();
    Ok(Contents { manifests })
}

/// Every file the given snapshots reach: their manifest lists, manifests,
/// live data files and K2 state files.
pub async fn reachable(table: &Table, snapshots: &[SnapshotRef]) -> Result<HashSet<String>, LakeError> {
    let mut out = HashSet::new();
    let mut seen_manifests = HashSet::new();
    let io = table.file_io().clone();
    for snapshot in snapshots {
        out.insert(snapshot.manifest_list().to_owned());
        if let Some(state) = snapshot.summary().additional_properties.get(crate::lake::summary_file::STATE) {
            out.insert(state.clone());
        }
        let list = table.manifest_list_reader(snapshot).load().await?;
        let fresh: Vec<ManifestFile> =
            list.entries().iter().filter(|m| seen_manifests.insert(m.manifest_path.clone())).cloned().collect();
        let loaded: Vec<_> = futures_util::stream::iter(fresh)
            .map(|m| {
                let io = io.clone();
                async move { m.load_manifest(&io).await.map(|loaded| (m.manifest_path, loaded)) }
            })
            .buffer_unordered(CONCURRENT_READS)
            .try_collect()
            .await?;
        for (path, manifest) in loaded {
            out.insert(path);
            for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
                out.insert(entry.file_path().to_owned());
            }
        }
    }
    Ok(out)
}

/// The metadata files a table's metadata still names (itself, its log, its
/// statistics): the orphan sweep keeps them.
pub fn metadata_files(table: &Table) -> HashSet<String> {
    let metadata: &TableMetadata = table.metadata();
    let mut out: HashSet<String> = metadata.metadata_log().iter().map(|l| l.metadata_file.clone()).collect();
    if let Some(location) = table.metadata_location() {
        out.insert(location.to_owned());
    }
    for s in metadata.statistics_iter() {
        out.insert(s.statistics_path.clone());
    }
    for s in metadata.partition_statistics_iter() {
        out.insert(s.statistics_path.clone());
    }
    out
}
