//! The Prometheus recorder: installed once per process, rendered at /metrics,
//! and the catalogue of every metric K2 exports.
//!
//! The `metrics` crate shows a series only once something touched it, so a
//! dashboard or an alert over a metric of a path not taken yet (a breaker
//! that never opened, Kafka in embedded mode) would find nothing, and
//! `rate()` misses a counter's first increment. The catalogue fixes both: at
//! install every metric is described (`# HELP`) and every series whose labels
//! are a fixed set is registered at 0; series whose label values are known
//! only at run time (an actor's name, a topic) are registered where those
//! values appear. A unit test holds the catalogue and the source together.

use std::sync::OnceLock;

use metrics::Label;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets from 100 µs to 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process's Prometheus handle, installing the recorder on first use.
/// `None` if another recorder was installed first (then metrics go there).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    register_catalogue();
                    // Histograms keep every sample until upkeep folds them into
                    // buckets; without this, memory grows with the event rate.
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new().name("k2-metrics-upkeep".into()).spawn(move || {
                        loop {
                            std::thread::sleep(std::time::Duration::from_secs(1));
                            upkeep.run_upkeep();
                        }
                    });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "metrics upkeep thread not started");
                    }
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Prometheus recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// The metrics in Prometheus text format.
pub fn render() -> String {
    match prometheus() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

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
const QUERIES: &[&str] = &["trades", "quotes", "summary", "bars", "symbols"];
const QUERY_STATUSES: &[&str] = &["ok", "bad_request", "timeout", "error"];

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
        "Events of batches whose processing panicked; counted, not retried.",
        &[("actor", RUNTIME)],
    ),
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
        "Rows a live source lost to the degradation ladder on purpose: their vendor_data (SOFT and above) or the whole quote of a non-critical symbol (GRACEFUL and above). Trades are never dropped.",
        &[("level", RUNTIME), ("symbol", RUNTIME), ("kind", &["vendor_data", "quote"])],
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
    counter("k2_query_page_cache_total", "Lookups of the snapshot page cache.", &[("result", &["hit", "miss"])]),
];

/// The catalogue entry of `name`.
pub fn spec(name: &str) -> Option<&'static MetricSpec> {
    CATALOGUE.iter().find(|m| m.name == name)
}

