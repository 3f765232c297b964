//! The Kafka sink: an idempotent `FutureProducer` (acks=all, lz4, linger and
//! batch size from the configuration). A batch is taken once every record is
//! in librdkafka's queue (a full queue makes the sink stage wait: back-
//! pressure); deliveries are awaited on a separate task that feeds metrics.
//! Nothing here blocks an actor thread (no `flush()`).
//!
//! While the Kafka breaker is open the sink holds each batch before
//! librdkafka: queued there, records would wait only until
//! `message_timeout` and then fail. Held, they push back up the pipeline (a
//! batch source waits, the ladder climbs and live sources pause at its top,
//! or shed only where the config says so) and go out in order once the
//! cool-down lets a probe through. For live sources a batch held longer than
//! `kafka.spill_after` goes to a spill on disk instead (and so does every
//! batch after it, until the spill is replayed, which keeps the order); the
//! spill replayer ([`KafkaReplay`], driven by the `spill-replay` actor)
//! sends the segments into Kafka, oldest first, once the breaker closes,
//! and deletes each when the broker has acknowledged every record of it. A
//! process stopping while batches are held spills them too, for the next
//! process on the data directory to replay.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use k2_core::MarketEvent;
use k2_core::codec::wire::{SchemaIds, WireCodec};
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::sync::{Mutex, Notify};

use super::spill::{Spill, SpillError};
use super::{Pending, Sink, SinkError};
use crate::kafka::KafkaError;
use crate::kafka::schemas::SchemaSource;
use crate::kafka::topics::{ensure, is_market_topic, topic_for};
use crate::runtime::breaker::CircuitBreaker;
use crate::runtime::config::KafkaConfig;
use crate::runtime::errors::Retry;
use crate::state::shared::{Settlement, SharedState};

/// librdkafka's own view of the brokers. Deliveries fail only after
/// `message_timeout` (records wait in its queue meanwhile), so a broker that
/// is down shows first here: each failed connection attempt counts against
/// the Kafka breaker.
struct BrokerWatch {
    breaker: Arc<CircuitBreaker>,
}

impl ClientContext for BrokerWatch {
    fn error(&self, error: RdKafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka producer: broker trouble");
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.breaker.failure();
        }
    }
}

/// What the sink and its batch futures share.
struct Shared {
    producer: FutureProducer<BrokerWatch>,
    admin: AdminClient<DefaultClientContext>,
    config: KafkaConfig,
    schemas: SchemaSource,
    /// Topics created and their value schema's id.
    topics: Mutex<HashMap<String, u32>>,
    in_flight: AtomicUsize,
    /// Records held back while the breaker is open.
    held: AtomicUsize,
    /// Set at shutdown: nothing is held any more.
    releasing: AtomicBool,
    released: Notify,
    /// Trades and quotes the broker acknowledged, for the shutdown report.
    delivered: [AtomicU64; 2],
    settled: Notify,
    /// Fed by every delivery and every admin or registry failure.
    breaker: Arc<CircuitBreaker>,
    /// Redis, told of each delivered batch: a record is durable once the
    /// broker has it.
    durable: OnceLock<Arc<SharedState>>,
    /// Live sources: where batches held past `spill_after` go.
    spill: OnceLock<Arc<Spill>>,
    /// A spilled segment is being put into librdkafka: new batches go to
    /// the spill behind it.
    replaying: AtomicBool,
}

/// What a held batch does next.
enum Held {
    /// Into librdkafka.
    Go,
    /// To the spill.
    Spill,
}

pub struct KafkaSink {
    shared: Arc<Shared>,
}

/// A failure to register a schema or encode a record: the broker and the
/// registry come back, so a retry may help.
fn sink_error(reason: impl std::fmt::Display) -> SinkError {
    SinkError { sink: "kafka", reason: reason.to_string(), retry: Retry::Transient }
}

