//! The dead-letter store: input K2 could not process, kept with the reason
//! so that nothing is dropped by merely being counted. Two kinds arrive:
//! a batch of events whose stage failed (a panic in the sequencer or the
//! deduplicator), and a WebSocket frame the parser refused. Both can be
//! listed (`/v1/dead-letters`, `k2 dead-letters list`) and replayed once
//! the cause is fixed (`k2 dead-letters replay`).
//!
//! Layout under `dir` (the data directory's `dead-letters/`):
//! - `{seq:06}.jsonl`: one JSON document per line, one letter each, every
//!   append fsync'd before it returns. A process never appends to a segment
//!   an earlier process wrote: a line torn by a crash stays last in its
//!   segment and is skipped (and counted) on reading, never followed by a
//!   good one that a reader would miss.
//! - `replayed.jsonl`: one line per replayed letter (its id, when, and what
//!   became of its events). A letter is pending until its id is here.
//!
//! Dead letters are rare, so reading scans the files; nothing is indexed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k2_core::{MarketEvent, Timestamp};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const REPLAYED: &str = "replayed.jsonl";

#[derive(Debug, Error)]
pub enum DeadLetterError {
    #[error("dead letters {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("dead letters: encoding a letter: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What a letter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Events, already parsed, whose stage failed on them.
    Events,
    /// A raw frame the parser refused.
    Frame,
}

/// One dead letter, as stored (one JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    /// When it was stored, microseconds since the epoch (UTC).
    pub at: i64,
    /// The stage that failed or refused it (`sequencer`, `dedup`,
    /// `binance-0`, ...).
    pub stage: String,
    pub reason: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<MarketEvent>,
    /// The frame, when it is text (WebSocket text frames always are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
    /// The frame in hex, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_hex: Option<String>,
}

impl DeadLetter {
    /// The frame's bytes, for a frame letter.
    pub fn frame_bytes(&self) -> Option<Vec<u8>> {
        if let Some(text) = &self.frame {
            return Some(text.as_bytes().to_vec());
        }
        let hex = self.frame_hex.as_deref()?;
        (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
    }
}

/// What a replay did with one letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    pub id: u64,
    pub at: i64,
    /// Events sent into the pipeline again.
    pub sent: u64,
    /// Events left out because the tables already held their message ids.
    pub already_stored: u64,
}

/// A letter with what has become of it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub letter: DeadLetter,
    /// `pending` or `replayed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Replayed>,
}

/// Which letters to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Pending,
    Replayed,
    All,
}

struct Writer {
    seq: u64,
    file: Option<File>,
    bytes: u64,
}

struct Inner {
    dir: PathBuf,
    writer: Mutex<Writer>,
    next_id: AtomicU64,
}

/// The store; clones share it.
#[derive(Clone)]
pub struct DeadLetters(Arc<Inner>);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DeadLetterError + '_ {
    move |source| DeadLetterError::Io { path: path.to_owned(), source }
}

fn segment_seq(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_suffix(".jsonl")?.parse().ok()
}

