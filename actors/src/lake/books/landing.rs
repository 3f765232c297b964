//! Kafka mode's half of the book log: records read from the book topics,
//! stamped by their producer (`kafka::book_producer`), taken into the
//! tails with their offsets and committed with them.
//!
//! Each table's snapshots record `k2.kafka-offsets`: the table holds every
//! record of its kind read from a partition below that partition's offset.
//! A commit lands only if, for every partition it covers, the table is
//! still where this process saw it when it started reading that partition;
//! the catalog's compare-and-swap makes that check and the commit one step.
//! Another flusher that landed the same partition meanwhile (a rebalance,
//! two members reading one partition for a moment) fences the commit: this
//! log drops what it had not committed and reads its partitions again from
//! the tables. So a record lands once whatever the group does, and a crash
//! at any point re-reads from the offsets the tables name. Neither table's
//! commit waits for the other's: a record of one table below the other's
//! offset is read again and skipped.
//!
//! A producer's `restart` marker is dated here, just after its book's last
//! record before it in the log (the tables' or this log's): the span a
//! crashed producer lost then reads as unsynced. A book with no record
//! before it has nothing to end, and the marker is dropped. Both rules
//! depend only on the log up to the marker, so a re-read decides the same.

use std::collections::HashSet;

use super::*;
use crate::lake::pinned::PinnedCatalog;
use crate::lake::summary::{KAFKA_OFFSETS, Offsets, merge_offsets};

/// (topic, partition).
type Partition = (String, i32);

pub(super) struct Landing {
    /// Per table: the offsets its snapshot covers, as this process last saw
    /// them (a partition's when its reading began, then after each commit).
    committed: [Offsets; 2],
    /// Next offset expected per partition read.
    expect: HashMap<Partition, i64>,
    /// Partitions a seek was asked for: a first record past the offset
    /// sought means the log no longer holds the ones before (retention).
    sought: HashSet<Partition>,
    /// The offsets after every record taken...
    next: Offsets,
    /// ...and, per table, after the records its commit is landing.
    landing_next: [Offsets; 2],
    /// The last stamp of each book read or stored.
    last: HashMap<Book, i64>,
    /// The partition each book's records were read from.
    books: HashMap<Book, Partition>,
    /// Counts resets: a record decided before one is not taken after it.
    epoch: u64,
}

/// One record read from a book topic: where from, and what it decoded to
/// (or why it could not be decoded).
pub struct Read {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub record: Result<BookEventV2, String>,
}

/// What became of a batch.
#[derive(Debug, Default)]
pub struct Landed {
    /// Partitions to read again from an offset.
    pub seek: Vec<(String, i32, i64)>,
    /// Records that are no book record: their index in the batch, and why.
    pub dead: Vec<(usize, String)>,
    /// Records taken into the tails.
    pub taken: usize,
    /// Records the log no longer held where reading resumed.
    pub missing: u64,
}

impl Landing {
    pub(super) fn new(tables: [&Table; 2], epoch: u64) -> Result<Self, LakeError> {
        Ok(Self {
            committed: [offsets_of(tables[0])?, offsets_of(tables[1])?],
            expect: HashMap::new(),
            sought: HashSet::new(),
            next: Offsets::new(),
            landing_next: [Offsets::new(), Offsets::new()],
            last: HashMap::new(),
            books: HashMap::new(),
            epoch,
        })
    }

    /// The tail of table `i` is being taken by a commit.
    pub(super) fn cut(&mut self, i: usize) {
        self.landing_next[i] = self.next.clone();
    }

    /// Notes that the record at `offset` of `key` was dealt with, unless a
    /// reset came since `epoch` (then the record is read again); whether it
    /// was noted.
    fn passed(&mut self, epoch: Option<u64>, key: &Partition, offset: i64) -> bool {
        if epoch != Some(self.epoch) {
            return false;
        }
        // Only here, with the record taken: a failure or an abort before
        // leaves the record to be read again.
        self.sought.remove(key);
        self.expect.insert(key.clone(), offset + 1);
        self.next.entry(key.0.clone()).or_default().insert(key.1, offset + 1);
        true
    }

