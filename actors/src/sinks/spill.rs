//! Spill to disk (degradation level 3, AGGRESSIVE): batches that cannot be
//! made durable in the tables fast enough go to local segment files instead
//! of piling up in memory, and are replayed into the tails, in order, when
//! the pressure falls.
//!
//! A segment (`spill/{seq:012}.k2s`) is a run of records, each
//! `[length u32 LE][crc32 u32 LE][Confluent-framed Avro event]`, written and
//! fsync'd batch by batch. Reading stops at the first record whose length or
//! checksum does not hold: a record torn by a crash is discarded, every
//! earlier one kept. A segment is deleted only once the flush holding its
//! replayed rows is committed; after a crash, segments still on disk are
//! replayed at start through the restored dedup window, which drops rows the
//! tables already hold.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k2_core::MarketEvent;
use k2_core::codec::wire::{SchemaIds, WireCodec};
use thiserror::Error;

use crate::lake::Tails;
use crate::runtime::errors::{Retry, Retryable, io_retry};

#[derive(Debug, Error)]
pub enum SpillError {
    #[error("spill {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("spill: encoding an event: {0}")]
    Encode(String),
    #[error("spill: the reading task failed: {0}")]
    Task(String),
}

impl Retryable for SpillError {
    fn retry(&self) -> Retry {
        match self {
            SpillError::Io { source, .. } => io_retry(source.kind()),
            SpillError::Encode(_) => Retry::Permanent,
            SpillError::Task(_) => Retry::Transient,
        }
    }
}

/// Schema ids inside spill files (they never leave this process's disk).
const IDS: SchemaIds = SchemaIds { trade: 1, quote: 2 };

struct Open {
    seq: u64,
    file: File,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    current: Option<Open>,
    /// Written and closed, not yet replayed: oldest first.
    sealed: VecDeque<u64>,
    /// Replayed into the tails; deleted once both tables have committed the
    /// generation the rows joined.
    replayed: Vec<(u64, u64, u64)>,
}

pub struct Spill {
    dir: PathBuf,
    codec: WireCodec,
    state: Mutex<State>,
    /// Rows written and not yet replayed.
    rows: AtomicU64,
    /// Kafka mode: the slot's lock, held while this process lives.
    _slot: Option<File>,
}

/// Most Kafka-mode spills one data directory holds (one per producing
/// process on it).
const SLOTS: usize = 64;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpillError + '_ {
    move |source| SpillError::Io { path: path.to_owned(), source }
}

