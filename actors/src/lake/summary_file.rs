//! K2's larger summary keys (sequence marks, open gaps, Kafka offsets) kept
//! in a small JSON file of their own, which the snapshot's summary names.
//!
//! Why: a table's metadata file holds every snapshot's summary, and the
//! catalog rewrites the whole file on each commit. The marks grow with the
//! number of symbols (a few KB for 50, hundreds of KB for a venue's every
//! pair) and the open gaps with a feed's trouble, so carried inline they made
//! a day of 30 s flushes write tens of MB per commit, and a week of kept
//! snapshots more. With the file, a summary holds a generation, a writer and
//! a path, whatever the state's size.
//!
//! The file is written before the commit under a name no other commit uses,
//! so a snapshot names it atomically with its data. A commit that fails
//! leaves the file to the orphan sweep (a crash) or deletes it (an error
//! answer); expiry deletes the files only expired snapshots named (they are
//! part of what [`super::maintenance::live::reachable`] returns). Snapshots
//! written before the file existed carry the keys inline, and still read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use iceberg::table::Table;

use super::LakeError;
use super::summary::{KAFKA_OFFSETS, OPEN_GAPS, SOURCES};

/// Snapshot summary key naming the file holding the keys below.
pub const STATE: &str = "k2.state";

/// The summary keys kept in the file.
const MOVED: [&str; 3] = [SOURCES, OPEN_GAPS, KAFKA_OFFSETS];

/// Files read, by path (a file never changes once written). Bounded: it only
/// spares restarts, queries in Kafka mode and followers a re-read.
const CACHED_FILES: usize = 64;

/// A state file's keys, as read.
type Keys = Arc<HashMap<String, String>>;

fn cache() -> &'static Mutex<HashMap<String, Keys>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Keys>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// Moves the keys the file holds out of `props` into a new file under the
/// table's metadata directory, and names it in `props`. Returns its path.
pub async fn write(table: &Table, generation: u64, props: &mut HashMap<String, String>) -> Result<String, LakeError> {
    let mut body = serde_json::Map::new();
    for key in MOVED {
        if let Some(value) = props.remove(key) {
            // Each key's value is JSON already: nested as it is, the file
            // reads as one document.
            let parsed = serde_json::from_str(&value)
                .map_err(|e| LakeError::Schema(format!("summary key {key} is not JSON: {e}")))?;
            body.insert(key.to_owned(), parsed);
        }
    }
    let path = format!(
        "{}/metadata/k2-state-g{generation}-{}.json",
        table.metadata().location().trim_end_matches('/'),
        uuid::Uuid::new_v4().simple()
    );
    let bytes = serde_json::to_vec(&body).map_err(|e| LakeError::Schema(e.to_string()))?;
    table.file_io().new_output(&path)?.write(bytes.into()).await?;
    props.insert(STATE.to_owned(), path.clone());
    Ok(path)
}

/// `props` with the keys of the file it names put back (as they were
/// inline); `props` itself when it names none.
pub async fn read(table: &Table, props: &HashMap<String, String>) -> Result<HashMap<String, String>, LakeError> {
    let Some(path) = props.get(STATE) else { return Ok(props.clone()) };
    let cached = cache().lock().unwrap_or_else(PoisonError::into_inner).get(path).cloned();
    let moved = match cached {
        Some(hit) => hit,
        None => {
            let bytes = table.file_io().new_input(path)?.read().await?;
            let loaded = Arc::new(parse(path, &bytes)?);
            let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= CACHED_FILES {
                cache.clear();
            }
            cache.insert(path.clone(), loaded.clone());
            loaded
        }
    };
    let mut out = props.clone();
    out.extend(moved.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(out)
}

fn parse(path: &str, bytes: &[u8]) -> Result<HashMap<String, String>, LakeError> {
    let bad = |reason: String| LakeError::Schema(format!("K2 state file {path}: {reason}"));
    let body: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = HashMap::new();
    for (key, value) in body {
        if !MOVED.contains(&key.as_str()) {
            return Err(bad(format!("unknown key {key:?}")));
        }
        out.insert(key, value.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_gives_back_the_keys_as_they_were_inline() {
        let inline = HashMap::from([
            (SOURCES.to_owned(), r#"{"BINANCE/BTCUSDT":{"source_sequence":10,"platform_sequence":3}}"#.to_owned()),
            (OPEN_GAPS.to_owned(), r#"{"BINANCE/BTCUSDT":[[3,4]]}"#.to_owned()),
        ]);
        let body: serde_json::Map<String, serde_json::Value> =
            inline.iter().map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap())).collect();
        let back = parse("p", &serde_json::to_vec(&body).unwrap()).unwrap();
        let json = |m: &HashMap<String, String>| -> HashMap<String, serde_json::Value> {
            m.iter().map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap())).collect()
        };
        assert_eq!(json(&back), json(&inline));
    }

    #[test]
    fn a_file_with_a_key_it_may_not_hold_is_refused() {
        let err = parse("p", br#"{"k2.flush-generation": 3}"#).unwrap_err();
        assert!(err.to_string().contains("k2.flush-generation"), "{err}");
        assert!(parse("p", b"not json").is_err());
    }
}