    fn committed(&self, i: usize, topic: &str, partition: i32) -> i64 {
        offset(&self.committed[i], topic, partition).unwrap_or(0)
    }
}

fn offset(offsets: &Offsets, topic: &str, partition: i32) -> Option<i64> {
    offsets.get(topic).and_then(|m| m.get(&partition)).copied()
}

/// The offsets the table's current snapshot covers.
fn offsets_of(table: &Table) -> Result<Offsets, LakeError> {
    let Some(snapshot) = table.metadata().current_snapshot() else { return Ok(Offsets::new()) };
    match snapshot.summary().additional_properties.get(KAFKA_OFFSETS) {
        None => Ok(Offsets::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| LakeError::Summary {
            table: match table.identifier().name() {
                "book_snapshots" => "book_snapshots",
                _ => "book_updates",
            },
            reason: format!("{KAFKA_OFFSETS}: {e}"),
        }),
    }
}

/// What to do with one record once its partition's position is known.
enum Step {
    Skip,
    Seek(i64),
    /// Under the epoch the decision was made in.
    Take {
        missing: i64,
        epoch: u64,
    },
}

impl BookLog {
    /// Opens the book tables for the book lander (Kafka mode).
    pub async fn open_landing(lake: &Lake, periodic_every: Duration) -> Result<Arc<Self>, LakeError> {
        Self::load(lake, periodic_every, true).await
    }

    fn kafka<T>(&self, f: impl FnOnce(&mut Landing, &mut State) -> T) -> Option<T> {
        let mut state = self.state();
        let mut landing = state.kafka.take()?;
        let out = f(&mut landing, &mut state);
        state.kafka = Some(landing);
        Some(out)
    }

    /// Takes a batch the lander read, in log order.
    pub async fn land(&self, batch: Vec<Read>) -> Result<Landed, LakeError> {
        let mut out = Landed::default();
        // Partitions sought in this batch: their later records are skipped.
        let mut seeking: HashSet<Partition> = HashSet::new();
        for (index, read) in batch.into_iter().enumerate() {
            let Read { topic, partition, offset: at, record } = read;
            let key = (topic, partition);
            if seeking.contains(&key) {
                continue;
            }
            // Where the partition stands, read from the tables the first
            // time (or after a reset, which may come at any await here): the
            // decision and the epoch it was made under are taken at once.
            let step = loop {
                let step = self.kafka(|k, _| {
                    let expected = *k.expect.get(&key)?;
                    Some(if at < expected {
                        Step::Skip
                    } else if at > expected && !k.sought.contains(&key) {
                        k.sought.insert(key.clone());
                        Step::Seek(expected)
                    } else {
                        Step::Take { missing: at - expected, epoch: k.epoch }
                    })
                });
                match step {
                    None => return Ok(out),
                    Some(None) => self.begin(&key).await?,
                    Some(Some(step)) => break step,
                }
            };
            let (missing, epoch) = match step {
                Step::Skip => continue,
                Step::Seek(to) => {
                    out.seek.push((key.0.clone(), key.1, to));
                    seeking.insert(key);
                    continue;
                }
                Step::Take { missing, epoch } => (missing, Some(epoch)),
            };
            if missing > 0 {
                out.missing += missing as u64;
                tracing::error!(topic = %key.0, partition = key.1, offset = at, missing, "book records missing from the log (retention?)");
            }
            let mut r = match record {
                Ok(r) => r,
                Err(reason) => {
                    out.dead.push((index, reason));
                    self.kafka(|k, _| k.passed(epoch, &key, at));
                    continue;
                }
            };
            if r.kind == BookEventKind::Unsynced && r.cause.as_deref() == Some(RESTART) {
                match self.last_stamp(&r).await? {
                    Some(last) => {
                        let at = r.ingestion_timestamp.as_micros().min(last.saturating_add(1));
                        r.ingestion_timestamp = Timestamp::from_micros(at);
                        r.timestamp = r.ingestion_timestamp;
                    }
                    // The book has no record before it: nothing to end.
                    None => {
                        self.kafka(|k, _| k.passed(epoch, &key, at));
                        continue;
                    }
                }
            }
            // The record's offset is passed, its book's last stamp noted and
            // the record taken in one step: a commit cutting the tails sees
            // all three or none, and a reset meanwhile drops the record.
            let taken = self.kafka(|k, state| {
                if !k.passed(epoch, &key, at) {
                    return false;
                }
                let book = (r.exchange.clone(), r.symbol.clone());
                if !k.books.contains_key(&book) {
                    k.books.insert(book.clone(), key.clone());
                }
                let stamp = r.ingestion_timestamp.as_micros();
                let last = k.last.entry(book).or_insert(stamp);
                *last = (*last).max(stamp);
                // Already in its table (the other table's offset was lower).
                if k.committed(slot(BookTable::of(r.kind)), &key.0, key.1) > at {
                    return false;
                }
                state.take(r);
                true
            });
            if taken == Some(true) {
                out.taken += 1;
            }
        }
        Ok(out)
    }