impl Spill {
    /// Opens `dir`, taking the segments a previous process left as sealed.
    pub fn open(dir: &Path) -> Result<Self, SpillError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut found: Vec<u64> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".k2s")?.parse().ok())
            .collect();
        found.sort_unstable();
        let state = State { next_seq: found.last().map_or(0, |s| s + 1), sealed: found.into(), ..State::default() };
        Ok(Self {
            dir: dir.to_owned(),
            codec: WireCodec::new(IDS),
            state: Mutex::new(state),
            rows: AtomicU64::new(0),
            _slot: None,
        })
    }

    /// Kafka mode, where several producing processes may share a data
    /// directory: opens the lowest slot under `root` (`slot-N`) that no live
    /// process holds, by an advisory lock the kernel releases when its
    /// holder dies (SIGKILL included). A restarted process takes its
    /// predecessor's slot, or any other left by a dead one, and replays
    /// what is in it.
    pub fn open_slot(root: &Path) -> Result<Self, SpillError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        for slot in 0..SLOTS {
            let path = root.join(format!("slot-{slot}.lock"));
            let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
            if lock.try_lock().is_err() {
                continue;
            }
            let mut spill = Self::open(&root.join(format!("slot-{slot}")))?;
            spill._slot = Some(lock);
            return Ok(spill);
        }
        Err(SpillError::Io {
            path: root.to_owned(),
            source: std::io::Error::other(format!("all {SLOTS} spill slots are held by live processes")),
        })
    }

    /// Where the segments are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes segment `seq`, whose events are in Kafka.
    pub fn discard(&self, seq: u64) {
        let path = self.path(seq);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "spill segment not removed");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:012}.k2s"))
    }

    /// Whether rows wait in the spill (written, not replayed).
    pub fn is_empty(&self) -> bool {
        let s = self.lock();
        s.current.is_none() && s.sealed.is_empty()
    }

    /// Rows written and not yet replayed.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Appends `events` to the open segment and fsyncs it. Blocking: call it
    /// off the actor threads.
    pub fn append(&self, events: &[MarketEvent]) -> Result<(), SpillError> {
        let mut buf = Vec::with_capacity(events.len() * 200);
        let mut frame = Vec::with_capacity(256);
        for e in events {
            frame.clear();
            self.codec.encode_into(e, &mut frame).map_err(|e| SpillError::Encode(e.to_string()))?;
            buf.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&frame).to_le_bytes());
            buf.extend_from_slice(&frame);
        }
        let mut s = self.lock();
        if s.current.is_none() {
            let seq = s.next_seq;
            s.next_seq += 1;
            let path = self.path(seq);
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
            s.current = Some(Open { seq, file });
        }
        let Some(open) = s.current.as_mut() else { return Ok(()) };
        let path = self.path(open.seq);
        let before = open.file.metadata().map_err(io(&path))?.len();
        let written = open.file.write_all(&buf).and_then(|()| open.file.sync_data());
        if let Err(e) = written {
            // A part-written batch would hide every later record from the
            // reader: cut it off and continue in a new segment.
            let _ = open.file.set_len(before);
            let _ = open.file.sync_data();
            if let Some(done) = s.current.take() {
                if before == 0 {
                    // Nothing in it. Sealing it would leave one empty
                    // segment per refused batch (a full disk refuses every
                    // one), each costing the replayer a look before the
                    // rows spilled after them, and making the spill look
                    // non-empty, which sends every later batch to it.
                    drop(done);
                    let _ = std::fs::remove_file(&path);
                } else {
                    s.sealed.push_back(done.seq);
                }
            }
            return Err(SpillError::Io { path, source: e });
        }
        self.rows.fetch_add(events.len() as u64, Ordering::Relaxed);
        metrics::counter!("k2_spill_rows_written_total").increment(events.len() as u64);
        metrics::gauge!("k2_spill_rows").set(self.rows() as f64);
        Ok(())
    }

    /// Takes the oldest segment for replay (sealing the open one when it is
    /// the only one): its sequence number and events. Blocking.
    /// Segments that hold no record (left by a crash before the first write,
    /// or by an earlier version after a refused write) are deleted on the
    /// way: each would otherwise cost the replayer a look of its own.
    pub fn take_oldest(&self) -> Result<Option<(u64, Vec<MarketEvent>)>, SpillError> {
        loop {
            let seq = {
                let mut s = self.lock();
                if s.sealed.is_empty()
                    && let Some(open) = s.current.take()
                {
                    s.sealed.push_back(open.seq);
                }
                match s.sealed.pop_front() {
                    Some(seq) => seq,
                    None => return Ok(None),
                }
            };
            let events = match self.read(seq) {
                Ok(events) => events,
                Err(e) => {
                    // Kept first in line for the next attempt.
                    self.lock().sealed.push_front(seq);
                    return Err(e);
                }
            };
            if events.is_empty() {
                let path = self.path(seq);
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "empty spill segment not removed");
                }
                continue;
            }
            let n = events.len() as u64;
            let _ = self.rows.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| Some(r.saturating_sub(n)));
            metrics::gauge!("k2_spill_rows").set(self.rows() as f64);
            return Ok(Some((seq, events)));
        }
    }

    /// Puts segment `seq`, taken by [`Self::take_oldest`] and not replayed,
    /// first in line again.
    pub fn put_back(&self, seq: u64, rows: usize) {
        self.lock().sealed.push_front(seq);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        metrics::gauge!("k2_spill_rows").set(self.rows() as f64);
    }

    /// Reads a segment's records, stopping at (and cutting off) a torn one.
    pub fn read(&self, seq: u64) -> Result<Vec<MarketEvent>, SpillError> {
        let path = self.path(seq);
        let file = File::open(&path).map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        let mut r = BufReader::new(file);
        let mut events = Vec::new();
        let mut good = 0u64;
        let mut head = [0u8; 8];
        let mut frame = Vec::new();
        loop {
            match r.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(SpillError::Io { path, source: e }),
            }
            let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
            // A torn length field may be garbage: check it against the file
            // before allocating.
            if good + 8 + n as u64 > len {
                break;
            }
            frame.resize(n, 0);
            if r.read_exact(&mut frame).is_err() || crc32fast::hash(&frame) != crc {
                break;
            }
            match self.codec.decode(&frame) {
                Ok(e) => events.push(e),
                Err(_) => break,
            }
            good += 8 + n as u64;
        }
        if good < len {
            tracing::warn!(path = %path.display(), kept = events.len(), torn_bytes = len - good, "torn spill record discarded");
            metrics::counter!("k2_spill_torn_records_total").increment(1);
            let f = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
            f.set_len(good).map_err(io(&path))?;
            f.sync_data().map_err(io(&path))?;
        }
        Ok(events)
    }

    /// The segment's rows are in the tails, in generations `trades` and
    /// `quotes`: it may go once both are committed.
    pub fn replayed(&self, seq: u64, trades: u64, quotes: u64) {
        self.lock().replayed.push((seq, trades, quotes));
    }

    /// Deletes the replayed segments whose rows both tables have committed.
    pub fn release(&self, committed_trades: u64, committed_quotes: u64) {
        let mut s = self.lock();
        let done: Vec<u64> = s
            .replayed
            .iter()
            .filter(|(_, t, q)| *t <= committed_trades && *q <= committed_quotes)
            .map(|(seq, _, _)| *seq)
            .collect();
        s.replayed.retain(|(seq, _, _)| !done.contains(seq));
        drop(s);
        for seq in done {
            let path = self.path(seq);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "spill segment not removed");
            }
        }
    }
}