impl KafkaSink {
    /// A reading of the records held back by an open breaker or handed to
    /// librdkafka and neither acknowledged nor failed yet: in Kafka mode,
    /// what is accepted but not durable (the degradation ladder's lag).
    pub fn in_flight(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || (shared.in_flight.load(Ordering::Acquire) + shared.held.load(Ordering::Acquire)) as u64
    }

    /// Lets every held batch go, now and from now on: a process shutting
    /// down with the broker away cannot wait for it. With a spill they go
    /// to it (the next process on the data directory replays them);
    /// without, to librdkafka, where they fail after `message_timeout` like
    /// any undelivered record (counted; their source's marks do not pass
    /// them, so the next process fetches them as a gap).
    pub fn release_held(&self) -> impl Fn() + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || {
            shared.releasing.store(true, Ordering::Release);
            shared.released.notify_waiters();
        }
    }

    /// A reading of the trades and quotes the broker has acknowledged so far.
    pub fn delivered(&self) -> impl Fn() -> (u64, u64) + Send + Sync + 'static {
        let shared = self.shared.clone();
        move || (shared.delivered[0].load(Ordering::Acquire), shared.delivered[1].load(Ordering::Acquire))
    }

    pub fn new(config: &KafkaConfig, schemas: SchemaSource, breaker: Arc<CircuitBreaker>) -> Result<Self, KafkaError> {
        let client = crate::kafka::producer_config(config);
        let producer: FutureProducer<BrokerWatch> =
            client.create_with_context(BrokerWatch { breaker: breaker.clone() })?;
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create()?;
        Ok(Self {
            shared: Arc::new(Shared {
                producer,
                admin,
                config: config.clone(),
                schemas,
                topics: Mutex::new(HashMap::new()),
                in_flight: AtomicUsize::new(0),
                held: AtomicUsize::new(0),
                releasing: AtomicBool::new(false),
                released: Notify::new(),
                delivered: [AtomicU64::new(0), AtomicU64::new(0)],
                settled: Notify::new(),
                breaker,
                durable: OnceLock::new(),
                spill: OnceLock::new(),
                replaying: AtomicBool::new(false),
            }),
        })
    }

    /// Batches held past `kafka.spill_after` go to `spill` (live sources
    /// only: a batch source waits). The handle replays it.
    pub fn spill_to(&self, spill: Arc<Spill>) -> KafkaReplay {
        let _ = self.shared.spill.set(spill);
        KafkaReplay { shared: self.shared.clone() }
    }
}

/// Puts spilled batches into Kafka, oldest first.
#[derive(Clone)]
pub struct KafkaReplay {
    shared: Arc<Shared>,
}

