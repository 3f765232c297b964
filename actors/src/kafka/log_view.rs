//! The log past a snapshot: what makes a hybrid query exact on any process
//! in Kafka mode.
//!
//! A table's snapshot records, per partition, the next offset it does not
//! hold (`k2.kafka-offsets`, cumulative over every flusher). The records
//! from there on are on their way into the table, and the flushers will
//! land exactly those the consumer's rule takes ([`fate`]: not a dead
//! letter, not a second copy within the duplicate span, judged by the log
//! alone). So the snapshot plus those records, read up to each partition's
//! high watermark at the moment of the query, is every row once, whichever
//! flusher owns which partition and however far each has got. A flusher's
//! own tail is a part of the same records and is not read.
//!
//! Decoding the whole backlog for every query would cost as much as the
//! flushers' work: each partition's rows are kept decoded (Arrow batches in
//! the table's schema, with their offsets) and extended from where the last
//! query stopped, and the rows a newer snapshot holds are dropped from the
//! front. Between queries the cache holds at most `query.log_cache_rows`
//! rows per table; past that its largest partitions are forgotten and read again by
//! the next query that needs them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use k2_core::MarketEvent;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use tokio::sync::Mutex;

use super::consumer::{Decoders, Fate, fate};
use super::recent_ids::RecentIds;
use super::schemas::SchemaSource;
use super::topics::is_market_topic;
use crate::lake::TableKind;
use crate::lake::batch::{LakeRow, to_batch};
use crate::lake::summary::Offsets;
use crate::lake::tail::span;
use crate::runtime::config::KafkaConfig;

/// How long the list of market topics is trusted before it is read again: a
/// new topic (a new exchange) joins queries within this.
const TOPICS_EVERY: Duration = Duration::from_secs(3);

/// A read that gets no record for this long, short of the high watermarks
/// it set out to reach, fails: the broker stopped answering. Tansu 0.6 on
/// SQLite has paused 20 to 30 s between bursts of a large backlog; the
/// query's own time budget usually ends a read first.
const SILENCE: Duration = Duration::from_secs(60);

/// Why the log could not be read: the query cannot be answered exactly.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("reading the Kafka log past the snapshot: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("reading the Kafka log past the snapshot: {0}")]
    Stalled(String),
    #[error("building rows from the Kafka log: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// The rows past a snapshot, as a tail: batches in the table's schema, each
/// with its (lowest, highest) timestamp in µs.
pub struct LogRows {
    pub batches: Vec<RecordBatch>,
    pub spans: Vec<(i64, i64)>,
}

/// One query node's view of the market topics past the tables' snapshots.
pub struct LogView {
    config: KafkaConfig,
    cache_rows: usize,
    /// Metadata and offsets, on a connection of their own: a broker that
    /// holds a fetch (Tansu does, for want of data) would hold the offset
    /// requests queued behind it on the reader's.
    offsets: Arc<BaseConsumer>,
    /// Trades, quotes: one read at a time per table; concurrent queries wait
    /// and then find the rows cached.
    tables: [Mutex<TableLog>; 2],
}

struct TableLog {
    /// Each table reads with a client of its own: an assignment is the
    /// client's, and the two tables may be read at once.
    reader: StreamConsumer,
    decoders: Decoders,
    /// Topic → partition → what is decoded of it.
    partitions: BTreeMap<String, BTreeMap<i32, PartitionLog>>,
    topics: Option<(Instant, Topics)>,
}

/// Market topics with their partitions, each with its low watermark.
type Topics = Vec<(String, Vec<(i32, i64)>)>;

/// `ListOffsets` asks by timestamp; its two special timestamps (-1, -2)
/// ask for the ends, which librdkafka spells as these offsets.
const LATEST: Offset = Offset::End;
const EARLIEST: Offset = Offset::Beginning;

struct PartitionLog {
    /// Where the snapshot ends: records below are read only for their ids
    /// (the duplicate rule looks back `duplicate_span` offsets).
    from: i64,
    /// The next offset to read.
    next: i64,
    window: RecentIds,
    chunks: VecDeque<Chunk>,
    /// Rows of the read under way, with their offsets.
    pending: Vec<(i64, MarketEvent)>,
}

/// Decoded rows in offset order.
struct Chunk {
    offsets: Vec<i64>,
    batch: RecordBatch,
    span: (i64, i64),
}

impl PartitionLog {
    fn new(from: i64, span: i64, low: i64) -> Self {
        Self {
            from,
            next: from.saturating_sub(span).max(low).max(0),
            window: RecentIds::new(span),
            chunks: VecDeque::new(),
            pending: Vec::new(),
        }
    }

    fn rows(&self) -> usize {
        self.chunks.iter().map(|c| c.offsets.len()).sum::<usize>() + self.pending.len()
    }