impl DeadLetters {
    /// Opens (creating) the store in `dir`. Blocking.
    pub fn open(dir: &Path) -> Result<Self, DeadLetterError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let segments = segments(dir)?;
        let seq = segments.last().and_then(|p| segment_seq(p)).map_or(0, |s| s + 1);
        let store = Self(Arc::new(Inner {
            dir: dir.to_owned(),
            writer: Mutex::new(Writer { seq, file: None, bytes: 0 }),
            next_id: AtomicU64::new(1),
        }));
        let (letters, _) = store.letters()?;
        let replayed = store.replayed()?;
        store.0.next_id.store(letters.iter().map(|l| l.id).max().map_or(1, |last| last + 1), Ordering::Relaxed);
        let pending = letters.iter().filter(|l| !replayed.contains_key(&l.id)).count();
        metrics::gauge!("k2_dead_letters_pending").set(pending as f64);
        metrics::counter!("k2_dead_letters_store_errors_total").increment(0);
        Ok(store)
    }

    /// Shows `stage`'s series of `k2_dead_letters_stored_total` at 0 before
    /// its first letter (dashboards and alerts see a stage that never
    /// failed, not a missing series).
    pub fn announce(&self, stage: &str, kind: Kind) {
        metrics::counter!("k2_dead_letters_stored_total", "stage" => stage.to_owned(), "kind" => kind_label(kind))
            .increment(0);
    }

    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.0.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `events` that `stage` failed on. Blocking (one fsync); on
    /// failure the events are logged, so the loss is at least visible.
    pub fn store_events(&self, stage: &str, reason: &str, events: &[MarketEvent]) {
        if events.is_empty() {
            return;
        }
        let letter = DeadLetter {
            id: 0,
            at: Timestamp::now().as_micros(),
            stage: stage.to_owned(),
            reason: reason.to_owned(),
            kind: Kind::Events,
            events: events.to_vec(),
            frame: None,
            frame_hex: None,
        };
        self.store(vec![letter]);
    }

    /// Stores frames `stage` refused, each with its reason. Blocking (one
    /// fsync for all).
    pub fn store_frames(&self, stage: &str, frames: Vec<(Vec<u8>, String)>) {
        if frames.is_empty() {
            return;
        }
        let at = Timestamp::now().as_micros();
        let letters = frames
            .into_iter()
            .map(|(bytes, reason)| {
                let (frame, frame_hex) = match String::from_utf8(bytes) {
                    Ok(text) => (Some(text), None),
                    Err(e) => (None, Some(e.as_bytes().iter().map(|b| format!("{b:02x}")).collect())),
                };
                DeadLetter {
                    id: 0,
                    at,
                    stage: stage.to_owned(),
                    reason,
                    kind: Kind::Frame,
                    events: Vec::new(),
                    frame,
                    frame_hex,
                }
            })
            .collect();
        self.store(letters);
    }

    fn store(&self, letters: Vec<DeadLetter>) {
        let stage = letters.first().map(|l| l.stage.clone()).unwrap_or_default();
        let kind = letters.first().map_or(Kind::Events, |l| l.kind);
        let n = letters.len();
        match self.append(letters) {
            Ok(()) => {
                metrics::counter!("k2_dead_letters_stored_total", "stage" => stage, "kind" => kind_label(kind))
                    .increment(n as u64);
                metrics::gauge!("k2_dead_letters_pending").increment(n as f64);
            }
            Err(e) => {
                metrics::counter!("k2_dead_letters_store_errors_total").increment(1);
                tracing::error!(error = %e, stage, letters = n, "dead letters could not be stored; they are lost");
            }
        }
    }

    fn append(&self, mut letters: Vec<DeadLetter>) -> Result<(), DeadLetterError> {
        let mut w = self.lock();
        let mut buf = Vec::with_capacity(letters.len() * 256);
        for letter in &mut letters {
            letter.id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
            serde_json::to_writer(&mut buf, letter)?;
            buf.push(b'\n');
        }
        if w.file.is_none() || w.bytes >= SEGMENT_BYTES {
            if w.file.is_some() {
                w.seq += 1;
            }
            let path = self.0.dir.join(format!("{:06}.jsonl", w.seq));
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
            w.bytes = file.metadata().map_err(io(&path))?.len();
            w.file = Some(file);
        }
        let path = self.0.dir.join(format!("{:06}.jsonl", w.seq));
        let before = w.bytes;
        let w = &mut *w;
        let Some(file) = w.file.as_mut() else { return Ok(()) };
        if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            // A part-written line must not be followed by good ones: cut it off
            // and continue in a new segment.
            let _ = file.set_len(before);
            w.file = None;
            w.seq += 1;
            return Err(DeadLetterError::Io { path, source: e });
        }
        w.bytes += buf.len() as u64;
        Ok(())
    }

    /// Every stored letter, oldest first, and how many lines were torn.
    /// Blocking.
    pub fn letters(&self) -> Result<(Vec<DeadLetter>, usize), DeadLetterError> {
        let mut all = Vec::new();
        let mut torn = 0;
        for path in segments(&self.0.dir)? {
            let (letters, t) = read_segment(&path)?;
            all.extend(letters);
            torn += t;
        }
        Ok((all, torn))
    }

    /// What replays have recorded, by letter id. Blocking.
    pub fn replayed(&self) -> Result<HashMap<u64, Replayed>, DeadLetterError> {
        let path = self.0.dir.join(REPLAYED);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(DeadLetterError::Io { path, source: e }),
        };
        let mut out = HashMap::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(io(&path))?;
            if let Ok(r) = serde_json::from_str::<Replayed>(&line) {
                out.insert(r.id, r);
            }
        }
        Ok(out)
    }

    /// Letters with their status, oldest first: `status` filters, `after`
    /// skips ids up to it, at most `limit`; and how many letters are
    /// pending in all. Blocking.
    pub fn list(&self, status: Status, after: u64, limit: usize) -> Result<(Vec<Listed>, usize), DeadLetterError> {
        let (letters, _) = self.letters()?;
        let mut replayed = self.replayed()?;
        let pending = letters.iter().filter(|l| !replayed.contains_key(&l.id)).count();
        let listed = letters
            .into_iter()
            .filter(|l| l.id > after)
            .map(|letter| {
                let replayed = replayed.remove(&letter.id);
                let status = if replayed.is_some() { "replayed" } else { "pending" };
                Listed { letter, status, replayed }
            })
            .filter(|l| match status {
                Status::Pending => l.replayed.is_none(),
                Status::Replayed => l.replayed.is_some(),
                Status::All => true,
            })
            .take(limit)
            .collect();
        Ok((listed, pending))
    }

    /// Records letters as replayed (after what they sent is durable).
    /// Blocking (one fsync).
    pub fn mark_replayed(&self, done: &[Replayed]) -> Result<(), DeadLetterError> {
        if done.is_empty() {
            return Ok(());
        }
        let path = self.0.dir.join(REPLAYED);
        let mut buf = Vec::new();
        for r in done {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        let _w = self.lock();
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        // A torn last line from a crash would swallow the next record: start
        // on a fresh line.
        let len = file.metadata().map_err(io(&path))?.len();
        if len > 0 && !ends_with_newline(&path)? {
            buf.insert(0, b'\n');
        }
        file.write_all(&buf).and_then(|()| file.sync_data()).map_err(io(&path))?;
        metrics::gauge!("k2_dead_letters_pending").decrement(done.len() as f64);
        Ok(())
    }
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Events => "events",
        Kind::Frame => "frame",
    }
}