/// Clears the flag it holds when dropped.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl KafkaReplay {
    pub fn spill(&self) -> Option<&Arc<Spill>> {
        self.shared.spill.get()
    }

    /// While the Kafka breaker is closed, puts the spilled segments into
    /// librdkafka, oldest first, until none is left (batches arriving
    /// meanwhile go to the spill behind them, and are taken in turn), then
    /// waits for their deliveries and deletes each segment; records whose
    /// delivery failed go back to the spill. The last segment's number and
    /// how many records went, or `None` when there was nothing to do. A
    /// crash before a deletion replays that segment again: the second
    /// copies are dropped by the flushers (`kafka.duplicate_span`).
    pub async fn replay(&self) -> Result<Option<(u64, usize)>, SpillError> {
        let shared = &self.shared;
        let Some(spill) = shared.spill.get() else { return Ok(None) };
        if !shared.breaker.open_for().is_zero() || spill.is_empty() {
            return Ok(None);
        }
        if shared.replaying.swap(true, Ordering::AcqRel) {
            return Ok(None);
        }
        let replaying = ClearOnDrop(&shared.replaying);
        let mut sent = Vec::new();
        let mut problem = None;
        while shared.breaker.open_for().is_zero() {
            let s = spill.clone();
            let taken = match tokio::task::spawn_blocking(move || s.take_oldest()).await {
                Ok(taken) => taken,
                Err(e) => Err(SpillError::Task(e.to_string())),
            };
            let (seq, events) = match taken {
                Ok(Some(segment)) => segment,
                Ok(None) => break,
                Err(e) => {
                    problem = Some(e);
                    break;
                }
            };
            let n = events.len();
            let (done, outcome) = tokio::sync::oneshot::channel();
            if let Err(e) = shared.clone().enqueue(events, Some(done)).await {
                spill.put_back(seq, n);
                problem = Some(SpillError::Task(e.reason));
                break;
            }
            sent.push((seq, n, outcome));
        }
        // Everything taken is in librdkafka's queue, in order: later
        // batches may follow it there.
        drop(replaying);
        let mut last = None;
        for (seq, n, outcome) in sent {
            let failed = outcome.await.unwrap_or_default();
            if !failed.is_empty() {
                tracing::warn!(records = failed.len(), "replayed records not delivered: back to the spill");
                let s = spill.clone();
                let appended = tokio::task::spawn_blocking(move || s.append(&failed))
                    .await
                    .map_err(|e| SpillError::Task(e.to_string()))
                    .and_then(|written| written);
                if let Err(e) = appended {
                    // The segment is replayed again: its delivered records
                    // become second copies, which the flushers drop.
                    spill.put_back(seq, n);
                    problem.get_or_insert(e);
                    continue;
                }
            }
            spill.discard(seq);
            metrics::counter!("k2_spill_rows_replayed_total").increment(n as u64);
            last = Some((seq, last.map_or(0, |(_, total)| total) + n));
        }
        match problem {
            Some(e) => Err(e),
            None => Ok(last),
        }
    }
}

impl Shared {
    /// The topic's schema id, creating the topic and registering
    /// `{topic}-value` the first time.
    async fn schema_id(&self, topic: &str, trades: bool) -> Result<u32, KafkaError> {
        let mut known = self.topics.lock().await;
        if let Some(id) = known.get(topic) {
            return Ok(*id);
        }
        ensure(&self.admin, &self.config, topic).await.inspect_err(|_| self.breaker.failure())?;
        let avsc = if trades { k2_core::schema::TRADE_V2_AVSC } else { k2_core::schema::QUOTE_V2_AVSC };
        let id = self.schemas.id(&format!("{topic}-value"), avsc).await?;
        known.insert(topic.to_owned(), id);
        Ok(id)
    }

    /// The spill, when batches go to it after `spill_after`.
    fn spill(&self) -> Option<&Arc<Spill>> {
        self.spill.get().filter(|_| !self.config.spill_after.is_zero())
    }