    /// The snapshot now ends at `from`: its rows leave the front.
    fn advance(&mut self, from: i64) {
        self.from = from;
        while let Some(first) = self.chunks.front_mut() {
            let cut = first.offsets.partition_point(|&o| o < from);
            if cut == first.offsets.len() {
                self.chunks.pop_front();
                continue;
            }
            if cut > 0 {
                first.offsets.drain(..cut);
                first.batch = first.batch.slice(cut, first.batch.num_rows() - cut);
            }
            break;
        }
        self.pending.retain(|(o, _)| *o >= from);
    }

    /// The rows read into `pending` become a chunk.
    fn seal(&mut self, kind: TableKind, schema: &SchemaRef) -> Result<(), LogError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (offsets, events): (Vec<i64>, Vec<MarketEvent>) = std::mem::take(&mut self.pending).into_iter().unzip();
        // `fate` gave this table's kind only: the filters drop nothing.
        let (batch, span) = match kind {
            TableKind::Trades => rows(
                schema,
                events.into_iter().filter_map(|e| match e {
                    MarketEvent::Trade(t) => Some(t),
                    MarketEvent::Quote(_) => None,
                }),
            )?,
            TableKind::Quotes => rows(
                schema,
                events.into_iter().filter_map(|e| match e {
                    MarketEvent::Quote(q) => Some(q),
                    MarketEvent::Trade(_) => None,
                }),
            )?,
        };
        self.chunks.push_back(Chunk { offsets, batch, span });
        Ok(())
    }
}

/// `rows` as a batch in the table's schema, with their time span.
fn rows<R: LakeRow>(schema: &SchemaRef, rows: impl Iterator<Item = R>) -> Result<(RecordBatch, (i64, i64)), LogError> {
    let rows: Vec<R> = rows.collect();
    Ok((to_batch(schema, &rows)?, span(&rows)))
}

impl LogView {
    pub fn new(config: &KafkaConfig, schemas: SchemaSource, cache_rows: usize) -> Result<Self, LogError> {
        // Assigned partitions only: the group id is never joined nor
        // committed to, but librdkafka wants one for a consumer.
        let reader = || -> Result<StreamConsumer, rdkafka::error::KafkaError> {
            ClientConfig::new()
                .set("bootstrap.servers", &config.bootstrap_servers)
                .set("group.id", format!("{}k2-query-{}", config.topic_prefix, uuid::Uuid::new_v4().simple()))
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                // A snapshot's offset below what retention kept reads from
                // the oldest record kept, as the flushers do.
                .set("auto.offset.reset", "earliest")
                .set("receive.message.max.bytes", (256 << 20).to_string())
                .set("max.partition.fetch.bytes", config.fetch_partition_bytes.to_string())
                .set("fetch.max.bytes", config.fetch_max_bytes.to_string())
                .set("fetch.wait.max.ms", config.fetch_wait.as_millis().to_string())
                .create()
        };
        let offsets: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("group.id", format!("{}k2-query-offsets", config.topic_prefix))
            .set("enable.auto.commit", "false")
            .create()?;
        let table = || -> Result<Mutex<TableLog>, LogError> {
            Ok(Mutex::new(TableLog {
                reader: reader()?,
                decoders: Decoders::new(schemas.clone(), None),
                partitions: BTreeMap::new(),
                topics: None,
            }))
        };
        Ok(Self { config: config.clone(), cache_rows, offsets: Arc::new(offsets), tables: [table()?, table()?] })
    }

    /// Every row of `kind`'s market topics after `covered` (a snapshot's
    /// offsets), up to the high watermarks read now, as the flushers will
    /// land them.
    pub async fn after(&self, kind: TableKind, schema: &SchemaRef, covered: &Offsets) -> Result<LogRows, LogError> {
        let slot = match kind {
            TableKind::Trades => &self.tables[0],
            TableKind::Quotes => &self.tables[1],
        };
        let mut guard = slot.lock().await;
        let log = &mut *guard;
        let topics = self.topics(log, kind).await?;
        let marks = self.watermarks(&topics).await?;
        let span = self.config.duplicate_span;
        // Where each partition's read starts and must reach.
        let mut want: Vec<(String, i32, i64)> = Vec::new();
        for (topic, partition, low, high) in marks {
            let from = covered.get(&topic).and_then(|p| p.get(&partition)).copied().unwrap_or(0).max(low);
            let parts = log.partitions.entry(topic.clone()).or_default();
            match parts.get_mut(&partition) {
                // A snapshot never goes back; if it did (a table restored),
                // the cache starts over.
                Some(p) if from >= p.from => p.advance(from),
                _ => {
                    parts.insert(partition, PartitionLog::new(from, span, low));
                }
            }
            if parts.get(&partition).is_some_and(|p| p.next < high) {
                want.push((topic, partition, high));
            }
        }
        if !want.is_empty() {
            let read = self.read(log, &want).await;
            // Unassigned whatever happened: nothing is fetched between
            // queries.
            let _ = log.reader.unassign();
            read?;
        }
        let mut rows = LogRows { batches: Vec::new(), spans: Vec::new() };
        let mut cached = 0;
        for p in log.partitions.values_mut().flat_map(|m| m.values_mut()) {
            p.seal(kind, schema)?;
            cached += p.rows();
            for c in &p.chunks {
                rows.batches.push(c.batch.clone());
                rows.spans.push(c.span);
            }
        }
        self.bound(kind, log, cached);
        Ok(rows)
    }

