//! Kafka mode's consuming side: records from the market topics land in the
//! tables' tails, carrying their offsets; each Iceberg snapshot records the
//! offsets it covers (`k2.kafka-offsets`) in the same commit as the rows.
//!
//! The flushers form one consumer group (auto-commit off) and split the
//! partitions. When partitions are assigned, each continues exactly where
//! the table's latest snapshot says, read from the catalog at that moment
//! (another flusher may have committed them last). When they are revoked,
//! the rows not yet committed are thrown away, and the revocation waits for
//! a commit under way; a flush taken before is refused at commit
//! ([`Claims`]). So a crash or a rebalance at any point neither loses nor
//! doubles a row. Group offset commits carry what the snapshots cover, for
//! lag monitoring only.
//!
//! A record two producers both put in the log lands once too: its second
//! copy is dropped by [`RecentIds`], whose window an assignment refills by
//! reading the `duplicate_span` offsets before where the table ends.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k2_core::MarketEvent;
use k2_core::codec::wire::{SchemaIds, WireCodec, split_frame};
use rdkafka::admin::AdminClient;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

use actix::prelude::*;
use tokio::sync::Notify;

use super::KafkaError;
use super::recent_ids::RecentIds;
use super::schemas::SchemaSource;
use super::topics::ensure;
use crate::lake::claims::{Claims, Verdict};
use crate::lake::summary::Offsets;
use crate::lake::{Lake, LakeError, TableKind, Tails};
use crate::runtime::config::KafkaConfig;
use crate::runtime::health::Probe;
use crate::runtime::messages::Fault;
use crate::runtime::supervision::{Supervise, Supervision, restartable};

/// Most records taken into the tails at once.
const BATCH: usize = 4096;

/// How long an assignment waits for the catalog before giving the
/// partitions back (the group then rebalances).
const ASSIGN_PATIENCE: Duration = Duration::from_secs(60);

/// Whether `topic` is one of the market topics under `prefix`.
pub fn is_market_topic(prefix: &str, topic: &str) -> Option<bool> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix("market.")?;
    let parts: Vec<&str> = rest.split('.').collect();
    match parts[..] {
        [_, "trades", _] => Some(true),
        [_, "quotes", _] => Some(false),
        _ => None,
    }
}

/// The subscription: librdkafka takes a name starting with `^` as a regex.
fn pattern(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len() * 2);
    for c in prefix.chars() {
        if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!("^{escaped}market\\.[^.]+\\.(trades|quotes)\\.[^.]+$")
}

struct Decoders {
    schemas: SchemaSource,
    /// Schema id → whether it is the trade record.
    kinds: HashMap<u32, bool>,
}

impl Decoders {
    async fn decode(&mut self, payload: &[u8]) -> Result<MarketEvent, String> {
        let (id, _) = split_frame(payload).map_err(|e| e.to_string())?;
        let trade = match self.kinds.get(&id) {
            Some(t) => *t,
            None => {
                let schema = self.schemas.schema(id).await.map_err(|e| format!("schema id {id}: {e}"))?;
                let name: serde_json::Value = serde_json::from_str(&schema).map_err(|e| e.to_string())?;
                let trade = match name["name"].as_str() {
                    Some("TradeV2") => true,
                    Some("QuoteV2") => false,
                    other => return Err(format!("schema id {id} is {other:?}, not a v2 record")),
                };
                self.kinds.insert(id, trade);
                trade
            }
        };
        let ids =
            if trade { SchemaIds { trade: id, quote: u32::MAX } } else { SchemaIds { trade: u32::MAX, quote: id } };
        WireCodec::new(ids).decode(payload).map_err(|e| e.to_string())
    }
}

/// Runs `future` to completion from a librdkafka callback, which is a
/// synchronous call inside `recv()` on a runtime worker.
fn block_on<F>(handle: &tokio::runtime::Handle, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    let joined = blocking(|| std::thread::scope(|s| s.spawn(|| handle.block_on(future)).join()));
    joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs `f`, which blocks, telling a multi-threaded runtime first so that
/// its other tasks move to other workers meanwhile.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi { tokio::task::block_in_place(f) } else { f() }
}

