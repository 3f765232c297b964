//! Records into the tails: judged by the claims, decoded in batches, second
//! copies dropped, the undecodable sent to the dead-letter topic.

use super::*;

pub(crate) struct Decoders {
    schemas: SchemaSource,
    /// Schema id → whether it is the trade record.
    kinds: HashMap<u32, bool>,
    /// The consumer's health entry: a registry that is not the producers'
    /// shows there.
    probe: Option<Probe>,
}

impl Decoders {
    pub(crate) fn new(schemas: SchemaSource, probe: Option<Probe>) -> Self {
        Self { schemas, kinds: HashMap::new(), probe }
    }

    /// The record's event, or why it can never be one (a dead letter). A
    /// registry that cannot be reached is waited for, not taken for an
    /// answer: a record read during the outage is as good as any. So is a
    /// registry that knows no schema at all for the record's topic: it is
    /// not the one the producers registered with, and every record would
    /// otherwise become a dead letter.
    pub(crate) async fn decode(&mut self, topic: &str, payload: &[u8]) -> Result<MarketEvent, String> {
        let (id, _) = split_frame(payload).map_err(|e| e.to_string())?;
        let trade = match self.kinds.get(&id) {
            Some(t) => *t,
            None => {
                let schema = self.schema(topic, id).await?;
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
        // A decoder bug must cost one record (a dead letter), not the
        // partition: a panic here would restart the consumer onto the same
        // record again and again.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| WireCodec::new(ids).decode(payload))) {
            Ok(decoded) => decoded.map_err(|e| e.to_string()),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(format!("the decoder panicked on this record: {what}"))
            }
        }
    }

