//! The group's rebalance hooks: assigned partitions continue where the
//! tables end; revoked ones leave their uncommitted rows to the next owner.

use super::*;

/// Runs `future` to completion from a librdkafka callback, which is a
/// synchronous call inside `recv()` on a runtime worker.
pub(super) fn block_on<F>(handle: &tokio::runtime::Handle, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    let joined = blocking(|| std::thread::scope(|s| s.spawn(|| handle.block_on(future)).join()));
    joined.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs `f`, which blocks, telling a multi-threaded runtime first so that
/// its other tasks move to other workers meanwhile.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi { tokio::task::block_in_place(f) } else { f() }
}

/// Why assigned partitions could not be taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum AssignError {
    #[error("reading the tables' offsets: {0}")]
    Lake(#[from] LakeError),
    #[error("setting a partition's offset: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// The group's rebalance hooks: where assigned partitions continue, and
/// what revoked ones leave behind.
pub(super) struct Rebalance {
    /// The Iceberg catalog's breaker: a table that cannot be read for a
    /// reason retrying cannot fix opens it.
    catalog: Arc<CircuitBreaker>,
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
    /// Hooks for a member of `config`'s group landing records in `tails`;
    /// made on the runtime the hooks block on.
    pub(super) fn new(lake: Lake, tails: Tails, config: &KafkaConfig, catalog: Arc<CircuitBreaker>) -> Self {
        Self {
            lake,
            catalog,
            claims: tails.claims.clone(),
            tails,
            handle: tokio::runtime::Handle::current(),
            prefix: config.topic_prefix.clone(),
            duplicate_span: config.duplicate_span,
        }
    }

    /// Reads each table as it is now and sets every assigned partition's
    /// offset to what the table covers (the beginning when it holds none).
    fn assigned(&self, tpl: &mut TopicPartitionList) -> Result<(), AssignError> {
        let load = async {
            let started = std::time::Instant::now();
            let mut delay = Duration::from_millis(100);
            loop {
                match self.adopt_tables().await {
                    Ok(offsets) => {
                        self.catalog.success();
                        return Ok(offsets);
                    }
                    Err(e) if started.elapsed() < ASSIGN_PATIENCE && e.is_permanent() => {
                        // Retrying at once cannot help: the catalog's breaker
                        // opens with the cause (shown in /health), and the
                        // next try waits for its probe.
                        tracing::error!(error = %e, "reading the tables' offsets failed in a way retrying cannot fix");
                        self.catalog.trip(&format!("reading the tables' offsets: {e}"));
                        tokio::time::sleep(self.catalog.open_for().max(Duration::from_millis(100))).await;
                    }
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
        metrics::gauge!("k2_kafka_partitions_owned").set(self.claims.owned().len() as f64);
        Ok(())
    }

    /// Both tables reloaded from the catalog: the tails continue after them,
    /// and together they say where each partition continues.
    async fn adopt_tables(&self) -> Result<Offsets, LakeError> {
        let trades = self.lake.table(TableKind::Trades).await?;
        let quotes = self.lake.table(TableKind::Quotes).await?;
        let mut offsets = self.tails.trades.adopt(trades).await?.offsets;
        let quote_offsets = self.tails.quotes.adopt(quotes).await?.offsets;
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
        metrics::gauge!("k2_kafka_partitions_owned").set(0.0);
        metrics::counter!("k2_kafka_rebalances_total", "kind" => "revoke").increment(1);
        tracing::info!(dropped, "partitions revoked; uncommitted rows left to their next owner");
    }
}

pub(super) type GroupConsumer = StreamConsumer<Rebalance>;
