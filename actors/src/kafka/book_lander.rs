//! Kafka mode's consuming side for order books: a supervised actor whose
//! task reads the book topics (`market.{asset_class}.book.{exchange}`) as
//! a member of the group `{prefix}{kafka.group}.books` and feeds the
//! records to the book log, which lands them in the book tables with the
//! offsets they reach ([`crate::lake::books::BookLog::land`]).
//!
//! Where each partition's reading starts is the tables' business, not the
//! group's: the log asks for a seek when the first record it gets from a
//! partition is past the tables' offset, and skips records below it. The
//! group's committed offsets (the lower of the two tables', every 3 s) only
//! spare a new member reading a partition from its start. A record that is
//! no book record goes to `{topic}.dlq` with its reason.
//!
//! A member left with no partition while book topics exist (a broker that
//! kept a killed predecessor's assignment, as Tansu 0.6 does) rejoins after
//! the session timeout, then at doubling intervals.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use k2_core::codec::book::decode_book;
use k2_core::codec::wire::split_frame;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

use super::consumer::dead_letter;
use super::schemas::SchemaSource;
use super::topics::book_pattern;
use super::{KafkaError, consumer_config};
use crate::lake::books::BookLog;
use crate::lake::books::landing::Read;
use crate::runtime::config::KafkaConfig;
use crate::runtime::health::Probe;
use crate::runtime::messages::Fault;
use crate::runtime::supervision::{Supervise, Supervision, restartable};

pub const NAME: &str = "book-lander";

/// Records taken per batch at most.
const BATCH: usize = 2048;

pub struct BookLanderActor {
    config: KafkaConfig,
    log: Arc<BookLog>,
    schemas: SchemaSource,
    task: Option<tokio::task::AbortHandle>,
    /// Drills: makes the task itself panic, as a real fault in it would.
    inject: Arc<tokio::sync::Notify>,
    supervision: Supervision,
}

impl BookLanderActor {
    pub fn new(config: KafkaConfig, log: Arc<BookLog>, schemas: SchemaSource, supervision: Supervision) -> Self {
        Self { config, log, schemas, task: None, inject: Arc::new(tokio::sync::Notify::new()), supervision }
    }

    fn join(&mut self, ctx: &mut Context<Self>) {
        // A drill aimed at an earlier task must not kill this one.
        self.inject = Arc::new(tokio::sync::Notify::new());
        let lander = Lander {
            inject: self.inject.clone(),
            config: self.config.clone(),
            log: self.log.clone(),
            schemas: self.schemas.clone(),
            probe: self.supervision.probe().clone(),
            kinds: std::collections::HashMap::new(),
        };
        let task = match lander.start() {
            Ok(task) => task,
            Err(e) => {
                self.supervision.fail(format!("starting the book lander: {e}"));
                ctx.stop();
                return;
            }
        };
        self.task = Some(task.abort_handle());
        ctx.spawn(task.into_actor(self).map(|ended, act, ctx| {
            let reason = crate::runtime::supervision::task_ended(ended, "the book lander");
            act.task = None;
            act.supervision.fail(reason);
            ctx.stop();
        }));
    }
}

impl Actor for BookLanderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        // From a spawned step: after a restart the backoff holds it.
        ctx.spawn(async {}.into_actor(self).map(|(), act, ctx| act.join(ctx)));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

restartable!(BookLanderActor);