    /// Waits while the breaker is open, counting the batch as held: until
    /// it closes (go), or with a spill (`may_spill`) until `spill_after` or
    /// the shutdown (spill).
    async fn hold(&self, records: usize, may_spill: bool) -> Held {
        let spill = may_spill && self.spill().is_some();
        let releasing = || self.releasing.load(Ordering::Acquire);
        if self.breaker.open_for().is_zero() {
            return Held::Go;
        }
        if releasing() {
            return if spill { Held::Spill } else { Held::Go };
        }
        let held = self.held.fetch_add(records, Ordering::AcqRel) + records;
        metrics::gauge!("k2_kafka_producer_held_records").set(held as f64);
        tracing::warn!(records, cause = ?self.breaker.cause(), "the Kafka breaker is open: holding the batch");
        let since = Instant::now();
        let next = loop {
            let left = self.breaker.open_for();
            if left.is_zero() {
                break Held::Go;
            }
            if releasing() {
                break if spill { Held::Spill } else { Held::Go };
            }
            let mut wait = left.min(Duration::from_secs(1));
            if spill {
                match self.config.spill_after.checked_sub(since.elapsed()) {
                    Some(rest) if !rest.is_zero() => wait = wait.min(rest),
                    _ => break Held::Spill,
                }
            }
            let released = self.released.notified();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = released => {}
            }
        };
        let held = self.held.fetch_sub(records, Ordering::AcqRel) - records;
        metrics::gauge!("k2_kafka_producer_held_records").set(held as f64);
        next
    }

    /// Appends `events` to the spill (off the runtime's threads); gives
    /// them back when the disk refuses them.
    async fn spill_batch(&self, events: Vec<MarketEvent>) -> Result<(), Vec<MarketEvent>> {
        let Some(spill) = self.spill().cloned() else { return Err(events) };
        let written = tokio::task::spawn_blocking(move || {
            let written = spill.append(&events);
            (written, events)
        })
        .await;
        match written {
            Ok((Ok(()), events)) => {
                tracing::info!(records = events.len(), "the Kafka breaker is open: batch spilled to disk");
                Ok(())
            }
            Ok((Err(e), events)) => {
                tracing::error!(error = %e, "spill write failed; holding the batch instead");
                metrics::counter!("k2_spill_write_failures_total").increment(1);
                Err(events)
            }
            Err(e) => {
                tracing::error!(error = %e, "spill write task failed");
                Err(Vec::new())
            }
        }
    }

    async fn send(self: Arc<Self>, events: Vec<MarketEvent>) -> Result<(), SinkError> {
        // Behind batches already spilled (or being replayed): order kept.
        let mut events = events;
        let behind = self.spill().is_some_and(|s| !s.is_empty()) || self.replaying.load(Ordering::Acquire);
        let mut may_spill = true;
        if behind {
            match self.spill_batch(events).await {
                Ok(()) => return Ok(()),
                Err(back) => (events, may_spill) = (back, false),
            }
        }
        if let Held::Spill = self.hold(events.len(), may_spill).await {
            match self.spill_batch(events).await {
                Ok(()) => return Ok(()),
                Err(back) => {
                    events = back;
                    self.hold(events.len(), false).await;
                }
            }
        }
        self.enqueue(events, None).await
    }

    /// Hands `events` to librdkafka in order; their deliveries are awaited
    /// on a task of their own, which sends `failed` the events that were not
    /// delivered.
    async fn enqueue(
        self: Arc<Self>,
        events: Vec<MarketEvent>,
        failed: Option<tokio::sync::oneshot::Sender<Vec<MarketEvent>>>,
    ) -> Result<(), SinkError> {
        let prefix = self.config.topic_prefix.clone();
        let mut deliveries: Vec<(usize, DeliveryFuture)> = Vec::with_capacity(events.len());
        // Which event each delivery carries, kept only when deliveries are
        // settled in Redis or failures are asked for.
        let track = self.durable.get().is_some() || failed.is_some();
        let mut sent: Vec<usize> = Vec::new();
        // Claims of records that will not be delivered, to release.
        let mut undelivered: Vec<(CompactString, uuid::Uuid)> = Vec::new();
        let mut frame = Vec::with_capacity(256);
        let started = Instant::now();
        // Topics of this batch: a batch spans few, so a short list beats
        // building each event's topic name and asking the shared map.
        let mut seen: Vec<((k2_core::AssetClass, bool, &str), String, WireCodec)> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let key = match event {
                MarketEvent::Trade(t) => (t.asset_class, true, t.exchange.as_str()),
                MarketEvent::Quote(q) => (q.asset_class, false, q.exchange.as_str()),
            };
            let at = match seen.iter().position(|(k, _, _)| *k == key) {
                Some(i) => i,
                None => {
                    let topic = topic_for(&prefix, event);
                    let id = self.schema_id(&topic, event.is_trade()).await.map_err(sink_error)?;
                    seen.push((key, topic, WireCodec::new(SchemaIds { trade: id, quote: id })));
                    seen.len() - 1
                }
            };
            let (_, topic, codec) = &seen[at];
            frame.clear();
            codec.encode_into(event, &mut frame).map_err(sink_error)?;
            let mut record = FutureRecord::to(topic).key(event.symbol()).payload(&frame);
            // A full queue is librdkafka saying "later": wait, never drop.
            let delivery = loop {
                match self.producer.send_result(record) {
                    Ok(d) => break Some(d),
                    Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        metrics::counter!("k2_kafka_queue_full_total").increment(1);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => {
                        // This record cannot be produced (too large, say):
                        // counted and reported; the rest of the batch goes on.
                        metrics::counter!("k2_kafka_produce_errors_total", "topic" => topic.clone()).increment(1);
                        tracing::error!(%topic, message_id = %event.message_id(), error = %e, "record refused by the producer");
                        if self.durable.get().is_some() {
                            undelivered.push((event.exchange().into(), event.message_id()));
                        }
                        break None;
                    }
                }
            };
            let Some(delivery) = delivery else { continue };
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            deliveries.push((at, delivery));
            if track {
                sent.push(index);
            }
        }
        let mut delivered = self.durable.get().map(|s| (s.clone(), Settlement::default()));
        // Deliveries settle later; the stage takes its next batch now.
        let shared = self.clone();
        let topics: Vec<String> = seen.into_iter().map(|(_, topic, _)| topic).collect();
        tokio::spawn(async move {
            // Metric handles once per topic, not per message.
            let produced: Vec<_> = topics
                .iter()
                .map(|t| metrics::counter!("k2_kafka_messages_produced_total", "topic" => t.clone()))
                .collect();
            let errors: Vec<_> = topics
                .iter()
                .map(|t| metrics::counter!("k2_kafka_produce_errors_total", "topic" => t.clone()))
                .collect();
            let mut not_delivered = Vec::new();
            let kind: Vec<usize> = topics
                .iter()
                .map(|t| usize::from(is_market_topic(&shared.config.topic_prefix, t) != Some(true)))
                .collect();
            let latency: Vec<_> =
                topics.iter().map(|t| metrics::histogram!("k2_kafka_delivery_seconds", "topic" => t.clone())).collect();
            let count = deliveries.len();
            for (i, (at, delivery)) in deliveries.into_iter().enumerate() {
                match delivery.await {
                    Ok(Ok(_)) => {
                        if let Some((_, settlement)) = delivered.as_mut()
                            && let Some(event) = sent.get(i).and_then(|&e| events.get(e))
                        {
                            settlement.add(event);
                        }
                        shared.breaker.success();
                        shared.delivered[kind[at]].fetch_add(1, Ordering::AcqRel);
                        produced[at].increment(1);
                        latency[at].record(started.elapsed().as_secs_f64());
                    }
                    // Failed, or cancelled with the producer.
                    outcome => {
                        if let Ok(Err((e, _))) = outcome {
                            tracing::error!(topic = %topics[at], error = %e, "delivery failed");
                        }
                        shared.breaker.failure();
                        errors[at].increment(1);
                        if let Some(event) = sent.get(i).and_then(|&e| events.get(e)) {
                            if shared.durable.get().is_some() {
                                undelivered.push((event.exchange().into(), event.message_id()));
                            }
                            if failed.is_some() {
                                not_delivered.push(event.clone());
                            }
                        }
                    }
                }
            }
            // Settled before the batch stops counting as in flight, so a
            // drain that sees nothing in flight also sees the settlement.
            if let Some((durable, settlement)) = delivered {
                durable.settle(settlement);
                durable.release(undelivered);
            }
            if let Some(failed) = failed {
                let _ = failed.send(not_delivered);
            }
            if count > 0 && shared.in_flight.fetch_sub(count, Ordering::AcqRel) == count {
                shared.settled.notify_waiters();
            }
        });
        Ok(())
    }

    async fn settle(&self) {
        loop {
            let settled = self.settled.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            settled.await;
        }
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    /// Records are durable once the broker acknowledges them.
    fn settle_with(&mut self, settle: Arc<SharedState>) -> bool {
        let _ = self.shared.durable.set(settle);
        true
    }

    fn write(&mut self, events: Vec<MarketEvent>) -> Result<Option<Pending>, SinkError> {
        Ok(Some(Box::pin(self.shared.clone().send(events))))
    }

    fn flush(&mut self) -> Option<Pending> {
        let shared = self.shared.clone();
        Some(Box::pin(async move {
            shared.settle().await;
            Ok(())
        }))
    }
}
