//! Kafka mode's consuming side: records from the market topics land in the
//! tables' tails, carrying their offsets; each Iceberg snapshot records the
//! offsets it covers (`k2.kafka-offsets`) in the same commit as the rows. On
//! start, consumption continues exactly where the latest snapshot ends, so a
//! crash at any point neither loses nor doubles a row.
//!
//! This first version assigns every partition of the market topics to one
//! consumer (no group rebalancing) and looks for new topics every few
//! seconds; the group id is used only to report lag.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k2_core::MarketEvent;
use k2_core::codec::wire::{SchemaIds, WireCodec, split_frame};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaError;
use super::schemas::SchemaSource;
use super::topics::ensure;
use crate::config::KafkaConfig;
use crate::flusher::Tails;
use crate::lake::summary::Offsets;

/// Most records taken into the tails at once.
const BATCH: usize = 4096;

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

/// Starts consuming into `tails` on the runtime; runs until the process ends.
pub fn start(
    config: &KafkaConfig,
    tails: Tails,
    schemas: SchemaSource,
) -> Result<tokio::task::JoinHandle<()>, KafkaError> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", format!("{}k2-iceberg", config.topic_prefix))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let dlq: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create()?;
    let config = config.clone();
    Ok(tokio::spawn(async move {
        let consumer = Arc::new(consumer);
        // Where each partition continues: the snapshots' offsets first.
        let (_, mut positions) = tails.committed();
        let mut decoders = Decoders { schemas, kinds: HashMap::new() };
        let mut assigned: Vec<(String, i32)> = Vec::new();
        let mut look = tokio::time::interval(Duration::from_secs(3));
        loop {
            tokio::select! {
                _ = look.tick() => {
                    report_progress(&consumer, &tails, &positions, &assigned).await;
                    match discover(&consumer, &config.topic_prefix).await {
                        Ok(found) if found != assigned => {
                            let mut list = TopicPartitionList::new();
                            for (topic, p) in &found {
                                let offset = positions.get(topic).and_then(|m| m.get(p)).map_or(Offset::Beginning, |n| Offset::Offset(*n));
                                if let Err(e) = list.add_partition_offset(topic, *p, offset) {
                                    tracing::error!(%topic, partition = p, error = %e, "cannot assign");
                                }
                            }
                            match consumer.assign(&list) {
                                Ok(()) => assigned = found,
                                Err(e) => tracing::error!(error = %e, "assigning partitions failed"),
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "looking for market topics failed"),
                    }
                }
                first = consumer.recv(), if !assigned.is_empty() => {
                    let mut batch = Vec::with_capacity(BATCH);
                    match first {
                        Ok(m) => batch.push(m.detach()),
                        Err(e) => {
                            tracing::warn!(error = %e, "consume failed");
                            metrics::counter!("k2_kafka_consume_errors_total").increment(1);
                            continue;
                        }
                    }
                    // Take what else has arrived, without waiting.
                    while batch.len() < BATCH {
                        match tokio::time::timeout(Duration::from_millis(1), consumer.recv()).await {
                            Ok(Ok(m)) => batch.push(m.detach()),
                            _ => break,
                        }
                    }
                    ingest(batch, &tails, &mut decoders, &mut positions, &dlq, &admin, &config).await;
                }
            }
        }
    }))
}

/// Lag and the group's offsets, both for monitoring only (where to resume is
/// the snapshots' business): `k2_kafka_consumer_lag{topic,partition}` is the
/// high watermark minus the next offset this consumer reads, and the group
/// commit carries the offsets the latest snapshots cover.
async fn report_progress(
    consumer: &Arc<StreamConsumer>,
    tails: &Tails,
    positions: &Offsets,
    assigned: &[(String, i32)],
) {
    let (_, durable) = tails.committed();
    let mut list = TopicPartitionList::new();
    for (topic, partitions) in &durable {
        for (p, next) in partitions {
            let _ = list.add_partition_offset(topic, *p, Offset::Offset(*next));
        }
    }
    if list.count() > 0
        && let Err(e) = consumer.commit(&list, rdkafka::consumer::CommitMode::Async)
    {
        tracing::debug!(error = %e, "group offset commit failed");
    }
    let (c, parts) = (consumer.clone(), assigned.to_vec());
    let marks = tokio::task::spawn_blocking(move || {
        parts
            .into_iter()
            .filter_map(|(t, p)| c.fetch_watermarks(&t, p, Duration::from_secs(2)).ok().map(|(_, high)| (t, p, high)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (topic, partition, high) in marks {
        let next = positions.get(&topic).and_then(|m| m.get(&partition)).copied().unwrap_or(0);
        metrics::gauge!("k2_kafka_consumer_lag", "topic" => topic, "partition" => partition.to_string())
            .set((high - next).max(0) as f64);
    }
}

/// The market topics and their partitions, sorted.
async fn discover(consumer: &Arc<StreamConsumer>, prefix: &str) -> Result<Vec<(String, i32)>, KafkaError> {
    let c = consumer.clone();
    let metadata = tokio::task::spawn_blocking(move || c.fetch_metadata(None, Duration::from_secs(5)))
        .await
        .map_err(|e| KafkaError::Registry(format!("metadata task: {e}")))??;
    let mut out: Vec<(String, i32)> = metadata
        .topics()
        .iter()
        .filter(|t| is_market_topic(prefix, t.name()).is_some())
        .flat_map(|t| t.partitions().iter().map(move |p| (t.name().to_owned(), p.id())))
        .collect();
    out.sort();
    Ok(out)
}

async fn ingest(
    batch: Vec<rdkafka::message::OwnedMessage>,
    tails: &Tails,
    decoders: &mut Decoders,
    positions: &mut Offsets,
    dlq: &FutureProducer,
    admin: &AdminClient<DefaultClientContext>,
    config: &KafkaConfig,
) {
    let (mut trades, mut quotes) = (Vec::new(), Vec::new());
    let (mut trade_offsets, mut quote_offsets) = (Offsets::new(), Offsets::new());
    for m in &batch {
        let topic = m.topic();
        let next = m.offset() + 1;
        let Some(is_trades) = is_market_topic(&config.topic_prefix, topic) else { continue };
        let offsets = if is_trades { &mut trade_offsets } else { &mut quote_offsets };
        offsets.entry(topic.to_owned()).or_default().insert(m.partition(), next);
        positions.entry(topic.to_owned()).or_default().insert(m.partition(), next);
        match decoders.decode(m.payload().unwrap_or_default()).await {
            Ok(MarketEvent::Trade(t)) if is_trades => trades.push(t),
            Ok(MarketEvent::Quote(q)) if !is_trades => quotes.push(q),
            Ok(_) => dead_letter(dlq, admin, config, m, "record kind does not match its topic").await,
            Err(reason) => dead_letter(dlq, admin, config, m, &reason).await,
        }
    }
    metrics::counter!("k2_kafka_messages_consumed_total").increment(batch.len() as u64);
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
    m: &rdkafka::message::OwnedMessage,
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
}