    /// A partition is read for the first time (or again after a reset):
    /// where the tables stand for it now.
    async fn begin(&self, key: &Partition) -> Result<(), LakeError> {
        let idents = {
            let state = self.state();
            [state.tables[0].identifier().clone(), state.tables[1].identifier().clone()]
        };
        let mut found = [None, None];
        let mut updates = None;
        for (i, ident) in idents.iter().enumerate() {
            let table = self.lake.catalog().load_table(ident).await?;
            found[i] = offset(&offsets_of(&table)?, &key.0, key.1);
            if i == 0 {
                updates = Some(table);
            }
        }
        // Sync changes another flusher landed for this partition's books
        // (after a rebalance), beside those this process holds.
        let stored = match &updates {
            Some(t) => load_changes(t).await?,
            None => HashMap::new(),
        };
        self.kafka(|_, state| {
            for (book, list) in stored {
                let known = state.changes.entry(book).or_default();
                for change in list {
                    let seen = known.iter().any(|c| {
                        c.ingestion_timestamp == change.ingestion_timestamp && c.message_id == change.message_id
                    });
                    if !seen {
                        let at = known.partition_point(|c| c.ingestion_timestamp <= change.ingestion_timestamp);
                        known.insert(at, change);
                    }
                }
            }
        });
        self.kafka(|k, _| {
            for (i, f) in found.into_iter().enumerate() {
                let partitions = k.committed[i].entry(key.0.clone()).or_default();
                match f {
                    Some(f) => partitions.insert(key.1, f),
                    None => partitions.remove(&key.1),
                };
            }
            let from = k.committed(0, &key.0, key.1).min(k.committed(1, &key.0, key.1));
            k.expect.insert(key.clone(), from);
        });
        Ok(())
    }

    /// The stamp of the book's last record before `marker`: this log's, or
    /// the tables' (read once per book).
    async fn last_stamp(&self, marker: &BookEventV2) -> Result<Option<i64>, LakeError> {
        let book = (marker.exchange.clone(), marker.symbol.clone());
        if let Some(Some(last)) = self.kafka(|k, _| k.last.get(&book).copied()) {
            return Ok(Some(last));
        }
        // As the catalog has them now: another flusher may have landed the
        // records before this partition came here.
        let idents = self.state().tables.clone().map(|t| t.identifier().clone());
        let mut last = None;
        for ident in &idents {
            let table = self.lake.catalog().load_table(ident).await?;
            last = last.max(max_stamp(&table, (&book.0, &book.1), marker.ingestion_timestamp).await?);
        }
        if let Some(stamp) = last {
            self.kafka(|k, _| {
                let known = k.last.entry(book).or_insert(stamp);
                *known = (*known).max(stamp);
            });
        }
        Ok(last)
    }