    /// Reads each wanted partition from its next offset up to its target.
    async fn read(&self, log: &mut TableLog, want: &[(String, i32, i64)]) -> Result<(), LogError> {
        let mut list = TopicPartitionList::new();
        let mut left = 0usize;
        for (topic, partition, _) in want {
            let next = log.partitions[topic][partition].next;
            list.add_partition_offset(topic, *partition, Offset::Offset(next))?;
            left += 1;
        }
        log.reader.assign(&list)?;
        let targets: BTreeMap<(&str, i32), i64> = want.iter().map(|(t, p, h)| ((t.as_str(), *p), *h)).collect();
        let mut read = 0u64;
        while left > 0 {
            let m = match tokio::time::timeout(SILENCE, log.reader.recv()).await {
                Ok(m) => m?,
                Err(_) => {
                    return Err(LogError::Stalled(format!(
                        "no record for {SILENCE:?} with {left} partition(s) short of their high watermarks"
                    )));
                }
            };
            let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
            let Some(&target) = targets.get(&(topic, partition)) else { continue };
            let Some(p) = log.partitions.get_mut(topic).and_then(|t| t.get_mut(&partition)) else { continue };
            // Fetched for an earlier read, or past this read's end.
            if offset < p.next || p.next >= target {
                continue;
            }
            if offset >= target {
                // The log lost the records up to the target (retention).
                p.next = target;
                left -= 1;
                continue;
            }
            let Some(is_trades) = is_market_topic(&self.config.topic_prefix, topic) else { continue };
            let payload = m.payload().unwrap_or_default();
            if offset < p.from {
                // Below the snapshot's end: only its id counts, as in the
                // consumer's recall.
                if let Ok(event) = log.decoders.decode(topic, payload).await {
                    p.window.note(offset, event.message_id());
                }
            } else {
                let window = &mut p.window;
                let note = |e: &MarketEvent| window.note(offset, e.message_id());
                if let Fate::Row(event) =
                    fate(&mut log.decoders, topic, is_trades, payload, self.config.max_record_bytes, note).await
                {
                    p.pending.push((offset, event));
                }
            }
            p.next = offset + 1;
            read += 1;
            if p.next >= target {
                left -= 1;
            }
        }
        metrics::counter!("k2_query_log_records_read_total").increment(read);
        Ok(())
    }

    /// The market topics of `kind`, their partitions and low watermarks
    /// (read again every [`TOPICS_EVERY`]: retention moves them seldom, and
    /// a read below one starts at it anyway).
    async fn topics(&self, log: &mut TableLog, kind: TableKind) -> Result<Topics, LogError> {
        if let Some((at, topics)) = &log.topics
            && at.elapsed() < TOPICS_EVERY
        {
            return Ok(topics.clone());
        }
        let client = self.offsets.clone();
        let prefix = self.config.topic_prefix.clone();
        let trades = kind == TableKind::Trades;
        let topics = tokio::task::spawn_blocking(move || {
            let metadata = client.fetch_metadata(None, Duration::from_secs(5))?;
            let names: Vec<(String, Vec<i32>)> = metadata
                .topics()
                .iter()
                .filter(|t| is_market_topic(&prefix, t.name()) == Some(trades))
                .map(|t| (t.name().to_owned(), t.partitions().iter().map(|p| p.id()).collect()))
                .collect();
            let lows = ends(&client, &names, EARLIEST)?;
            Ok::<_, rdkafka::error::KafkaError>(
                names
                    .into_iter()
                    .map(|(t, parts)| {
                        let with_low =
                            parts.iter().map(|p| (*p, lows.get(&(t.clone(), *p)).copied().unwrap_or(0))).collect();
                        (t, with_low)
                    })
                    .collect::<Topics>(),
            )
        })
        .await
        .map_err(|e| LogError::Stalled(format!("listing topics: {e}")))??;
        log.topics = Some((Instant::now(), topics.clone()));
        Ok(topics)
    }