    async fn schema(&mut self, topic: &str, id: u32) -> Result<String, String> {
        let mut wait = Duration::from_millis(200);
        let mut attempts = 0u32;
        let subject = format!("{topic}-value");
        loop {
            let problem = match self.schemas.schema(id).await {
                Ok(schema) => return Ok(schema),
                Err(KafkaError::UnknownSchema(_)) => match self.schemas.knows_subject(&subject).await {
                    // The producers' registry: this record's id is foreign.
                    Ok(true) => return Err(format!("schema id {id} is not in the registry")),
                    Ok(false) => format!(
                        "the schema registry ({}) knows no schema for {subject}, yet {topic} holds records of schema id {id}: \
                         this process does not share the producers' registry (set kafka.registry_url to it); \
                         the consumer waits instead of dead-lettering every record",
                        self.schemas.describe()
                    ),
                    Err(e) => format!("schema registry unreachable: {e}"),
                },
                Err(e) => format!("schema registry unreachable: {e}"),
            };
            // Holding the partition is what keeps the record: its lag grows
            // (and alerts) while the registry is away or is the wrong one.
            if attempts.is_multiple_of(20) {
                tracing::error!(schema_id = id, topic, "{problem}; the consumer waits");
                if let Some(probe) = &self.probe {
                    probe.error(&problem);
                }
            }
            attempts += 1;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

/// Each owned partition's recent ids, as read under the current epoch: an
/// assignment reads every partition again from its recall offset, so the
/// windows of an earlier epoch are dropped (and a revoked partition's memory
/// with them).
pub(super) struct Recent {
    span: i64,
    epoch: u64,
    /// Topic → partition → window.
    partitions: HashMap<String, HashMap<i32, RecentIds>>,
}

impl Recent {
    pub(super) fn new(span: i64) -> Self {
        Self { span, epoch: 0, partitions: HashMap::new() }
    }

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

/// What a record taken from a market topic becomes. The consumer and the
/// log view of hybrid queries (`kafka/log_view.rs`) both apply this one rule,
/// so a query counts exactly the rows the flushers will land.
// Made and matched at once per record: boxing the row would allocate per
// record on the consumer's hot path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Fate {
    /// A row of the topic's table.
    Row(MarketEvent),
    /// A second copy within the duplicate span: dropped.
    Duplicate,
    /// Never a row: sent to the dead-letter topic, for this reason.
    DeadLetter(String),
}

/// Judges one record of `topic` (a trades topic when `is_trades`); `note`
/// enters a decoded record in its partition's window and says whether it
/// is a second copy. A record over `max_record_bytes` is not decoded (nor
/// noted).
pub(crate) async fn fate(
    decoders: &mut Decoders,
    topic: &str,
    is_trades: bool,
    payload: &[u8],
    max_record_bytes: usize,
    note: impl FnOnce(&MarketEvent) -> bool,
) -> Fate {
    if payload.len() > max_record_bytes {
        return Fate::DeadLetter(format!(
            "record of {} bytes is over kafka.max_record_bytes ({max_record_bytes})",
            payload.len()
        ));
    }
    match decoders.decode(topic, payload).await {
        Ok(event) if note(&event) => Fate::Duplicate,
        Ok(event @ MarketEvent::Trade(_)) if is_trades => Fate::Row(event),
        Ok(event @ MarketEvent::Quote(_)) if !is_trades => Fate::Row(event),
        Ok(_) => Fate::DeadLetter("record kind does not match its topic".to_owned()),
        Err(reason) => Fate::DeadLetter(reason),
    }
}

pub(super) async fn ingest(
    batch: Vec<(u64, OwnedMessage)>,
    tails: &Tails,
    decoders: &mut Decoders,
    recent: &mut Recent,
    dlq: &FutureProducer,
    admin: &AdminClient<DefaultClientContext>,
    config: &KafkaConfig,
) {
    let _ingesting = tails.claims.start_ingest();
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
                if let Ok(event) = decoders.decode(topic, m.payload().unwrap_or_default()).await {
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
        // The topic's name is copied once per batch, not per record.
        match offsets.get_mut(topic) {
            Some(parts) => {
                parts.insert(m.partition(), m.offset() + 1);
            }
            None => {
                offsets.entry(topic.to_owned()).or_default().insert(m.partition(), m.offset() + 1);
            }
        }
        let payload = m.payload().unwrap_or_default();
        let note = |event: &MarketEvent| recent.note(*epoch, m, event);
        match fate(decoders, topic, is_trades, payload, config.max_record_bytes, note).await {
            Fate::Row(MarketEvent::Trade(t)) => trades.push(t),
            Fate::Row(MarketEvent::Quote(q)) => quotes.push(q),
            Fate::Duplicate => *duplicates.entry(topic).or_default() += 1,
            Fate::DeadLetter(reason) => dead_letter(dlq, admin, config, m, &reason).await,
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

/// How much of a record its dead letter keeps (`k2.source.bytes` says how
/// long it was; its source offset finds the rest while the topic keeps
/// it), so that any record's letter fits the producer's message size.
const TRUNCATED_TO: usize = 64 << 10;

/// Sends a record that cannot be decoded or validated to `{topic}.dlq` with
/// the reason and where it came from; the rest of the batch goes on.
pub(crate) async fn dead_letter(
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
    let payload = m.payload().unwrap_or_default();
    let size = payload.len().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "k2.reason", value: Some(reason) })
        .insert(Header { key: "k2.source.topic", value: Some(m.topic()) })
        .insert(Header { key: "k2.source.partition", value: Some(&partition) })
        .insert(Header { key: "k2.source.offset", value: Some(&offset) })
        .insert(Header { key: "k2.source.bytes", value: Some(&size) });
    let kept = &payload[..payload.len().min(TRUNCATED_TO)];
    let mut record = FutureRecord::to(&topic).payload(kept).headers(headers);
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A registry at `listener` that answers every request with `status`
    /// and `body`.
    fn serve(listener: tokio::net::TcpListener, status: &'static str, body: String) {
        serve_with(listener, status, body, None);
    }

    /// As [`serve`], except that a request whose path starts with
    /// `versions.0` gets `versions.1` (200).
    fn serve_with(
        listener: tokio::net::TcpListener,
        status: &'static str,
        body: String,
        versions: Option<(&'static str, &'static str)>,
    ) {
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split(' ').nth(1).unwrap_or("");
                let (status, body) = match versions {
                    Some((prefix, list)) if path.starts_with(prefix) => ("200 OK", list.to_owned()),
                    _ => (status, body.clone()),
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
    }

    fn frame(id: u32) -> Vec<u8> {
        let text =
            r#"{"e":"trade","E":1,"s":"BTCUSDT","t":5,"p":"60610.5","q":"0.25","T":1722766102789,"m":true,"M":true}"#;
        let mut parser = k2_core::source::binance::BinanceParser::default();
        let k2_core::source::binance::Frame::Event(trade) =
            parser.parse(text.as_bytes(), k2_core::Timestamp::now()).unwrap()
        else {
            panic!("not a trade")
        };
        WireCodec::new(SchemaIds { trade: id, quote: id + 1 }).encode(&trade).unwrap()
    }

    #[tokio::test]
    async fn a_registry_out_of_reach_is_waited_for_and_an_unknown_id_is_a_dead_letter() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Nothing listens yet: the decode waits instead of failing the record.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut decoders = Decoders::new(SchemaSource::Remote { url: url.clone(), http: reqwest::Client::new() }, None);
        let payload = frame(7);
        let waiting = tokio::spawn(async move { decoders.decode("market.crypto.trades.binance", &payload).await });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!waiting.is_finished(), "a record read while the registry is away is held, not dead-lettered");
        let body = serde_json::json!({ "schema": k2_core::schema::TRADE_V2_AVSC }).to_string();
        serve(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap(), "200 OK", body);
        let decoded = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
        assert!(matches!(decoded, Ok(MarketEvent::Trade(_))), "{decoded:?}");

        // The producers' registry (it knows the topic's subject) answers 404
        // for the id: the record can never be read.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let not_found = r#"{"error_code":40403,"message":"Schema 9 not found"}"#.to_owned();
        serve_with(
            listener,
            "404 Not Found",
            not_found,
            Some(("/subjects/market.crypto.trades.binance-value/versions", "[1]")),
        );
        let mut decoders = Decoders::new(SchemaSource::Remote { url, http: reqwest::Client::new() }, None);
        let refused = decoders.decode("market.crypto.trades.binance", &frame(9)).await.unwrap_err();
        assert!(refused.contains("not in the registry"), "{refused}");
    }

    /// A registry that knows no schema for the topic at all is not the one
    /// the producers used: the record is held (every other record would be
    /// a dead letter too) and the consumer's health says why.
    #[tokio::test]
    async fn a_registry_that_is_not_the_producers_holds_the_records_and_says_so() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        serve(listener, "404 Not Found", r#"{"error_code":40401,"message":"not found"}"#.to_owned());
        let registry = crate::runtime::health::HealthRegistry::new();
        let probe = registry.probe(super::super::NAME);
        let mut decoders = Decoders::new(SchemaSource::Remote { url, http: reqwest::Client::new() }, Some(probe));
        let payload = frame(9);
        let waiting = tokio::spawn(async move { decoders.decode("market.crypto.trades.binance", &payload).await });
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!waiting.is_finished(), "held, not dead-lettered");
        let why = registry.report()[super::super::NAME].last_error.clone().unwrap_or_default();
        assert!(why.contains("does not share the producers' registry") && why.contains("kafka.registry_url"), "{why}");
        waiting.abort();
    }
}