    /// Drops what was read from partitions this process no longer owns, by
    /// starting afresh from the tables when there is any (a rebalance took
    /// them: their records must not land from here, and queries must not
    /// wait for them).
    pub async fn keep_only(&self, owned: &[(String, i32)]) -> Result<(), LakeError> {
        let lost = self.kafka(|k, _| k.expect.keys().any(|key| !owned.contains(key))).unwrap_or(false);
        if lost {
            tracing::info!(
                "book partitions revoked: dropping what was read and not committed, reading again from the tables"
            );
            self.reset().await?;
        }
        Ok(())
    }

    /// Drops every record not committed and starts reading afresh from
    /// the tables (after a fenced commit, a revocation, or a new lander
    /// task: a task that died mid-batch leaves nothing half taken).
    ///
    /// Never beside a commit: one landing meanwhile would either be read
    /// again from offsets the reset loaded before it (and then written a
    /// second time), or have its table and offsets overwritten by the
    /// older ones the reset loaded (its records gone from queries).
    pub async fn reset(&self) -> Result<(), LakeError> {
        let _one = self.committing.lock().await;
        self.reset_committing().await
    }

    /// [`Self::reset`], by a commit (which holds the commit lock).
    async fn reset_committing(&self) -> Result<(), LakeError> {
        let idents = {
            let state = self.state();
            [state.tables[0].identifier().clone(), state.tables[1].identifier().clone()]
        };
        let updates = self.lake.catalog().load_table(&idents[0]).await?;
        let snapshots = self.lake.catalog().load_table(&idents[1]).await?;
        let changes = load_changes(&updates).await?;
        let mut state = self.state();
        let epoch = state.kafka.as_ref().map_or(0, |k| k.epoch + 1);
        let landing = Landing::new([&updates, &snapshots], epoch)?;
        state.synced = changes
            .iter()
            .filter_map(|(book, list)| list.last().map(|r| (book.clone(), r.kind == BookEventKind::Synced)))
            .collect();
        state.changes = changes;
        state.tables = [updates, snapshots];
        state.tails = [Vec::new(), Vec::new()];
        state.landing = [Arc::new(Vec::new()), Arc::new(Vec::new())];
        state.kafka = Some(landing);
        metrics::counter!("k2_book_landing_resets_total").increment(1);
        Ok(())
    }