fn ends_with_newline(path: &Path) -> Result<bool, DeadLetterError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path).map_err(io(path))?;
    file.seek(SeekFrom::End(-1)).map_err(io(path))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last).map_err(io(path))?;
    Ok(last[0] == b'\n')
}

/// The segment files, oldest first.
fn segments(dir: &Path) -> Result<Vec<PathBuf>, DeadLetterError> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter_map(|p| Some((segment_seq(&p)?, p)))
        .collect();
    found.sort_unstable();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// A segment's letters, and how many lines could not be read (torn by a
/// crash: only ever the last).
fn read_segment(path: &Path) -> Result<(Vec<DeadLetter>, usize), DeadLetterError> {
    let file = File::open(path).map_err(io(path))?;
    let mut letters = Vec::new();
    let mut torn = 0;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(io(path))?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<DeadLetter>(&line) {
            Ok(l) => letters.push(l),
            Err(e) => {
                torn += 1;
                tracing::warn!(path = %path.display(), error = %e, "a dead letter could not be read (torn by a crash?)");
            }
        }
    }
    Ok((letters, torn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(id: u64) -> MarketEvent {
        let text = format!(
            r#"{{"e":"trade","E":1,"s":"BTCUSDT","t":{id},"p":"60610.12345678","q":"0.00154","T":1722766102789,"m":true,"M":true}}"#
        );
        match k2_core::source::binance::BinanceParser::default().parse(text.as_bytes(), Timestamp::now()) {
            Ok(k2_core::source::binance::Frame::Event(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn letters_survive_a_reopen_with_ids_that_keep_rising_and_replays_that_stick() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetters::open(dir.path()).unwrap();
        let batch = [trade(1), trade(2)];
        store.store_events("dedup", "injected panic", &batch);
        store.store_frames(
            "binance-0",
            vec![(b"{not json".to_vec(), "malformed_json".into()), (vec![0xff, 0x00], "x".into())],
        );
        let (letters, torn) = store.letters().unwrap();
        assert_eq!((letters.len(), torn), (3, 0));
        assert_eq!(letters[0].events, batch, "events come back exactly, decimals and all");
        assert_eq!(letters[1].frame_bytes().unwrap(), b"{not json");
        assert_eq!(letters[2].frame_bytes().unwrap(), vec![0xff, 0x00]);

        // A crash tears the last line of the segment; a new process writes a
        // new segment, so later letters are never hidden behind it.
        let segment = segments(dir.path()).unwrap().pop().unwrap();
        OpenOptions::new().append(true).open(&segment).unwrap().write_all(b"{\"id\":99,\"at").unwrap();
        drop(store);
        let store = DeadLetters::open(dir.path()).unwrap();
        store.store_events("sequencer", "boom", &[trade(3)]);
        let (letters, torn) = store.letters().unwrap();
        assert_eq!(torn, 1);
        assert_eq!(letters.iter().map(|l| l.id).collect::<Vec<_>>(), vec![1, 2, 3, 4]);

        store.mark_replayed(&[Replayed { id: 1, at: 5, sent: 2, already_stored: 0 }]).unwrap();
        let (pending, count) = store.list(Status::Pending, 0, 100).unwrap();
        assert_eq!((pending.len(), count), (3, 3));
        let (replayed, _) = store.list(Status::Replayed, 0, 100).unwrap();
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0].letter.id, 1);
        assert_eq!(store.list(Status::All, 2, 1).unwrap().0[0].letter.id, 3, "after and limit page");
        let reopened = DeadLetters::open(dir.path()).unwrap();
        assert_eq!(reopened.list(Status::Pending, 0, 0).unwrap().1, 3);
        reopened.store_events("dedup", "again", &[trade(4)]);
        assert_eq!(reopened.letters().unwrap().0.last().unwrap().id, 5, "ids go on after a reopen");
    }
}