/// The one way spilled rows go back: the oldest segment is read on a
/// blocking thread, `keep` may drop some of its rows (at start, those the
/// tables already hold), the rest join the tails, and the segment is
/// deleted once both tables have committed them. Returns the segment's
/// number and how many rows went in; `None` when the spill is empty.
pub async fn replay_oldest(
    spill: &Arc<Spill>,
    tails: &Tails,
    keep: impl FnOnce(&mut Vec<MarketEvent>),
) -> Result<Option<(u64, usize)>, SpillError> {
    let s = spill.clone();
    let taken =
        tokio::task::spawn_blocking(move || s.take_oldest()).await.map_err(|e| SpillError::Task(e.to_string()))?;
    let Some((seq, mut events)) = taken? else { return Ok(None) };
    keep(&mut events);
    let n = events.len();
    let (t, q) = tails.append(events);
    spill.replayed(seq, t, q);
    metrics::counter!("k2_spill_rows_replayed_total").increment(n as u64);
    Ok(Some((seq, n)))
}

/// Replays every segment now, whatever the degradation level (at start and
/// at shutdown); how many rows went into the tails.
pub async fn replay_all(
    spill: &Arc<Spill>,
    tails: &Tails,
    mut keep: impl FnMut(&mut Vec<MarketEvent>),
) -> Result<usize, SpillError> {
    let mut rows = 0;
    while let Some((seq, n)) = replay_oldest(spill, tails, &mut keep).await? {
        tracing::info!(segment = seq, rows = n, "spilled rows replayed into the tails");
        rows += n;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k2_core::source::binance::{BinanceParser, Frame};

    fn trades(ids: std::ops::RangeInclusive<u64>) -> Vec<MarketEvent> {
        let mut p = BinanceParser::default();
        ids.map(|t| {
            let f = format!(
                r#"{{"e":"trade","E":1,"s":"BTCUSDT","t":{t},"p":"1.5","q":"2","T":1722766102789,"m":true,"M":true}}"#
            );
            match p.parse(f.as_bytes(), k2_core::Timestamp::now()).unwrap() {
                Frame::Event(e) => e,
                other => panic!("{other:?}"),
            }
        })
        .collect()
    }

    #[test]
    fn segments_replay_in_order_and_a_torn_last_record_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::open(dir.path()).unwrap();
        spill.append(&trades(1..=10)).unwrap();
        spill.append(&trades(11..=20)).unwrap();
        assert_eq!(spill.rows(), 20);
        // A crash tore the last record: half of it is on disk.
        let path = spill.path(0);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 30).unwrap();
        drop(spill);

        let spill = Spill::open(dir.path()).unwrap();
        assert!(!spill.is_empty());
        let (seq, events) = spill.take_oldest().unwrap().unwrap();
        let ids: Vec<i64> = events.iter().map(|e| e.source_sequence().unwrap()).collect();
        assert_eq!(ids, (1..=19).collect::<Vec<_>>(), "the torn record is dropped, the ones before kept");
        assert!(spill.is_empty());
        spill.replayed(seq, 5, 3);
        spill.release(4, 9);
        assert!(path.exists(), "kept until both tables committed the rows");
        spill.release(5, 3);
        assert!(!path.exists());
        // New segments continue the numbering.
        spill.append(&trades(21..=21)).unwrap();
        assert!(spill.path(1).exists());
    }

    /// Kafka-mode spills: each live holder has a slot of its own, and a
    /// slot whose holder is gone (here dropped; the kernel does the same
    /// for a killed process) is taken again with what it holds.
    #[test]
    fn each_live_process_has_its_own_slot_and_a_dead_one_s_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = Spill::open_slot(dir.path()).unwrap();
        let second = Spill::open_slot(dir.path()).unwrap();
        assert_eq!(first.dir(), dir.path().join("slot-0"));
        assert_eq!(second.dir(), dir.path().join("slot-1"));
        first.append(&trades(1..=3)).unwrap();
        drop(first);
        let again = Spill::open_slot(dir.path()).unwrap();
        assert_eq!(again.dir(), dir.path().join("slot-0"));
        let (seq, events) = again.take_oldest().unwrap().unwrap();
        assert_eq!(events.len(), 3, "the dead holder's rows are there");
        again.put_back(seq, events.len());
        assert!(!again.is_empty());
        again.discard(seq);
        assert!(!again.dir().join(format!("{seq:012}.k2s")).exists());
    }

    /// A full disk refuses every batch: no refused write leaves a segment
    /// behind (the sink keeps those rows itself), the spill stays empty, and
    /// once there is room it takes batches again; an empty segment on disk
    /// is skipped and deleted rather than replayed.
    #[cfg(target_os = "linux")]
    #[test]
    fn refused_writes_leave_no_segments_and_empty_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::open(dir.path()).unwrap();
        // Writes to /dev/full fail with ENOSPC, as on a full file system.
        for seq in 0..3 {
            std::os::unix::fs::symlink("/dev/full", spill.path(seq)).unwrap();
            assert!(spill.append(&trades(1..=5)).is_err());
            assert!(std::fs::symlink_metadata(spill.path(seq)).is_err(), "segment {seq} left behind");
            assert!(spill.is_empty());
        }
        assert_eq!(spill.rows(), 0);
        spill.append(&trades(6..=10)).unwrap();
        // An empty segment (a crash before its first record) after it.
        drop(spill);
        std::fs::write(dir.path().join(format!("{:012}.k2s", 4)), b"").unwrap();
        let spill = Spill::open(dir.path()).unwrap();
        let (seq, events) = spill.take_oldest().unwrap().unwrap();
        assert_eq!((seq, events.len()), (3, 5));
        assert!(spill.take_oldest().unwrap().is_none(), "the empty segment is not replayed");
        assert!(!spill.path(4).exists(), "the empty segment is deleted");
    }
}