    /// Commits the records being landed in `table` with the offsets they
    /// reach (see the module's documentation).
    pub(super) async fn commit_landed(
        &self,
        table: BookTable,
        records: Arc<Vec<BookEventV2>>,
    ) -> Result<usize, LakeError> {
        let i = slot(table);
        let (ident, base, next) = {
            let state = self.state();
            let Some(k) = state.kafka.as_ref() else { return Ok(0) };
            (state.tables[i].identifier().clone(), k.committed[i].clone(), k.landing_next[i].clone())
        };
        let current = self.lake.catalog().load_table(&ident).await?;
        let found = offsets_of(&current)?;
        let covers =
            |offsets: &Offsets| next.iter().all(|(t, ps)| ps.iter().all(|(p, n)| offset(offsets, t, *p) == Some(*n)));
        // A commit that landed though its answer was lost.
        let landed_before = covers(&found) && written_by(&current, self.lake.writer());
        let (committed, offsets) = if landed_before {
            (current, found)
        } else {
            for (topic, partitions) in &next {
                for &partition in partitions.keys() {
                    let (expected, found) = (offset(&base, topic, partition), offset(&found, topic, partition));
                    if expected != found {
                        self.reset_committing().await?;
                        return Err(LakeError::Fenced { topic: topic.clone(), partition, expected, found });
                    }
                }
            }
            let mut offsets = found;
            merge_offsets(&mut offsets, &next);
            let newest = records.iter().map(|r| r.ingestion_timestamp).max();
            let until = complete_until(&current).max(newest).map_or(0, Timestamp::as_micros);
            let schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(current.metadata().current_schema())?);
            let mut sorted = records.as_ref().clone();
            sorted.sort_by(|a, b| (&a.symbol, a.ingestion_timestamp).cmp(&(&b.symbol, b.ingestion_timestamp)));
            let batch = tables::to_batch(table, &schema, &sorted)?;
            let files = write_run(current.clone(), batch, unique_prefix(0), FileShape::FLUSH).await?;
            let summary = HashMap::from([
                (COMPLETE_UNTIL.to_owned(), until.to_string()),
                (KAFKA_OFFSETS.to_owned(), serde_json::to_string(&offsets).unwrap_or_default()),
                (crate::lake::summary::WRITER.to_owned(), self.lake.writer().to_owned()),
            ]);
            let tx = Transaction::new(&current);
            let action = tx.fast_append().with_check_duplicate(false);
            let tx = action.add_data_files(files).set_snapshot_properties(summary).apply(tx)?;
            // Against the table as checked above, never re-applied on a
            // newer one: a conflict is tried again from the start.
            let pinned = PinnedCatalog { inner: self.lake.catalog().clone(), base: current };
            (tx.commit(&pinned).await?, offsets)
        };
        let mut state = self.state();
        state.tables[i] = committed;
        state.landing[i] = Arc::new(Vec::new());
        if let Some(k) = state.kafka.as_mut() {
            k.committed[i] = offsets;
        }
        metrics::counter!("k2_book_records_committed_total", "table" => table.name()).increment(records.len() as u64);
        Ok(records.len())
    }

    /// Kafka mode: waits (up to `within`) until this log has read the
    /// partition holding `symbol`'s book up to its end as it is now, so
    /// that an instant before now is answered with every record stamped by
    /// then; whether it has. A book this log has read nothing of is not
    /// waited for (the tables hold all of it, or another flusher reads it).
    pub async fn read_to_now(&self, exchange: &str, symbol: &str, within: Duration) -> bool {
        let book = (compact_str::CompactString::from(exchange), compact_str::CompactString::from(symbol));
        let Some(Some((topic, partition))) = self.kafka(|k, _| k.books.get(&book).cloned()) else { return true };
        let Some(ends) = self.log_ends.get().cloned() else { return true };
        let (t, p) = (topic.clone(), partition);
        let end = match tokio::task::spawn_blocking(move || ends.end_of(&t, p)).await {
            Ok(Some(end)) => end,
            _ => return false,
        };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let read = self.kafka(|k, _| k.expect.get(&(topic.clone(), partition)).copied()).flatten().unwrap_or(0);
            if read >= end {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                metrics::counter!("k2_book_queries_behind_log_total").increment(1);
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Per partition read, the lower of the two tables' offsets: where a
    /// reader that lost everything not committed would start.
    pub fn landed_offsets(&self) -> Vec<(String, i32, i64)> {
        self.kafka(|k, _| {
            k.expect.keys().map(|(t, p)| (t.clone(), *p, k.committed(0, t, *p).min(k.committed(1, t, *p)))).collect()
        })
        .unwrap_or_default()
    }

    /// The partitions this log has read and the next offset of each (for
    /// the lander's catch-up at a graceful stop).
    pub fn read_up_to(&self) -> Vec<(String, i32, i64)> {
        self.kafka(|k, _| k.expect.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect()).unwrap_or_default()
    }
}

/// The latest stamp of `book`'s records in `table` stamped before `before`:
/// the records after a marker (the next producer's) may be in a table
/// already, and must not date it.
async fn max_stamp(
    table: &Table,
    (exchange, symbol): (&str, &str),
    before: Timestamp,
) -> Result<Option<i64>, LakeError> {
    if table.metadata().current_snapshot().is_none() {
        return Ok(None);
    }
    let filter = Reference::new("symbol")
        .equal_to(Datum::string(symbol))
        .and(Reference::new("exchange").equal_to(Datum::string(exchange)))
        .and(Reference::new("ingestion_timestamp").less_than(Datum::timestamptz_micros(before.as_micros())));
    latest_stamp(table, filter, |t| t < before.as_micros()).await
}