    /// Each partition's (low, high) watermarks: the high ones read now, in
    /// one request for them all.
    async fn watermarks(&self, topics: &Topics) -> Result<Vec<(String, i32, i64, i64)>, LogError> {
        let client = self.offsets.clone();
        let topics = topics.clone();
        tokio::task::spawn_blocking(move || {
            let names: Vec<(String, Vec<i32>)> =
                topics.iter().map(|(t, parts)| (t.clone(), parts.iter().map(|(p, _)| *p).collect())).collect();
            let highs = ends(&client, &names, LATEST)?;
            let mut out = Vec::new();
            for (topic, parts) in topics {
                for (p, low) in parts {
                    // A broker that answers the ListOffsets round without an
                    // offset for it is asked the long way.
                    let high = match highs.get(&(topic.clone(), p)) {
                        Some(high) => *high,
                        None => client.fetch_watermarks(&topic, p, Duration::from_secs(5))?.1,
                    };
                    out.push((topic.clone(), p, low, high));
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| LogError::Stalled(format!("reading high watermarks: {e}")))?
    }

    /// Keeps at most `cache_rows` rows decoded between queries: the largest
    /// partitions go first, to be read again when next asked for.
    fn bound(&self, kind: TableKind, log: &mut TableLog, mut cached: usize) {
        while cached > self.cache_rows {
            let largest = log
                .partitions
                .iter()
                .flat_map(|(t, m)| m.iter().map(move |(p, l)| (l.rows(), t.clone(), *p)))
                .max_by_key(|(rows, _, _)| *rows);
            let Some((rows, topic, partition)) = largest else { break };
            if rows == 0 {
                break;
            }
            if let Some(m) = log.partitions.get_mut(&topic) {
                m.remove(&partition);
            }
            cached -= rows;
        }
        metrics::gauge!("k2_query_log_cache_rows", "table" => kind.name()).set(cached as f64);
    }
}

/// The first (`EARLIEST`) or next (`LATEST`) offset of every partition of
/// `topics`, by one `ListOffsets` round.
fn ends(
    client: &BaseConsumer,
    topics: &[(String, Vec<i32>)],
    which: Offset,
) -> Result<BTreeMap<(String, i32), i64>, rdkafka::error::KafkaError> {
    let mut list = TopicPartitionList::new();
    for (topic, parts) in topics {
        for p in parts {
            list.add_partition_offset(topic, *p, which)?;
        }
    }
    if list.count() == 0 {
        return Ok(BTreeMap::new());
    }
    let answered = client.offsets_for_times(list, Duration::from_secs(5))?;
    let mut out = BTreeMap::new();
    for e in answered.elements() {
        e.error()?;
        if let Offset::Offset(o) = e.offset() {
            out.insert((e.topic().to_owned(), e.partition()), o);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    /// A chunk whose one column holds each row's offset.
    fn chunk(offsets: &[i64]) -> Chunk {
        let schema = Arc::new(Schema::new(vec![Field::new("offset", DataType::Int64, false)]));
        let column = Arc::new(Int64Array::from(offsets.to_vec()));
        let batch = RecordBatch::try_new(schema, vec![column]).unwrap();
        Chunk { offsets: offsets.to_vec(), batch, span: (0, 0) }
    }

    fn rows(p: &PartitionLog) -> Vec<i64> {
        p.chunks
            .iter()
            .flat_map(|c| {
                let column = c.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                assert_eq!(column.len(), c.offsets.len(), "the offsets follow the rows");
                column.values().to_vec()
            })
            .collect()
    }

    #[test]
    fn a_newer_snapshot_slices_the_rows_it_holds_off_the_front() {
        let mut p = PartitionLog::new(10, 5, 0);
        assert_eq!((p.from, p.next), (10, 5), "the duplicate span before the snapshot's end is read for its ids");
        // Offsets 12 and 15 were dead letters or second copies: no rows.
        p.chunks.push_back(chunk(&[10, 11, 13, 14]));
        p.chunks.push_back(chunk(&[16, 17, 18]));
        p.next = 19;
        p.advance(14);
        assert_eq!(rows(&p), vec![14, 16, 17, 18]);
        p.advance(16);
        assert_eq!(rows(&p), vec![16, 17, 18]);
        assert_eq!(p.chunks.len(), 1, "an emptied chunk is dropped");
        p.advance(19);
        assert!(rows(&p).is_empty());
        assert_eq!(p.next, 19, "reading goes on where it stopped");
    }

    #[test]
    fn reading_starts_no_lower_than_the_log_keeps() {
        let p = PartitionLog::new(100, 1000, 40);
        assert_eq!((p.from, p.next), (100, 40));
        let p = PartitionLog::new(3, 1000, 0);
        assert_eq!(p.next, 0);
    }
}
