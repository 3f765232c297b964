//! The catalogue: every metric K2 exports, with its kind, help text and
//! labels. Dashboards and alerts use these and nothing else.

use metrics::Label;

/// How a metric is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// A Prometheus histogram (`_bucket`, `_sum`, `_count`) when the name
    /// ends in `_seconds` (the buckets above), else a summary (`quantile`,
    /// `_sum`, `_count`).
    Histogram,
}

/// A label and, when they form a fixed set, its values (empty: the values
/// are known only at run time, such as an actor's name or a topic).
pub type LabelSpec = (&'static str, &'static [&'static str]);

/// One metric K2 exports.
#[derive(Debug)]
pub struct MetricSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Every label its series carry.
    pub labels: &'static [LabelSpec],
}

impl MetricSpec {
    /// Every series of this metric, when all its label values are known
    /// here: the product of the labels' values (one series without labels).
    pub fn fixed_series(&self) -> Option<Vec<Vec<Label>>> {
        let mut series = vec![Vec::new()];
        for (key, values) in self.labels {
            if values.is_empty() {
                return None;
            }
            series = series
                .into_iter()
                .flat_map(|labels: Vec<Label>| {
                    values.iter().map(move |v| {
                        let mut l = labels.clone();
                        l.push(Label::new(*key, *v));
                        l
                    })
                })
                .collect();
        }
        Some(series)
    }
}

const RUNTIME: &[&str] = &[];
const TABLES: &[&str] = &["trades", "quotes"];
/// The circuit breakers' dependencies (`HealthRegistry::breaker` callers).
const DEPENDENCIES: &[&str] = &["kafka", "iceberg", "object-store", "redis", "exchange-rest"];
pub(super) const QUERIES: &[&str] = &["trades", "quotes", "summary", "bars", "symbols"];
pub(super) const QUERY_STATUSES: &[&str] = &["ok", "bad_request", "timeout", "error"];

const fn counter(name: &'static str, help: &'static str, labels: &'static [LabelSpec]) -> MetricSpec {
    MetricSpec { name, kind: Kind::Counter, help, labels }
}

const fn gauge(name: &'static str, help: &'static str, labels: &'static [LabelSpec]) -> MetricSpec {
    MetricSpec { name, kind: Kind::Gauge, help, labels }
}

const fn histogram(name: &'static str, help: &'static str, labels: &'static [LabelSpec]) -> MetricSpec {
    MetricSpec { name, kind: Kind::Histogram, help, labels }
}

/// Every metric K2 exports. Dashboards and alerts (docker/) may use these
/// and nothing else; the tests check both directions.
pub const CATALOGUE: &[MetricSpec] = &[
    // Actors (runtime/health.rs, runtime/supervision/).
    gauge("k2_actor_up", "1 while the actor runs, else 0.", &[("actor", RUNTIME)]),
    gauge(
        "k2_actor_state",
        "The actor's state: 0 starting, 1 running, 2 restarting, 3 failed, 4 stopped.",
        &[("actor", RUNTIME)],
    ),
    counter("k2_actor_restarts_total", "Restarts of the actor after a panic or an error.", &[("actor", RUNTIME)]),
    counter("k2_actor_errors_total", "Failures the actor recorded without restarting.", &[("actor", RUNTIME)]),
    gauge("k2_actor_mailbox_depth", "Messages waiting in the actor's mailbox.", &[("actor", RUNTIME)]),
    counter("k2_actor_messages_total", "Messages the actor handled.", &[("actor", RUNTIME)]),
    counter("k2_actor_events_total", "Market events in the messages the actor handled.", &[("actor", RUNTIME)]),
    gauge(
        "k2_actor_last_message_timestamp_seconds",
        "Unix time of the actor's last message (absent before the first).",
        &[("actor", RUNTIME)],
    ),
    counter(
        "k2_mailbox_full_total",
        "Sends that found the actor's mailbox full and waited (back-pressure).",
        &[("actor", RUNTIME)],
    ),
    counter(
        "k2_dead_letter_events_total",
        "Events of batches whose processing failed; kept in the dead letters (/v1/dead-letters).",
        &[("actor", RUNTIME)],
    ),
    counter(
        "k2_dead_letters_stored_total",
        "Dead letters stored: failed batches (kind events) and refused frames (kind frame).",
        &[("stage", RUNTIME), ("kind", &["events", "frame"])],
    ),
    counter(
        "k2_dead_letters_store_errors_total",
        "Dead letters that could not be written to disk (their input is lost; the log says what).",
        &[],
    ),
    gauge("k2_dead_letters_pending", "Dead letters not yet replayed (k2 dead-letters replay).", &[]),
    counter(
        "k2_supervision_escalations_total",
        "Actors that exhausted their restarts; the service stops (exit 70).",
        &[("actor", RUNTIME)],
    ),
    // Binance connections (binance/).
    gauge(
        "k2_binance_connection_status",
        "1 while the connection's socket is open, else 0.",
        &[("connection", RUNTIME)],
    ),
    gauge(
        "k2_binance_reconnect_delay_seconds",
        "Backoff before the connection's next attempt; 0 once live.",
        &[("connection", RUNTIME)],
    ),
    counter("k2_binance_connection_errors_total", "Connection attempts that failed.", &[("connection", RUNTIME)]),
    counter(
        "k2_binance_reconnects_total",
        "Sockets that ended and were reconnected, by why they ended.",
        &[("reason", &["connect_failed", "closed", "error", "silence", "retired"])],
    ),
    counter("k2_binance_rotations_total", "Make-before-break rotations completed.", &[("connection", RUNTIME)]),
    counter(
        "k2_binance_messages_received_total",
        "Events parsed from the WebSocket, by symbol.",
        &[("symbol", RUNTIME)],
    ),
    counter("k2_binance_message_errors_total", "Frames the connection could not parse.", &[("connection", RUNTIME)]),
    gauge(
        "k2_book_synced",
        "1 while the symbol's order book is synced with the venue, else 0.",
        &[("symbol", RUNTIME)],
    ),
    counter(
        "k2_book_updates_applied_total",
        "Price levels set or removed on synced order books.",
        &[("symbol", RUNTIME)],
    ),
    counter(
        "k2_book_resyncs_total",
        "Order books lost and rebuilt from a new snapshot, by cause.",
        &[
            ("symbol", RUNTIME),
            ("cause", &["gap", "reconnect", "crossed", "shed", "snapshot_behind", "start", "restart", "store_gap"]),
        ],
    ),
    counter(
        "k2_book_crossed_total",
        "Order books found crossed (best bid at or above best ask): a fault, resynced.",
        &[("symbol", RUNTIME)],
    ),
    counter("k2_book_unsynced_seconds_total", "Seconds an order book spent unsynced.", &[("symbol", RUNTIME)]),
    counter(
        "k2_book_snapshot_requests_total",
        "REST depth snapshot requests, by result.",
        &[("result", &["ok", "error"])],
    ),
    counter(
        "k2_book_snapshot_refetches_total",
        "Depth snapshots refused (older than the stream, or the buffered events break after them) and fetched again.",
        &[("symbol", RUNTIME), ("cause", &["gap", "snapshot_behind", "crossed"])],
    ),
    counter(
        "k2_book_periodic_snapshots_total",
        "Periodic snapshots recorded of stored books that moved (book.snapshot_every).",
        &[("symbol", RUNTIME)],
    ),
    counter(
        "k2_book_replays_total",
        "Stored books rebuilt for a query (?at=, /top), by where the replay started: a periodic snapshot or the sync.",
        &[("start", &["periodic", "sync"])],
    ),
    counter(
        "k2_book_events_ignored_total",
        "Depth events not applied: older than the book, from a retired socket, or of a symbol without a book.",
        &[("reason", &["older_than_book", "retired_socket", "unknown_symbol"])],
    ),
    gauge("k2_book_levels", "Price levels a synced order book holds.", &[("symbol", RUNTIME)]),
    gauge(
        "k2_book_buffered_events",
        "Depth events buffered while the order book waits for a snapshot.",
        &[("symbol", RUNTIME)],
    ),
    gauge("k2_book_levels_held", "Price levels held by one order-book actor's books.", &[("connection", RUNTIME)]),
    counter(
        "k2_book_records_committed_total",
        "Order-book records (updates, snapshots, sync changes) committed to the book tables.",
        &[("table", &["book_updates", "book_snapshots"])],
    ),
    gauge("k2_book_records_waiting", "Order-book records recorded and not yet committed to the book tables.", &[]),
    counter("k2_book_commit_failures_total", "Book-table commits that failed (retried at the next flush).", &[]),
    counter("k2_book_records_produced_total", "Order-book records the broker took (Kafka mode).", &[]),
    counter(
        "k2_book_records_undelivered_total",
        "Order-book records that never reached the broker (Kafka mode): their books read as unsynced from there to their next sync.",
        &[("reason", &["delivery", "refused", "encode", "stopped"])],
    ),
    counter("k2_book_records_consumed_total", "Order-book records the book lander took from the book topics.", &[]),
    counter(
        "k2_book_records_missing_total",
        "Order-book records the book topics no longer held where the book lander resumed (retention).",
        &[],
    ),
    counter(
        "k2_book_landing_resets_total",
        "Book-table commits fenced by another flusher that landed the same partition; the lander read again from the tables.",
        &[],
    ),
    gauge("k2_replay_clients", "Replay streams open on the replay port.", &[]),
    // The Flight SQL port (query/flight/).
    counter(
        "k2_flight_statements_total",
        "Flight SQL statements run, by outcome: ok, refused (a limit or a bad request), error, or cancelled (the client went away or cancelled it).",
        &[("status", &["ok", "refused", "error", "cancelled"])],
    ),
    histogram("k2_flight_statement_seconds", "Flight SQL statement time, from its turn to its last batch sent.", &[]),
    gauge("k2_flight_prepared_statements", "Prepared statements the Flight SQL port holds open.", &[]),
    counter(
        "k2_flight_prepared_closed_total",
        "Prepared statements K2 closed to open another: the key's oldest past flight.max_prepared_per_key, or the oldest of the key holding the most past flight.max_prepared.",
        &[("reason", &["key_quota", "bound"])],
    ),
    counter(
        "k2_flight_refused_total",
        "Flight SQL calls refused: no or a wrong key, not read-only, a bad statement or header, no turn within flight.timeout, over flight.timeout, over flight.memory_limit, or over flight.max_rows.",
        &[("reason", &["unauthenticated", "not_read_only", "bad_request", "busy", "timeout", "memory", "rows"])],
    ),
    counter("k2_replay_events_sent_total", "Events the replay port sent.", &[]),
    counter(
        "k2_replay_refused_total",
        "Replay requests refused: a bad parameter (400) or replay.max_clients streams already open (503).",
        &[("reason", &["parameter", "busy"])],
    ),
    counter(
        "k2_book_queries_behind_log_total",
        "Book queries answered before the book lander had read the book's partition to its end (it was more than 5 s behind).",
        &[],
    ),
    gauge("k2_book_lander_partitions_owned", "Book-topic partitions this flusher's book lander owns.", &[]),
    counter("k2_book_lander_rejoins_total", "Times the book lander rejoined its group after owning no partition.", &[]),
    counter("k2_book_lander_consume_errors_total", "Errors the book lander's consumer reported.", &[]),
    counter(
        "k2_binance_rejected_total",
        "Frames rejected by the parser, by reason.",
        &[(
            "reason",
            &[
                "malformed_json",
                "missing_field",
                "unsupported",
                "invalid_value",
                "unknown_quote_asset",
                "decimal",
                "book_side",
            ],
        )],
    ),
    gauge(
        "k2_binance_last_message_timestamp_seconds",
        "Unix time of the connection's last batch of frames.",
        &[("connection", RUNTIME)],
    ),
    // Sequencing, dedup, gap recovery (transforms/, sources/gap_recovery.rs).
    counter(
        "k2_sequence_events_total",
        "Trades by sequence outcome.",
        &[("outcome", &["first", "in_order", "ahead", "late", "duplicate", "reset"])],
    ),
    counter(
        "k2_sequence_gaps_total",
        "Confirmed sequence gaps (sent to gap recovery), by size class.",
        &[("exchange", RUNTIME), ("symbol", RUNTIME), ("size", &["small", "large"])],
    ),
    counter("k2_sequence_missing_total", "Trades missing from confirmed gaps.", &[("exchange", RUNTIME)]),
    counter("k2_duplicates_total", "Events dropped as duplicates.", &[("exchange", RUNTIME)]),
    gauge("k2_dedup_window_ids", "Message ids held in the dedup window.", &[]),
    gauge("k2_dedup_deferred", "Events waiting while another live instance holds their claim.", &[]),
    counter(
        "k2_dedup_deferred_released_total",
        "Waiting events passed on because too many waited (a possible duplicate, never a loss).",
        &[],
    ),
    counter(
        "k2_dedup_evicted_early_total",
        "Ids forgotten before their window ended because the window was full.",
        &[],
    ),
    gauge("k2_gap_recovery_queue", "Gaps waiting for gap recovery.", &[]),
    counter(
        "k2_gap_recovery_requests_total",
        "REST requests of gap recovery, by result.",
        &[("result", &["ok", "error"])],
    ),
    counter(
        "k2_gap_recovery_trades_total",
        "Missing trades recovered over REST or given up as unrecoverable.",
        &[("result", &["recovered", "unrecoverable"])],
    ),
    // The degradation ladder (runtime/degradation.rs, transforms/sequencer.rs).
    gauge(
        "k2_degradation_level",
        "Degradation level: 0 NORMAL, 1 SOFT, 2 GRACEFUL, 3 AGGRESSIVE, 4 CIRCUIT_BREAK.",
        &[],
    ),
    counter(
        "k2_degradation_transitions_total",
        "Changes of the degradation level.",
        &[("from", RUNTIME), ("to", RUNTIME)],
    ),
    counter(
        "k2_shed_total",
        "Rows a live source lost to the degradation ladder on purpose: their vendor_data (SOFT and above), the whole quote of a non-critical symbol (GRACEFUL and above), or a depth event (book_update: non-critical symbols from SOFT, all from AGGRESSIVE). Trades are never dropped.",
        &[("level", RUNTIME), ("symbol", RUNTIME), ("kind", &["vendor_data", "quote", "book_update"])],
    ),
    counter(
        "k2_gaps_given_up_total",
        "Trades of open gaps dropped from the tables' record unrecovered, because a stream held more open ranges than K2 keeps.",
        &[("reason", &["limit"])],
    ),
    // Circuit breakers (runtime/breaker.rs).
    gauge(
        "k2_circuit_breaker_state",
        "The dependency's circuit breaker: 0 closed, 1 open, 2 half-open.",
        &[("dependency", DEPENDENCIES)],
    ),
    counter(
        "k2_circuit_breaker_transitions_total",
        "State changes of the dependency's circuit breaker.",
        &[("dependency", DEPENDENCIES)],
    ),
    // Shared state (state/shared/).
    gauge("k2_state_fallback", "1 while dedup and sequence state fall back to memory.", &[("store", &["redis"])]),
    counter(
        "k2_state_fallback_batches_total",
        "Batches whose shared state fell back to this instance's memory.",
        &[("store", &["redis"]), ("state", &["dedup", "sequence", "liveness", "settle"])],
    ),
    counter(
        "k2_state_settled_ids_total",
        "Message ids marked durable in Redis (their claims final).",
        &[("store", &["redis"])],
    ),
    counter(
        "k2_state_released_ids_total",
        "Claims given up in Redis because the producer could not deliver their records.",
        &[("store", &["redis"])],
    ),
    // The sink (sinks/actor.rs).
    counter("k2_sink_events_total", "Events that reached the sink.", &[("kind", &["trade", "quote"])]),
    histogram(
        "k2_end_to_end_latency_seconds",
        "From the event's exchange timestamp to the sink.",
        &[("stage", &["sink"])],
    ),
    // Iceberg tables (lake/).
    gauge("k2_lake_rows_waiting", "Rows accepted but not yet committed to the table.", &[("table", TABLES)]),
    counter("k2_lake_commits_total", "Snapshots committed.", &[("table", TABLES)]),
    counter(
        "k2_lake_commit_failures_total",
        "Failed writes or commits, all kinds (rows are kept; see k2_lake_permanent_failures_total).",
        &[("table", TABLES)],
    ),
    counter(
        "k2_lake_permanent_failures_total",
        "Failed writes or commits retrying cannot fix (a refused write, a missing bucket): the breaker opens and rows are kept until its probe succeeds.",
        &[("table", TABLES)],
    ),
    counter(
        "k2_lake_commit_conflicts_total",
        "Commits another writer got in first (retried at once).",
        &[("table", TABLES)],
    ),
    histogram("k2_lake_commit_seconds", "Time to write and commit one flush.", &[("table", TABLES)]),
    histogram("k2_lake_files_per_commit", "Data files per committed snapshot.", &[("table", TABLES)]),
    counter("k2_lake_rows_written_total", "Rows committed.", &[("table", TABLES)]),
    counter("k2_lake_bytes_written_total", "Parquet bytes committed.", &[("table", TABLES)]),
    counter(
        "k2_lake_rows_dropped_total",
        "Rows that could not become Arrow and were dropped (a bug).",
        &[("table", TABLES)],
    ),
    // Table maintenance (lake/maintenance/).
    counter(
        "k2_maintenance_rounds_total",
        "Maintenance rounds by outcome (skipped: the ladder was above NORMAL).",
        &[("result", &["ok", "failed", "skipped"])],
    ),
    histogram(
        "k2_maintenance_seconds",
        "Time each maintenance step took per table.",
        &[("table", TABLES), ("step", &["retention", "compaction", "expiry", "orphans"])],
    ),
    counter("k2_maintenance_files_rewritten_total", "Small data files compaction replaced.", &[("table", TABLES)]),
    counter("k2_maintenance_files_written_total", "Data files compaction wrote.", &[("table", TABLES)]),
    counter("k2_maintenance_rows_rewritten_total", "Rows compaction rewrote.", &[("table", TABLES)]),
    counter("k2_maintenance_bytes_rewritten_total", "Bytes of data files compaction read.", &[("table", TABLES)]),
    counter(
        "k2_maintenance_commit_conflicts_total",
        "Maintenance commits another writer got in first (retried on the new state).",
        &[("table", TABLES)],
    ),
    counter("k2_maintenance_snapshots_expired_total", "Snapshots expired.", &[("table", TABLES)]),
    counter(
        "k2_maintenance_files_deleted_total",
        "Files deleted: reached only by expired snapshots, or orphans no snapshot names.",
        &[("table", TABLES), ("reason", &["expired", "orphan"])],
    ),
    counter("k2_maintenance_partitions_dropped_total", "Day partitions retention dropped.", &[("table", TABLES)]),
    counter("k2_maintenance_rows_dropped_total", "Rows in the partitions retention dropped.", &[("table", TABLES)]),
    gauge(
        "k2_table_files_per_partition_max",
        "The most live data files in one day partition, after the last maintenance round.",
        &[("table", TABLES)],
    ),
    gauge(
        "k2_table_files_per_partition_limit",
        "maintenance.alert_files_per_partition: above it K2TableFilesPerPartition fires.",
        &[],
    ),
    gauge("k2_table_data_files", "Live data files, after the last maintenance round.", &[("table", TABLES)]),
    gauge(
        "k2_table_snapshots",
        "Snapshots in the table's metadata, after the last maintenance round.",
        &[("table", TABLES)],
    ),
    // Spill (sinks/spill.rs, sinks/spill_replay.rs).
    gauge("k2_spill_rows", "Rows in the disk spill, waiting for replay.", &[]),
    counter("k2_spill_rows_written_total", "Rows spilled to disk at degradation level 3 and above.", &[]),
    counter("k2_spill_rows_replayed_total", "Spilled rows replayed into the tables.", &[]),
    counter("k2_spill_torn_records_total", "Torn spill records cut off at start (after a crash).", &[]),
    counter("k2_spill_write_failures_total", "Batches the spill could not write.", &[]),
    // Kafka (sinks/kafka.rs, kafka/, lake/flusher.rs).
    counter("k2_kafka_messages_produced_total", "Records delivered to Kafka.", &[("topic", RUNTIME)]),
    counter(
        "k2_kafka_produce_errors_total",
        "Records refused by the producer or not delivered.",
        &[("topic", RUNTIME)],
    ),
    histogram("k2_kafka_delivery_seconds", "From enqueueing a record to its delivery report.", &[("topic", RUNTIME)]),
    counter("k2_kafka_queue_full_total", "Sends that found librdkafka's queue full and waited.", &[]),
    gauge(
        "k2_kafka_producer_held_records",
        "Records the Kafka sink holds back while the Kafka breaker is open (the pipeline waits behind them).",
        &[],
    ),
    counter("k2_kafka_messages_consumed_total", "Records taken from Kafka into the tails.", &[]),
    counter("k2_kafka_consume_errors_total", "Failed consumer polls.", &[]),
    gauge(
        "k2_kafka_consumer_lag",
        "Records in the partition not yet taken (high watermark minus next offset).",
        &[("topic", RUNTIME), ("partition", RUNTIME)],
    ),
    counter(
        "k2_kafka_rebalances_total",
        "Partition assignments and revocations of the flushers' group.",
        &[("kind", &["assign", "revoke"])],
    ),
    counter(
        "k2_kafka_group_rejoins_total",
        "Times this flusher left and rejoined its consumer group (a commit of its was fenced off by another flusher's).",
        &[("reason", &["fenced_commit"])],
    ),
    gauge(
        "k2_kafka_partitions_owned",
        "Partitions of the market topics this flusher owns in its consumer group (0 while it waits for an assignment).",
        &[],
    ),
    counter(
        "k2_kafka_records_missing_total",
        "Records the log no longer holds when they were due (retention).",
        &[("topic", RUNTIME)],
    ),
    counter("k2_kafka_dead_letters_total", "Records sent to the topic's dead-letter topic.", &[("topic", RUNTIME)]),
    counter(
        "k2_kafka_duplicates_dropped_total",
        "Consumed records dropped because their message id appeared within kafka.duplicate_span offsets before.",
        &[("topic", RUNTIME)],
    ),
    counter(
        "k2_kafka_flushes_fenced_total",
        "Flushes dropped because another flusher owns their partitions.",
        &[("table", TABLES)],
    ),
    // Queries (query/).
    counter("k2_queries_total", "Queries by kind and outcome.", &[("query", QUERIES), ("status", QUERY_STATUSES)]),
    histogram("k2_query_seconds", "Query time, waiting included.", &[("query", QUERIES)]),
    counter(
        "k2_http_refused_total",
        "HTTP requests refused: too many in flight (429) or connections open (429) from one address, not received and answered in time (408), or a URI too long (414).",
        &[("reason", &["per_client", "connections_per_client", "timeout", "uri_too_long"])],
    ),
    counter("k2_query_page_cache_total", "Lookups of the snapshot page cache.", &[("result", &["hit", "miss"])]),
    counter(
        "k2_query_follow_failures_total",
        "Loads of a table's latest snapshot that failed where queries follow the catalog (a query node or a producer): queries answer from the last snapshot seen.",
        &[("table", TABLES)],
    ),
    counter(
        "k2_query_log_records_read_total",
        "Kafka mode: records read from the log past the tables' snapshots by hybrid queries (each once while cached).",
        &[],
    ),
    gauge(
        "k2_query_log_cache_rows",
        "Kafka mode: rows of the log past the snapshot kept decoded for hybrid queries, per table (bounded by query.log_cache_rows).",
        &[("table", TABLES)],
    ),
];

/// The catalogue entry of `name`.
pub fn spec(name: &str) -> Option<&'static MetricSpec> {
    CATALOGUE.iter().find(|m| m.name == name)
}
