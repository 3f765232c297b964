//! The group member itself: its clients, its subscription and the loop that
//! takes records, reports lag and rejoins after a fenced commit.

use super::ingest::{Decoders, Recent, ingest};
use super::membership;
use super::rebalance::{GroupConsumer, Rebalance};
use super::*;

/// What a group member is made of.
pub(super) struct Member<'a> {
    pub config: &'a KafkaConfig,
    /// `group.instance.id`; `None`: dynamic membership.
    pub instance_id: Option<&'a str>,
    /// The slot file stamped while this member is alive.
    pub alive: Option<std::path::PathBuf>,
    /// Joins the group only after this long (a killed predecessor on this
    /// data directory may still be a member).
    pub join_after: Duration,
    pub lake: Lake,
    pub tails: Tails,
    pub schemas: SchemaSource,
    pub probe: Probe,
    /// Drills: makes the loop panic.
    pub inject: Arc<Notify>,
    pub catalog: Arc<CircuitBreaker>,
}

/// Starts consuming into `tails` on the runtime as a member of the
/// flushers' group; runs until the process ends or the client can no longer
/// be used, and then says why.
pub(super) fn start(member: Member<'_>) -> Result<tokio::task::JoinHandle<String>, KafkaError> {
    let Member { config, instance_id, alive, join_after, lake, tails, schemas, probe, inject, catalog } = member;
    let context = Rebalance::new(lake, tails.clone(), config, catalog);
    let mut client = crate::kafka::consumer_config(config, &format!("{}{}", config.topic_prefix, config.group));
    if let Some(id) = instance_id {
        client.set("group.instance.id", id);
    }
    let consumer: GroupConsumer =
        client.set("queued.max.messages.kbytes", config.fetch_ahead_kb.to_string()).create_with_context(context)?;
    let dlq: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create()?;
    let subscription = pattern(&config.topic_prefix);
    if join_after.is_zero() {
        consumer.subscribe(&[&subscription])?;
    }
    metrics::gauge!("k2_kafka_partitions_owned").set(0.0);
    let config = config.clone();
    Ok(tokio::spawn(async move {
        let consumer = Arc::new(consumer);
        if !join_after.is_zero() {
            tracing::info!(
                secs = join_after.as_secs_f64(),
                "this data directory's previous flusher was killed and may still be in the group: joining once its session is over"
            );
            tokio::time::sleep(join_after).await;
            if let Err(e) = consumer.subscribe(&[&subscription]) {
                return format!("subscribing to {subscription}: {e}");
            }
        }
        let claims = tails.claims.clone();
        let mut decoders = Decoders::new(schemas, Some(probe.clone()));
        let mut recent = Recent::new(config.duplicate_span);
        let mut look = tokio::time::interval(Duration::from_secs(3));
        let reporting = Arc::new(std::sync::atomic::AtomicBool::new(false));
        loop {
            tokio::select! {
                () = inject.notified() => panic!("injected panic"),
                _ = look.tick() => {
                    if let Some(reason) = fatal(&consumer) {
                        return reason;
                    }
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
                    if let Some(path) = &alive {
                        membership::stamp(path);
                    }
                    if claims.take_resync() {
                        // A commit was fenced: rejoin, so that the group
                        // assigns afresh and this flusher rereads the tables.
                        tracing::warn!("rejoining the consumer group after a fenced commit");
                        metrics::counter!("k2_kafka_group_rejoins_total", "reason" => "fenced_commit").increment(1);
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
                    let mut batch = Vec::with_capacity(config.consume_batch);
                    match first {
                        Ok(m) => batch.push((claims.epoch(), m.detach())),
                        Err(e) => {
                            if let Some(reason) = fatal(&consumer) {
                                return reason;
                            }
                            tracing::warn!(error = %e, "consume failed");
                            metrics::counter!("k2_kafka_consume_errors_total").increment(1);
                            continue;
                        }
                    }
                    // Take what else has arrived, without waiting.
                    while batch.len() < config.consume_batch {
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

/// librdkafka's fatal errors leave its client unusable for good; a static
/// member fenced by the coordinator (after a broker restart, for one) is
/// such a case. The actor then starts a new client, which presents the same
/// instance id and is given the member's assignment back.
fn fatal(consumer: &GroupConsumer) -> Option<String> {
    let (code, reason) = consumer.client().fatal_error()?;
    tracing::error!(?code, %reason, "the consumer's client failed for good; starting a new one");
    Some(format!("the consumer's client failed for good ({code:?}): {reason}"))
}

/// Lag and the group's offsets, both for monitoring only (where to resume is
/// the snapshots' business): `k2_kafka_consumer_lag{topic,partition}` is the
/// high watermark minus the next offset this consumer takes, and the group
/// commit carries the offsets the latest snapshots cover.
pub(super) async fn report_progress(consumer: &Arc<GroupConsumer>, tails: &Tails) {
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