/// Why assigned partitions could not be taken.
#[derive(Debug, thiserror::Error)]
enum AssignError {
    #[error("reading the tables' offsets: {0}")]
    Lake(#[from] LakeError),
    #[error("setting a partition's offset: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// The group's rebalance hooks: where assigned partitions continue, and
/// what revoked ones leave behind.
struct Rebalance {
    lake: Lake,
    tails: Tails,
    claims: Arc<Claims>,
    handle: tokio::runtime::Handle,
    prefix: String,
    duplicate_span: i64,
}

impl ClientContext for Rebalance {}

impl ConsumerContext for Rebalance {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => match self.assigned(tpl) {
                Ok(()) => {
                    if let Err(e) = consumer.assign(tpl) {
                        tracing::error!(error = %e, "assigning partitions failed");
                    }
                }
                Err(e) => {
                    // Without the table's offsets nothing can be consumed
                    // exactly once: rejoin later.
                    tracing::error!(error = %e, "partitions assigned but the table's offsets are unreadable");
                    self.claims.fence();
                    let _ = consumer.unassign();
                }
            },
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoked();
                let _ = consumer.unassign();
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                self.revoked();
                let _ = consumer.unassign();
            }
        }
    }
}

impl Rebalance {
    /// Reads each table as it is now and sets every assigned partition's
    /// offset to what the table covers (the beginning when it holds none).
    fn assigned(&self, tpl: &mut TopicPartitionList) -> Result<(), AssignError> {
        let load = async {
            let started = std::time::Instant::now();
            let mut delay = Duration::from_millis(100);
            loop {
                match self.adopt_tables().await {
                    Ok(offsets) => return Ok(offsets),
                    Err(e) if started.elapsed() < ASSIGN_PATIENCE => {
                        tracing::warn!(error = %e, "reading the tables' offsets failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let covered = block_on(&self.handle, load)?;
        let mut claimed = Vec::new();
        for elem in tpl.elements() {
            let (topic, partition) = (elem.topic().to_owned(), elem.partition());
            let next = covered.get(&topic).and_then(|m| m.get(&partition)).copied().unwrap_or(0);
            // Reading starts a span early, to learn the ids a duplicate
            // would repeat.
            let recall_from = next.saturating_sub(self.duplicate_span).max(0);
            claimed.push(((topic, partition), next, recall_from));
        }
        for ((topic, partition), _, from) in &claimed {
            // The topic's failure counters exist at 0 once it is ours, so
            // alerts and dashboards see them before the first failure.
            metrics::counter!("k2_kafka_records_missing_total", "topic" => topic.clone()).increment(0);
            metrics::counter!("k2_kafka_dead_letters_total", "topic" => topic.clone()).increment(0);
            metrics::counter!("k2_kafka_duplicates_dropped_total", "topic" => topic.clone()).increment(0);
            // An explicit offset needs no offset lookup (slow on a broker
            // holding a large log); a log whose start has moved past 0 is
            // reset to its beginning by auto.offset.reset.
            let offset = Offset::Offset(*from);
            tpl.set_partition_offset(topic, *partition, offset)?;
        }
        tracing::info!(partitions = claimed.len(), "partitions assigned; continuing where the tables end");
        metrics::counter!("k2_kafka_rebalances_total", "kind" => "assign").increment(1);
        self.claims.assign(claimed);
        Ok(())
    }

    /// Both tables reloaded from the catalog: the tails continue after them,
    /// and together they say where each partition continues.
    async fn adopt_tables(&self) -> Result<Offsets, LakeError> {
        let trades = self.lake.table(TableKind::Trades).await?;
        let quotes = self.lake.table(TableKind::Quotes).await?;
        let mut offsets = self.tails.trades.adopt(trades)?.offsets;
        let quote_offsets = self.tails.quotes.adopt(quotes)?.offsets;
        // Each topic is only in its own table; keep them apart anyway.
        for (topic, parts) in quote_offsets {
            if is_market_topic(&self.prefix, &topic) == Some(false) {
                offsets.insert(topic, parts);
            }
        }
        offsets.retain(|topic, _| is_market_topic(&self.prefix, topic).is_some());
        Ok(offsets)
    }

    /// Gives every partition up: waits for a commit under way, then throws
    /// away what is not committed (the next owner reads it again).
    fn revoked(&self) {
        blocking(|| self.claims.revoke_all());
        let dropped = self.tails.discard();
        metrics::counter!("k2_kafka_rebalances_total", "kind" => "revoke").increment(1);
        tracing::info!(dropped, "partitions revoked; uncommitted rows left to their next owner");
    }
}

type GroupConsumer = StreamConsumer<Rebalance>;

/// Starts consuming into `tails` on the runtime as a member of the
/// flushers' group; runs until the process ends.
fn start(
    config: &KafkaConfig,
    lake: Lake,
    tails: Tails,
    schemas: SchemaSource,
    probe: Probe,
    inject: Arc<Notify>,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    let context = Rebalance {
        lake,
        claims: tails.claims.clone(),
        tails: tails.clone(),
        handle: tokio::runtime::Handle::current(),
        prefix: config.topic_prefix.clone(),
        duplicate_span: config.duplicate_span,
    };
    let mut client = ClientConfig::new();
    if !config.instance_id.is_empty() {
        client.set("group.instance.id", &config.instance_id);
    }
    let consumer: GroupConsumer = client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", format!("{}{}", config.topic_prefix, config.group))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
        .set("heartbeat.interval.ms", (config.session_timeout.as_millis() / 5).max(100).to_string())
        // New market topics join the subscription within seconds.
        .set("topic.metadata.refresh.interval.ms", "3000")
        .create_with_context(context)?;
    let dlq: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create()?;
    let subscription = pattern(&config.topic_prefix);
    consumer.subscribe(&[&subscription])?;
    let config = config.clone();
    Ok(tokio::spawn(async move {
        let consumer = Arc::new(consumer);
        let claims = tails.claims.clone();
        let mut decoders = Decoders { schemas, kinds: HashMap::new() };
        let mut recent = Recent { span: config.duplicate_span, epoch: 0, partitions: HashMap::new() };
        let mut look = tokio::time::interval(Duration::from_secs(3));
        let reporting = Arc::new(std::sync::atomic::AtomicBool::new(false));
        loop {
            tokio::select! {
                () = inject.notified() => panic!("injected panic"),
                _ = look.tick() => {
                    // Off this loop, one at a time: a broker slow to answer
                    // offset requests must not keep the consumer from
                    // polling (it starved consumption of a large backlog).
                    if !reporting.swap(true, std::sync::atomic::Ordering::AcqRel) {
                        let (c, t, r) = (consumer.clone(), tails.clone(), reporting.clone());
                        tokio::spawn(async move {
                            report_progress(&c, &t).await;
                            r.store(false, std::sync::atomic::Ordering::Release);
                        });
                    }
                    if claims.take_resync() {
                        // A commit was fenced: rejoin, so that the group
                        // assigns afresh and this flusher rereads the tables.
                        tracing::warn!("rejoining the consumer group after a fenced commit");
                        consumer.unsubscribe();
                        if let Err(e) = consumer.subscribe(&[&subscription]) {
                            tracing::error!(error = %e, "resubscribing failed; trying again");
                            claims.fence();
                        }
                    }
                }
                first = consumer.recv() => {
                    // A rebalance runs inside recv(): each record is judged
                    // by the assignment it was received under.
                    let mut batch = Vec::with_capacity(BATCH);
                    match first {
                        Ok(m) => batch.push((claims.epoch(), m.detach())),
                        Err(e) => {
                            tracing::warn!(error = %e, "consume failed");
                            metrics::counter!("k2_kafka_consume_errors_total").increment(1);
                            continue;
                        }
                    }
                    // Take what else has arrived, without waiting.
                    while batch.len() < BATCH {
                        match tokio::time::timeout(Duration::from_millis(1), consumer.recv()).await {
                            Ok(Ok(m)) => batch.push((claims.epoch(), m.detach())),
                            _ => break,
                        }
                    }
                    let n = batch.len();
                    ingest(batch, &tails, &mut decoders, &mut recent, &dlq, &admin, &config).await;
                    probe.handled(n);
                }
            }
        }
    }))
}

/// Lag and the group's offsets, both for monitoring only (where to resume is
/// the snapshots' business): `k2_kafka_consumer_lag{topic,partition}` is the
/// high watermark minus the next offset this consumer takes, and the group
/// commit carries the offsets the latest snapshots cover.
async fn report_progress(consumer: &Arc<GroupConsumer>, tails: &Tails) {
    let owned = tails.claims.owned();
    let (_, durable) = tails.committed();
    let mut list = TopicPartitionList::new();
    for ((topic, p), _) in &owned {
        if let Some(next) = durable.get(topic).and_then(|m| m.get(p)) {
            let _ = list.add_partition_offset(topic, *p, Offset::Offset(*next));
        }
    }
    if list.count() > 0
        && let Err(e) = consumer.commit(&list, rdkafka::consumer::CommitMode::Async)
    {
        tracing::debug!(error = %e, "group offset commit failed");
    }
    let c = consumer.clone();
    let marks = tokio::task::spawn_blocking(move || {
        owned
            .into_iter()
            .filter_map(|((t, p), next)| {
                c.fetch_watermarks(&t, p, Duration::from_secs(10)).ok().map(|(_, high)| (t, p, high - next))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (topic, partition, lag) in marks {
        metrics::gauge!("k2_kafka_consumer_lag", "topic" => topic, "partition" => partition.to_string())
            .set(lag.max(0) as f64);
    }
}

/// Each owned partition's recent ids, as read under the current epoch: an
/// assignment reads every partition again from its recall offset, so the
/// windows of an earlier epoch are dropped (and a revoked partition's memory
/// with them).
struct Recent {
    span: i64,
    epoch: u64,
    /// Topic → partition → window.
    partitions: HashMap<String, HashMap<i32, RecentIds>>,
}

impl Recent {
    /// Notes a record read under `epoch` (records of an older one are
    /// skipped before); whether it is a duplicate.
    fn note(&mut self, epoch: u64, m: &OwnedMessage, event: &MarketEvent) -> bool {
        if self.span == 0 {
            return false;
        }
        if epoch != self.epoch {
            self.epoch = epoch;
            self.partitions.clear();
        }
        // No allocation per record: the topic's name is copied once.
        if !self.partitions.contains_key(m.topic()) {
            self.partitions.insert(m.topic().to_owned(), HashMap::new());
        }
        let Some(topic) = self.partitions.get_mut(m.topic()) else { return false };
        let span = self.span;
        topic.entry(m.partition()).or_insert_with(|| RecentIds::new(span)).note(m.offset(), event.message_id())
    }
}

async fn ingest(
    batch: Vec<(u64, OwnedMessage)>,
    tails: &Tails,
    decoders: &mut Decoders,
    recent: &mut Recent,
    dlq: &FutureProducer,
    admin: &AdminClient<DefaultClientContext>,
    config: &KafkaConfig,
) {
    // Judged in runs of one epoch (almost always the whole batch).
    let mut verdicts = Vec::with_capacity(batch.len());
    let mut i = 0;
    while i < batch.len() {
        let epoch = batch[i].0;
        let run = batch[i..].iter().take_while(|(e, _)| *e == epoch).count();
        let records = batch[i..i + run].iter().map(|(_, m)| (m.topic(), m.partition(), m.offset()));
        verdicts.extend(tails.claims.judge(epoch, records));
        i += run;
    }
    let (mut trades, mut quotes) = (Vec::new(), Vec::new());
    let (mut trade_offsets, mut quote_offsets) = (Offsets::new(), Offsets::new());
    let mut taken = 0u64;
    let mut duplicates: HashMap<&str, u64> = HashMap::new();
    for ((epoch, m), verdict) in batch.iter().zip(verdicts) {
        let topic = m.topic();
        match verdict {
            Verdict::Skip => continue,
            Verdict::Recall => {
                // Its fate was decided when it was first read (a dead
                // letter then, or in the table): only its id counts now.
                if let Ok(event) = decoders.decode(m.payload().unwrap_or_default()).await {
                    recent.note(*epoch, m, &event);
                }
                continue;
            }
            Verdict::Take => {}
            Verdict::TakeAfterGap { missing } => {
                metrics::counter!("k2_kafka_records_missing_total", "topic" => topic.to_owned())
                    .increment(missing as u64);
                tracing::error!(
                    topic,
                    partition = m.partition(),
                    offset = m.offset(),
                    missing,
                    "records missing from the log (retention?)"
                );
            }
        }
        taken += 1;
        let Some(is_trades) = is_market_topic(&config.topic_prefix, topic) else { continue };
        let offsets = if is_trades { &mut trade_offsets } else { &mut quote_offsets };
        offsets.entry(topic.to_owned()).or_default().insert(m.partition(), m.offset() + 1);
        let decoded = decoders.decode(m.payload().unwrap_or_default()).await;
        if let Ok(event) = &decoded
            && recent.note(*epoch, m, event)
        {
            *duplicates.entry(topic).or_default() += 1;
            continue;
        }
        match decoded {
            Ok(MarketEvent::Trade(t)) if is_trades => trades.push(t),
            Ok(MarketEvent::Quote(q)) if !is_trades => quotes.push(q),
            Ok(_) => dead_letter(dlq, admin, config, m, "record kind does not match its topic").await,
            Err(reason) => dead_letter(dlq, admin, config, m, &reason).await,
        }
    }
    metrics::counter!("k2_kafka_messages_consumed_total").increment(taken);
    for (topic, n) in duplicates {
        metrics::counter!("k2_kafka_duplicates_dropped_total", "topic" => topic.to_owned()).increment(n);
        tracing::debug!(topic, n, "records another producer also put in the log dropped");
    }
    if let Err(e) = tails.trades.append_consumed(trades, &trade_offsets) {
        tracing::error!(error = %e, "consumed trades could not be taken");
    }
    if let Err(e) = tails.quotes.append_consumed(quotes, &quote_offsets) {
        tracing::error!(error = %e, "consumed quotes could not be taken");
    }
}

/// Sends a record that cannot be decoded or validated to `{topic}.dlq` with
/// the reason and where it came from; the rest of the batch goes on.
async fn dead_letter(
    dlq: &FutureProducer,
    admin: &AdminClient<DefaultClientContext>,
    config: &KafkaConfig,
    m: &OwnedMessage,
    reason: &str,
) {
    let topic = format!("{}.dlq", m.topic());
    metrics::counter!("k2_kafka_dead_letters_total", "topic" => m.topic().to_owned()).increment(1);
    tracing::warn!(source = m.topic(), partition = m.partition(), offset = m.offset(), reason, "dead letter");
    if let Err(e) = ensure(admin, config, &topic).await {
        tracing::error!(%topic, error = %e, "cannot create the dead-letter topic");
    }
    let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
    let headers = OwnedHeaders::new()
        .insert(Header { key: "k2.reason", value: Some(reason) })
        .insert(Header { key: "k2.source.topic", value: Some(m.topic()) })
        .insert(Header { key: "k2.source.partition", value: Some(&partition) })
        .insert(Header { key: "k2.source.offset", value: Some(&offset) });
    let mut record = FutureRecord::to(&topic).payload(m.payload().unwrap_or_default()).headers(headers);
    if let Some(key) = m.key() {
        record = record.key(key);
    }
    if let Err((e, _)) = dlq.send(record, Duration::from_secs(30)).await {
        tracing::error!(%topic, error = %e, "dead letter not delivered");
    }
}

pub const NAME: &str = "kafka-consumer";

/// The consumer as a supervised actor. Its work runs as a task on the
/// runtime's worker threads (rdkafka's rebalance hooks block inside
/// `recv()`); the actor owns the task and watches it: a task that ends,
/// by a panic or an error, is a failure, and the restart makes a new group
/// member that continues where the tables end (the old one's uncommitted
/// rows were dropped at its revocation or are dropped at the new
/// assignment). Its restart policy is `[supervision.kinds.kafka-consumer]`.
pub struct ConsumerActor {
    config: KafkaConfig,
    lake: Lake,
    tails: Tails,
    schemas: SchemaSource,
    task: Option<tokio::task::AbortHandle>,
    /// Drills: makes the task itself panic, as a real fault in it would.
    inject: Arc<Notify>,
    supervision: Supervision,
}

impl ConsumerActor {
    pub fn new(config: KafkaConfig, lake: Lake, tails: Tails, schemas: SchemaSource, supervision: Supervision) -> Self {
        Self { config, lake, tails, schemas, task: None, inject: Arc::new(Notify::new()), supervision }
    }
}

impl Actor for ConsumerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervision.started();
        let (lake, tails, schemas) = (self.lake.clone(), self.tails.clone(), self.schemas.clone());
        let probe = self.supervision.probe().clone();
        let task = match start(&self.config, lake, tails, schemas, probe, self.inject.clone()) {
            Ok(task) => task,
            Err(e) => {
                self.supervision.fail(format!("starting the consumer: {e}"));
                ctx.stop();
                return;
            }
        };
        self.task = Some(task.abort_handle());
        // The actor learns when the task ends; it never waits on it.
        ctx.spawn(task.into_actor(self).map(|ended, act, ctx| {
            let reason = match ended {
                Ok(()) => "the consumer loop ended".to_owned(),
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    format!("the consumer panicked: {}", crate::runtime::supervision::panic_message(panic.as_ref()))
                }
                Err(e) => format!("the consumer task failed: {e}"),
            };
            act.task = None;
            act.supervision.fail(reason);
            ctx.stop();
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

restartable!(ConsumerActor);

impl Supervise for ConsumerActor {
    fn supervision(&mut self) -> &mut Supervision {
        &mut self.supervision
    }

    fn reset(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Handler<Fault> for ConsumerActor {
    type Result = ();

    /// A panic is injected into the consuming task, where real faults
    /// happen; a stop stops the actor.
    fn handle(&mut self, fault: Fault, ctx: &mut Context<Self>) {
        tracing::warn!(actor = NAME, ?fault, "injecting fault");
        match fault {
            Fault::Panic => self.inject.notify_one(),
            Fault::Stop => ctx.stop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_topics_are_recognised_under_their_prefix() {
        assert_eq!(is_market_topic("", "market.crypto.trades.binance"), Some(true));
        assert_eq!(is_market_topic("t1.", "t1.market.equities.quotes.asx"), Some(false));
        assert_eq!(is_market_topic("t1.", "market.crypto.trades.binance"), None);
        assert_eq!(is_market_topic("", "market.crypto.trades.binance.dlq"), None);
        assert_eq!(is_market_topic("", "_schemas"), None);
    }

    #[test]
    fn the_subscription_pattern_matches_market_topics_only() {
        assert_eq!(pattern("t1."), "^t1\\.market\\.[^.]+\\.(trades|quotes)\\.[^.]+$");
        assert_eq!(pattern(""), "^market\\.[^.]+\\.(trades|quotes)\\.[^.]+$");
    }
}