impl Supervise for BookLanderActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    fn reset(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Handler<Fault> for BookLanderActor {
    type Result = ();

    fn handle(&mut self, fault: Fault, ctx: &mut Context<Self>) {
        tracing::warn!(actor = NAME, ?fault, "injecting fault");
        match fault {
            Fault::Panic | Fault::PanicOnBatch => self.inject.notify_one(),
            Fault::Stop => ctx.stop(),
        }
    }
}

/// The task's state.
struct Lander {
    config: KafkaConfig,
    log: Arc<BookLog>,
    schemas: SchemaSource,
    probe: Probe,
    inject: Arc<tokio::sync::Notify>,
    /// Schema id → whether it is the book record.
    kinds: std::collections::HashMap<u32, bool>,
}

impl Lander {
    fn start(self) -> Result<tokio::task::JoinHandle<String>, KafkaError> {
        let config = &self.config;
        let consumer: StreamConsumer =
            consumer_config(config, &format!("{}{}.books", config.topic_prefix, config.group))
                // A book query waits for the lander to reach the log's end: a
                // broker holding each fetch for the whole wait (Tansu does)
                // would make every such query that slow.
                .set("fetch.wait.max.ms", config.fetch_wait.min(Duration::from_millis(100)).as_millis().to_string())
                .create()?;
        let dlq: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create()?;
        let subscription = book_pattern(&config.topic_prefix);
        consumer.subscribe(&[&subscription])?;
        Ok(tokio::spawn(self.run(consumer, dlq, admin, subscription)))
    }

    async fn run(
        mut self,
        consumer: StreamConsumer,
        dlq: FutureProducer,
        admin: AdminClient<DefaultClientContext>,
        subscription: String,
    ) -> String {
        let mut look = tokio::time::interval(Duration::from_secs(3));
        let mut empty_since = Instant::now();
        let mut rejoin_after = self.config.session_timeout + Duration::from_secs(2);
        let inject = self.inject.clone();
        // A lander task that died mid-batch may have left records read and
        // not taken: start from the tables.
        if let Err(e) = self.log.reset().await {
            return format!("reading where the book tables end: {e}");
        }
        loop {
            tokio::select! {
                () = inject.notified() => panic!("injected panic"),
                _ = look.tick() => {
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        return format!("the book lander's client failed for good ({code:?}): {reason}");
                    }
                    self.commit_positions(&consumer);
                    let assigned: Vec<(String, i32)> = consumer
                        .assignment()
                        .map(|a| a.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect())
                        .unwrap_or_default();
                    if let Err(e) = self.log.keep_only(&assigned).await {
                        return format!("dropping revoked book partitions: {e}");
                    }
                    let owned = assigned.len();
                    metrics::gauge!("k2_book_lander_partitions_owned").set(owned as f64);
                    if owned > 0 {
                        empty_since = Instant::now();
                        rejoin_after = self.config.session_timeout + Duration::from_secs(2);
                    } else if empty_since.elapsed() >= rejoin_after && self.topics_exist(&consumer, &subscription) {
                        tracing::warn!(secs = empty_since.elapsed().as_secs(), "the book lander owns no partition: rejoining its group");
                        metrics::counter!("k2_book_lander_rejoins_total").increment(1);
                        consumer.unsubscribe();
                        if let Err(e) = consumer.subscribe(&[&subscription]) {
                            return format!("subscribing to {subscription}: {e}");
                        }
                        empty_since = Instant::now();
                        rejoin_after = (rejoin_after * 2).min(Duration::from_secs(300));
                    }
                }
                first = consumer.recv() => {
                    let mut batch: Vec<OwnedMessage> = Vec::with_capacity(BATCH);
                    match first {
                        Ok(m) => batch.push(m.detach()),
                        Err(e) => {
                            tracing::warn!(error = %e, "book lander: consume failed");
                            metrics::counter!("k2_book_lander_consume_errors_total").increment(1);
                            continue;
                        }
                    }
                    while batch.len() < BATCH {
                        match tokio::time::timeout(Duration::from_millis(1), consumer.recv()).await {
                            Ok(Ok(m)) => batch.push(m.detach()),
                            _ => break,
                        }
                    }
                    if let Err(e) = self.land(&consumer, &dlq, &admin, batch).await {
                        // Nothing is lost: the next task resets the log and
                        // reads again from the tables' offsets.
                        return format!("landing book records: {e}");
                    }
                }
            }
        }
    }

    async fn land(
        &mut self,
        consumer: &StreamConsumer,
        dlq: &FutureProducer,
        admin: &AdminClient<DefaultClientContext>,
        batch: Vec<OwnedMessage>,
    ) -> Result<(), String> {
        let n = batch.len();
        let mut reads = Vec::with_capacity(n);
        for m in &batch {
            let record = self.decode(m.topic(), m.payload().unwrap_or_default()).await;
            reads.push(Read { topic: m.topic().to_owned(), partition: m.partition(), offset: m.offset(), record });
        }
        let landed = self.log.land(reads).await.map_err(|e| e.to_string())?;
        for (topic, partition, offset) in &landed.seek {
            tracing::info!(%topic, partition, offset, "book lander: reading the partition from where the tables end");
            if let Err(e) = consumer.seek(topic, *partition, Offset::Offset(*offset), Duration::from_secs(10)) {
                return Err(format!("seeking {topic}/{partition} to {offset}: {e}"));
            }
        }
        for (index, reason) in &landed.dead {
            if let Some(m) = batch.get(*index) {
                dead_letter(dlq, admin, &self.config, m, reason).await;
            }
        }
        if landed.missing > 0 {
            metrics::counter!("k2_book_records_missing_total").increment(landed.missing);
        }
        metrics::counter!("k2_book_records_consumed_total").increment(landed.taken as u64);
        self.probe.handled(n);
        Ok(())
    }

    /// The record's book event, or why it can never be one. A registry out
    /// of reach is waited for.
    async fn decode(&mut self, topic: &str, payload: &[u8]) -> Result<k2_core::BookEventV2, String> {
        if payload.len() > self.config.max_record_bytes {
            return Err(format!(
                "record of {} bytes is over kafka.max_record_bytes ({})",
                payload.len(),
                self.config.max_record_bytes
            ));
        }
        let (id, datum) = split_frame(payload).map_err(|e| e.to_string())?;
        let is_book = match self.kinds.get(&id) {
            Some(b) => *b,
            None => {
                let mut wait = Duration::from_millis(200);
                let schema = loop {
                    match self.schemas.schema(id).await {
                        Ok(s) => break s,
                        Err(KafkaError::UnknownSchema(_)) => {
                            return Err(format!("schema id {id} is not in the registry"));
                        }
                        Err(e) => {
                            let problem = format!("schema registry unreachable: {e}");
                            tracing::warn!(topic, schema_id = id, "{problem}; the book lander waits");
                            self.probe.error(&problem);
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                };
                let parsed: serde_json::Value = serde_json::from_str(&schema).map_err(|e| e.to_string())?;
                let is_book = parsed["name"].as_str() == Some("BookEventV2");
                self.kinds.insert(id, is_book);
                is_book
            }
        };
        if !is_book {
            return Err(format!("schema id {id} is not the book record"));
        }
        // A decoder bug costs one record (a dead letter), not the partition.
        match std::panic::catch_unwind(|| decode_book(datum)) {
            Ok(decoded) => decoded.map_err(|e| e.to_string()),
            Err(_) => Err("the decoder panicked on this record".to_owned()),
        }
    }

    /// Tells the group where the tables stand (monitoring, and where a new
    /// member starts reading before the log corrects it).
    fn commit_positions(&self, consumer: &StreamConsumer) {
        let Ok(owned) = consumer.assignment() else { return };
        let mut list = TopicPartitionList::new();
        for (topic, partition, next) in self.log.landed_offsets() {
            if owned.find_partition(&topic, partition).is_none() {
                continue;
            }
            let _ = list.add_partition_offset(&topic, partition, Offset::Offset(next));
        }
        if list.count() > 0
            && let Err(e) = consumer.commit(&list, CommitMode::Async)
        {
            tracing::debug!(error = %e, "book lander: group offset commit failed");
        }
    }

    fn topics_exist(&self, consumer: &StreamConsumer, _subscription: &str) -> bool {
        let prefix = format!("{}market.", self.config.topic_prefix);
        match consumer.fetch_metadata(None, Duration::from_secs(5)) {
            Ok(m) => m.topics().iter().any(|t| t.name().starts_with(&prefix) && t.name().contains(".book.")),
            Err(_) => false,
        }
    }
}

/// The book topics' ends for queries (`BookLog::read_to_now`).
pub struct BookLogEnds {
    client: rdkafka::consumer::BaseConsumer,
}

impl BookLogEnds {
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        Ok(Self { client: ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create()? })
    }
}

impl crate::lake::books::LogEnds for BookLogEnds {
    fn end_of(&self, topic: &str, partition: i32) -> Option<i64> {
        self.client.fetch_watermarks(topic, partition, Duration::from_secs(2)).ok().map(|(_, high)| high)
    }
}
