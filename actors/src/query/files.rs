//! What is known about a snapshot without scanning it again: the time span
//! of every data file (from the manifests' column statistics), so a page read
//! without a time range does not sort the whole table, and pages already read
//! from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::RecordBatch;
use iceberg::spec::{ManifestList, PrimitiveLiteral};
use iceberg::table::Table;

use super::QueryError;

/// Data files' (lowest, highest) timestamps, in µs.
#[derive(Debug, Default)]
pub struct TimeIndex {
    spans: Vec<(i64, i64)>,
}

impl TimeIndex {
    /// Ends of windows to try for rows at or after `from` and before
    /// `until`: each candidate covers one more file's whole span than the
    /// previous, growing geometrically (1, 2, 4, ... files), so a reader that
    /// needs most of the table retries only a logarithmic number of times.
    pub fn window_ends(&self, from: Option<i64>, until: Option<i64>) -> Vec<i64> {
        let ends = self.ends(from.unwrap_or(i64::MIN), until.unwrap_or(i64::MAX));
        let mut out = Vec::new();
        let mut i = 0;
        while i < ends.len() {
            out.push(ends[i]);
            i = (i + 1) * 2 - 1;
        }
        out
    }

    /// Just past the last timestamp of each file holding rows in
    /// `[from, until)`, ascending, each before `until`.
    pub fn ends(&self, from: i64, until: i64) -> Vec<i64> {
        let mut ends: Vec<i64> = self
            .spans
            .iter()
            .filter(|(lo, hi)| *hi >= from && *lo < until)
            .map(|(_, hi)| hi.saturating_add(1))
            .filter(|end| *end < until)
            .collect();
        ends.sort_unstable();
        ends.dedup();
        ends
    }
}

/// Time indexes of recently read snapshots.
#[derive(Default)]
pub struct TimeIndexCache {
    entries: Mutex<HashMap<(String, i64), Arc<TimeIndex>>>,
}

impl TimeIndexCache {
    pub async fn get(&self, table: &Table, snapshot_id: i64) -> Result<Arc<TimeIndex>, QueryError> {
        let key = (table.identifier().to_string(), snapshot_id);
        if let Some(hit) = self.entries.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return Ok(hit.clone());
        }
        let index = Arc::new(load(table, snapshot_id).await?);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Snapshots come and go with every flush: keep the recent few.
        if entries.len() >= 16 {
            entries.clear();
        }
        entries.insert(key, index.clone());
        Ok(index)
    }
}

/// First pages read from snapshots, by (table, snapshot, parameters). A
/// snapshot never changes, so an entry is exact for as long as it is kept;
/// the oldest go first once the cache holds `MAX_ROWS` rows.
#[derive(Default)]
pub struct PageCache {
    entries: Mutex<Pages>,
}

#[derive(Default)]
struct Pages {
    by_key: HashMap<String, Arc<Vec<RecordBatch>>>,
    /// Keys oldest first, with their row counts.
    order: std::collections::VecDeque<(String, usize)>,
    rows: usize,
}

impl PageCache {
    const MAX_ROWS: usize = 200_000;

    pub fn get(&self, key: &str) -> Option<Arc<Vec<RecordBatch>>> {
        let hit = self.entries.lock().unwrap_or_else(PoisonError::into_inner).by_key.get(key).cloned();
        metrics::counter!("k2_query_page_cache_total", "result" => if hit.is_some() { "hit" } else { "miss" })
            .increment(1);
        hit
    }

    pub fn put(&self, key: String, page: Arc<Vec<RecordBatch>>) {
        let rows: usize = page.iter().map(RecordBatch::num_rows).sum();
        let mut pages = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if pages.by_key.insert(key.clone(), page).is_some() {
            return;
        }
        pages.order.push_back((key, rows));
        pages.rows += rows;
        while pages.rows > Self::MAX_ROWS {
            let Some((old, n)) = pages.order.pop_front() else { break };
            pages.by_key.remove(&old);
            pages.rows -= n;
        }
    }
}

async fn load(table: &Table, snapshot_id: i64) -> Result<TimeIndex, QueryError> {
    let internal = |e: iceberg::Error| QueryError::Internal(format!("reading manifests: {e}"));
    let metadata = table.metadata();
    let Some(snapshot) = metadata.snapshot_by_id(snapshot_id) else { return Ok(TimeIndex::default()) };
    let Some(ts) = metadata.current_schema().field_by_name("timestamp").map(|f| f.id) else {
        return Ok(TimeIndex::default());
    };
    let bytes =
        table.file_io().new_input(snapshot.manifest_list()).map_err(internal)?.read().await.map_err(internal)?;
    let list = ManifestList::parse_with_version(&bytes, metadata.format_version()).map_err(internal)?;
    let mut spans = Vec::new();
    for manifest in list.entries() {
        let manifest = manifest.load_manifest(table.file_io()).await.map_err(internal)?;
        for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
            let file = entry.data_file();
            let micros = |d: Option<&iceberg::spec::Datum>| match d.map(|d| d.literal()) {
                Some(PrimitiveLiteral::Long(v)) => Some(*v),
                _ => None,
            };
            // A file without statistics could hold any time: span everything.
            let lo = micros(file.lower_bounds().get(&ts)).unwrap_or(i64::MIN);
            let hi = micros(file.upper_bounds().get(&ts)).unwrap_or(i64::MAX - 1);
            spans.push((lo, hi));
        }
    }
    Ok(TimeIndex { spans })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_grow_by_files_and_stay_inside_the_range() {
        let index = TimeIndex { spans: (0..10).map(|i| (i * 100, i * 100 + 99)).collect() };
        assert_eq!(index.window_ends(None, None), vec![100, 200, 400, 800]);
        assert_eq!(index.window_ends(Some(250), Some(700)), vec![300, 400, 600]);
        assert!(index.window_ends(Some(2000), None).is_empty());
    }
}