/// Describes every metric and registers, at 0, every series whose labels
/// are a fixed set. Incrementing by 0 registers without changing a value
/// another thread may already have set.
fn register_catalogue() {
    for m in CATALOGUE {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
        for labels in m.fixed_series().unwrap_or_default() {
            match m.kind {
                Kind::Counter => metrics::counter!(m.name, labels).increment(0),
                Kind::Gauge => metrics::gauge!(m.name, labels).increment(0.0),
                // A histogram handle, once made, is rendered with empty
                // buckets.
                Kind::Histogram => drop(metrics::histogram!(m.name, labels)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use super::*;

    /// One `counter!`, `gauge!` or `histogram!` call in the source.
    #[derive(Debug)]
    struct CallSite {
        at: String,
        kind: Kind,
        /// None when the name is not a string literal.
        name: Option<String>,
        /// Label keys, with the value when it is a string literal.
        labels: Vec<(String, Option<String>)>,
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The text between the parenthesis at `open` and its match, and the
    /// arguments in it split at top-level commas (string literals and
    /// nested brackets respected).
    fn arguments(text: &str, open: usize) -> Vec<String> {
        let mut args = vec![String::new()];
        let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
        for c in text[open..].chars() {
            if in_str {
                args.last_mut().unwrap().push(c);
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '(' | '[' | '{' => {
                    depth += 1;
                    if depth == 1 {
                        continue;
                    }
                }
                ')' | ']' | '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => {
                    args.push(String::new());
                    continue;
                }
                '"' => in_str = true,
                _ => {}
            }
            args.last_mut().unwrap().push(c);
        }
        args.into_iter().map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect()
    }

    fn literal(token: &str) -> Option<String> {
        let t = token.trim();
        (t.len() >= 2 && t.starts_with('"') && t.ends_with('"')).then(|| t[1..t.len() - 1].to_owned())
    }

    /// Every metric macro call under actors/src except this file (whose
    /// calls take names from the catalogue).
    fn call_sites() -> Vec<CallSite> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut sites = Vec::new();
        for file in files {
            if file.ends_with("telemetry.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (macro_name, kind) in
                [("counter!(", Kind::Counter), ("gauge!(", Kind::Gauge), ("histogram!(", Kind::Histogram)]
            {
                for (at, _) in text.match_indices(macro_name) {
                    // describe_counter! and the like are not uses.
                    if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    let open = at + macro_name.len() - 1;
                    let args = arguments(&text, open);
                    let line = text[..at].lines().count();
                    let labels = args
                        .iter()
                        .skip(1)
                        .filter_map(|a| {
                            let (k, v) = a.split_once("=>")?;
                            Some((literal(k).unwrap_or_else(|| k.trim().to_owned()), literal(v)))
                        })
                        .collect();
                    sites.push(CallSite {
                        at: format!("{}:{line}", file.strip_prefix(&src).unwrap().display()),
                        kind,
                        name: args.first().and_then(|a| literal(a)),
                        labels,
                    });
                }
            }
        }
        sites
    }

    #[test]
    fn every_metric_in_the_source_is_in_the_catalogue_with_its_kind_and_labels() {
        let sites = call_sites();
        // Far fewer would mean the scan is broken, not that metrics went.
        assert!(sites.len() > 60, "only {} metric calls found", sites.len());
        let mut problems = Vec::new();
        for site in &sites {
            let Some(name) = &site.name else {
                problems.push(format!("{}: the metric's name is not a string literal", site.at));
                continue;
            };
            let Some(spec) = spec(name) else {
                problems.push(format!("{}: {name} is not in telemetry::CATALOGUE", site.at));
                continue;
            };
            if spec.kind != site.kind {
                problems
                    .push(format!("{}: {name} is a {:?} here, a {:?} in the catalogue", site.at, site.kind, spec.kind));
            }
            let used: BTreeSet<&str> = site.labels.iter().map(|(k, _)| k.as_str()).collect();
            let listed: BTreeSet<&str> = spec.labels.iter().map(|(k, _)| *k).collect();
            if used != listed {
                problems.push(format!("{}: {name} has labels {used:?} here, {listed:?} in the catalogue", site.at));
            }
            for (key, value) in &site.labels {
                let fixed = spec.labels.iter().find(|(k, _)| k == key).map(|(_, v)| *v).unwrap_or_default();
                if let Some(value) = value
                    && !fixed.is_empty()
                    && !fixed.contains(&value.as_str())
                {
                    problems
                        .push(format!("{}: {name}{{{key}=\"{value}\"}} is not among the catalogue's values", site.at));
                }
            }
        }
        let used: BTreeSet<&str> = sites.iter().filter_map(|s| s.name.as_deref()).collect();
        for spec in CATALOGUE {
            if !used.contains(spec.name) {
                problems.push(format!("{} is in the catalogue but nothing records it", spec.name));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_catalogue_names_each_metric_once_with_a_prometheus_name_and_help() {
        let mut seen = BTreeMap::new();
        for m in CATALOGUE {
            assert!(seen.insert(m.name, ()).is_none(), "{} is listed twice", m.name);
            assert!(
                m.name.starts_with("k2_")
                    && m.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty(), "{} has no help text", m.name);
            if m.kind == Kind::Counter {
                assert!(m.name.ends_with("_total"), "counter {} should end in _total", m.name);
            }
        }
    }

    #[test]
    fn fixed_label_sets_expand_to_every_combination() {
        let queries = spec("k2_queries_total").unwrap().fixed_series().unwrap();
        assert_eq!(queries.len(), QUERIES.len() * QUERY_STATUSES.len());
        assert!(queries.iter().any(|l| l == &vec![Label::new("query", "bars"), Label::new("status", "timeout")]));
        assert_eq!(spec("k2_spill_rows").unwrap().fixed_series().unwrap(), vec![Vec::<Label>::new()]);
        assert!(spec("k2_actor_up").unwrap().fixed_series().is_none(), "actor names are known only at run time");
    }

    /// Rendering after install shows every fixed series at 0 with its help.
    #[test]
    fn the_recorder_shows_fixed_series_before_anything_records_them() {
        let Some(handle) = prometheus() else {
            panic!("another recorder was installed first");
        };
        let text = handle.render();
        assert!(text.contains("k2_kafka_queue_full_total 0"), "{text}");
        assert!(text.contains("k2_circuit_breaker_state{dependency=\"object-store\"} 0"), "{text}");
        assert!(text.contains("# HELP k2_degradation_level Degradation level"), "{text}");
        assert!(text.contains("k2_query_seconds_bucket{query=\"summary\",le=\"0.01\"} 0"), "{text}");
        assert!(text.contains("k2_lake_files_per_commit{table=\"trades\",quantile=\"0.5\"} 0"), "{text}");
    }
}
