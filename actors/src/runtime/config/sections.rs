//! The sections of the configuration, one struct each; `[storage]` is in
//! its own file.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DegradationConfig {
    /// How often the controller looks.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows accepted but not yet durable that trigger levels 1, 2, 3, 4.
    /// Absent: 3, 6, 12 and 24 flushes' worth (`flush.max_rows`), so that
    /// the rows a healthy flusher holds between commits never count as lag.
    #[serde(default)]
    pub lag: Option<[u64; 4]>,
    /// The age of the oldest row not yet durable, in units of
    /// `flush.max_age` (counted as at least 10 s), that triggers levels 1,
    /// 2, 3, 4: a flusher that keeps up commits every row within about one
    /// `max_age` plus a commit.
    pub age: [f64; 4],
    /// Fractions of `memory_budget_mb` (resident memory) that trigger levels
    /// 1, 2, 3, 4.
    pub memory: [f64; 4],
    /// 0: memory is not watched.
    pub memory_budget_mb: u64,
    /// Fractions of a mailbox's capacity that trigger levels 1 and 2...
    pub mailbox: [f64; 2],
    /// ...when the fullest mailbox stays that full this long.
    #[serde(with = "humantime_serde")]
    pub mailbox_for: Duration,
    /// How long a level holds before it may fall.
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
    /// Symbols whose quotes are kept at level 2 and above.
    pub critical_symbols: Vec<String>,
}

/// Circuit breakers' thresholds: these for every dependency, unless its
/// own subsection (`[breakers.kafka]`, say) sets some of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failures within `window` that open a breaker.
    pub failures: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long a breaker stays open before it lets a probe through.
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
    /// Successes in a row, half-open, that close it.
    pub successes: u32,
    #[serde(default)]
    pub kafka: Option<BreakerOverride>,
    #[serde(default)]
    pub iceberg: Option<BreakerOverride>,
    #[serde(default, rename = "object-store")]
    pub object_store: Option<BreakerOverride>,
    #[serde(default)]
    pub redis: Option<BreakerOverride>,
    #[serde(default, rename = "exchange-rest")]
    pub exchange_rest: Option<BreakerOverride>,
}

/// One dependency's own thresholds; what it leaves out comes from
/// `[breakers]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerOverride {
    pub failures: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    pub window: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub cool_down: Option<Duration>,
    pub successes: Option<u32>,
}

impl BreakerConfig {
    /// Thresholds alone, the same for every dependency.
    pub fn new(failures: u32, window: Duration, cool_down: Duration, successes: u32) -> Self {
        Self {
            failures,
            window,
            cool_down,
            successes,
            kafka: None,
            iceberg: None,
            object_store: None,
            redis: None,
            exchange_rest: None,
        }
    }

    /// The thresholds of `dependency`'s breaker (`kafka`, `iceberg`,
    /// `object-store`, `redis`, `exchange-rest`).
    pub fn of(&self, dependency: &str) -> BreakerConfig {
        let own = match dependency {
            "kafka" => &self.kafka,
            "iceberg" => &self.iceberg,
            "object-store" => &self.object_store,
            "redis" => &self.redis,
            "exchange-rest" => &self.exchange_rest,
            _ => &None,
        };
        let own = own.clone().unwrap_or_default();
        Self::new(
            own.failures.unwrap_or(self.failures),
            own.window.unwrap_or(self.window),
            own.cool_down.unwrap_or(self.cool_down),
            own.successes.unwrap_or(self.successes),
        )
    }

    /// Each dependency's thresholds, for validation.
    pub fn each(&self) -> [(&'static str, BreakerConfig); 5] {
        ["kafka", "iceberg", "object-store", "redis", "exchange-rest"].map(|d| (d, self.of(d)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Embedded,
    Kafka,
}

/// What one process of a deployment does. Each role but `all` is a preset
/// of other keys, applied over them when the configuration is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Whatever the other keys say (one process doing everything, by
    /// default).
    All,
    /// Kafka mode: sources into Kafka, no consumer.
    Producer,
    /// Kafka mode: the consumer into the tables, no sources.
    Flusher,
    /// No sources, no consumer: serves queries from the tables' latest
    /// snapshots, which it follows in the catalog.
    Query,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Put before every topic name (tests, several environments on one
    /// cluster).
    pub topic_prefix: String,
    /// For topics K2 creates.
    pub partitions: i32,
    pub replication_factor: i32,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Producer batch size in bytes.
    pub batch_bytes: usize,
    pub compression: String,
    /// A Confluent-compatible schema registry; empty: K2's own.
    pub registry_url: String,
    /// How long librdkafka keeps retrying a message before it fails.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// A live source's batch held this long by an open Kafka breaker goes
    /// to the spill on disk instead, replayed in order into Kafka once the
    /// breaker closes; 0 holds without spilling.
    #[serde(with = "humantime_serde")]
    pub spill_after: Duration,
    /// Consume the market topics into the Iceberg tables in this process.
    pub consume: bool,
    /// The flushers' consumer group (after `topic_prefix`).
    pub group: String,
    /// A flusher silent this long leaves the group.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Static group membership (`group.instance.id`): `auto` for an id
    /// stable per data directory, empty for dynamic membership.
    pub instance_id: String,
    /// A consumed record whose message id appeared within this many offsets
    /// before it in its partition is dropped; 0 turns the check off.
    pub duplicate_span: i64,
    /// A consumed record larger than this goes to the dead-letter topic
    /// (its first 64 KiB, with its size) instead of being decoded.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// The consumer's fetches: at most this many bytes per partition...
    pub fetch_partition_bytes: usize,
    /// ...and per response (librdkafka's `max.partition.fetch.bytes` and
    /// `fetch.max.bytes`).
    pub fetch_max_bytes: usize,
    /// How long the broker may hold a fetch while it has less than a
    /// batch to give (`fetch.wait.max.ms`).
    #[serde(with = "humantime_serde")]
    pub fetch_wait: Duration,
    /// How much librdkafka fetches ahead per partition while K2 is busy
    /// (`queued.max.messages.kbytes`), in KiB.
    pub fetch_ahead_kb: usize,
    /// Most records the consumer decodes and takes into the tails at once.
    pub consume_batch: usize,
}

fn default_max_record_bytes() -> usize {
    1 << 20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushConfig {
    /// A flush starts when this many rows wait...
    pub max_rows: usize,
    /// ...or when the oldest waiting row is this old.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Backoff between attempts of a failed write or commit.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

/// Table maintenance: compaction, snapshot expiry, orphan files and
/// retention, run by the maintenance actor and `k2 maintain`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Whether `k2 run` maintains the tables on a schedule.
    pub enabled: bool,
    /// How often a round runs (the first one this long after start).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Compacted data files are written up to about this size (MiB).
    pub target_file_size_mb: u64,
    /// A day partition is compacted when it holds at least this many files
    /// smaller than three quarters of the target.
    pub min_files: usize,
    /// Snapshots younger than this are kept...
    #[serde(with = "humantime_serde")]
    pub keep_snapshots_for: Duration,
    /// ...and always at least this many of the newest.
    pub keep_last_snapshots: usize,
    /// Files under a table's location that no snapshot references are
    /// deleted once they are this old: younger ones may belong to a flush or
    /// a compaction still under way.
    #[serde(with = "humantime_serde")]
    pub orphan_age: Duration,
    /// Per table (`trades`, `quotes`): day partitions whose day ended longer
    /// ago than this are dropped. A table not named keeps everything.
    #[serde(default, with = "retention_serde")]
    pub retention: std::collections::BTreeMap<String, Duration>,
    /// The file count per partition above which
    /// `k2_maintenance_files_per_partition_max` fires its alert.
    pub alert_files_per_partition: u64,
}

mod retention_serde {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Duration>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(table, text)| {
                humantime::parse_duration(&text)
                    .map(|d| (table.clone(), d))
                    .map_err(|e| serde::de::Error::custom(format!("maintenance.retention.{table}: {e}")))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// A query running longer is cancelled and answered with 503.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Queries running at once; more wait (within their time budget).
    pub max_concurrent: usize,
    /// Time zone of each exchange's trading day (summaries, daily bars).
    pub timezones: std::collections::BTreeMap<String, chrono_tz::Tz>,
    /// Kafka mode: rows of the log past the snapshots kept decoded between
    /// queries, per table.
    pub log_cache_rows: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinanceConfig {
    pub enabled: bool,
    /// Combined-stream WebSocket base URL (`ws://` or `wss://`).
    pub endpoint: String,
    pub alternate_endpoint: String,
    /// REST base URL for gap recovery.
    pub rest_endpoint: String,
    /// Sent as X-MBX-APIKEY by gap recovery; text or `{ file = "path" }`.
    pub api_key: Secret,
    /// Symbols, any case.
    pub symbols: Vec<String>,
    pub book_ticker: bool,
    pub max_streams_per_connection: usize,
    #[serde(with = "humantime_serde")]
    pub rotate_after: Duration,
    #[serde(with = "humantime_serde")]
    pub silence_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    pub sample_data: bool,
}

/// `[book]`: Binance order books (see `config/default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookConfig {
    pub enabled: bool,
    /// Record what the books do in `market.book_updates` and
    /// `market.book_snapshots` (embedded mode), so `/v1/book/{symbol}?at=`
    /// rebuilds a book at any instant.
    pub store: bool,
    pub snapshot_limit: usize,
    /// Every this long, each stored book that moved since its last sync or
    /// periodic snapshot is recorded as a snapshot of its best
    /// `snapshot_depth` known levels (cause `periodic`), so that `?at=`
    /// replays from the nearest one, not from the sync. Zero: never.
    #[serde(with = "humantime_serde")]
    pub snapshot_every: Duration,
    pub snapshot_depth: usize,
    pub max_buffer: usize,
    #[serde(with = "humantime_serde")]
    pub update_speed: Duration,
    #[serde(with = "humantime_serde")]
    pub snapshot_retry: Duration,
}

impl BookConfig {
    /// The stream suffix Binance names the update speed by.
    pub fn stream_suffix(&self) -> &'static str {
        if self.update_speed >= Duration::from_secs(1) { "@depth" } else { "@depth@100ms" }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapRecoveryConfig {
    pub enabled: bool,
    pub requests_per_second: u32,
    pub max_attempts: u32,
    pub page_size: u32,
}

/// The replay port: stored trades over a WebSocket in Binance's format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    pub enabled: bool,
    pub bind: std::net::SocketAddr,
    /// Streams served at once; one more is refused (503).
    pub max_clients: usize,
}

/// The Arrow Flight SQL port: read-only SQL over the hybrid view.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightConfig {
    pub enabled: bool,
    pub bind: std::net::SocketAddr,
    /// A statement's budget from planning to its last batch sent; past it
    /// the stream ends with DEADLINE_EXCEEDED.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Bytes the sorts, joins and aggregates of all Flight queries may hold
    /// at once (DataFusion's memory pool); a query that needs more fails
    /// with RESOURCE_EXHAUSTED, the others go on.
    pub memory_limit: usize,
    /// Rows one result may hold; a larger one ends with RESOURCE_EXHAUSTED.
    pub max_rows: u64,
    /// Prepared statements held open at once; past it, the oldest of the
    /// key holding the most is closed.
    pub max_prepared: usize,
    /// Prepared statements one API key holds open at once; past it, that
    /// key's oldest is closed (one client never closes another's).
    pub max_prepared_per_key: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of /health, /metrics and the API.
    pub bind: SocketAddr,
    /// Serve /admin/* fault injection (refused unless bound to loopback).
    pub admin: bool,
    /// When not empty, `/v1/*` and the registry's writes require one of
    /// these in `X-API-Key`; each as text or `{ file = "path" }`.
    #[serde(default)]
    pub api_keys: Vec<Secret>,
    /// A request's body must arrive and its answer start within this (408).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests in flight from one client address at most (429 past it).
    #[serde(default = "default_requests_per_client")]
    pub max_requests_per_client: usize,
    /// Connections open from one client address at most: a request on one
    /// past it is answered 429 and the connection closed.
    #[serde(default = "default_connections_per_client")]
    pub max_connections_per_client: usize,
    /// Connections the server holds open at most, from all clients: past
    /// it, new ones wait in the listen backlog. Keeps the HTTP port from
    /// taking the file descriptors the tables, Kafka and Redis need.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Longest request target (path and query) in bytes (414 past it).
    #[serde(default = "default_max_uri_length")]
    pub max_uri_length: usize,
}

fn default_connections_per_client() -> usize {
    256
}

fn default_max_connections() -> usize {
    2048
}

fn default_max_uri_length() -> usize {
    8192
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_requests_per_client() -> usize {
    64
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Most events one message between actors carries.
    pub batch_size: usize,
    /// Messages an actor's mailbox holds before senders wait.
    pub mailbox_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionConfig {
    /// Restarts allowed within `window` before escalation.
    pub max_restarts: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Per actor kind (`binance` for every `binance-N`): any of the keys
    /// above; a key left out takes the value above.
    #[serde(default)]
    pub kinds: std::collections::BTreeMap<String, PolicyOverride>,
}

/// One actor kind's departures from the `[supervision]` defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    pub max_restarts: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    pub window: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub backoff_initial: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub backoff_max: Option<Duration>,
}

/// Every actor kind a `[supervision.kinds.*]` section may name.
pub const ACTOR_KINDS: [&str; 12] = [
    "binance",
    "book",
    "dedup",
    "degradation",
    "gap_recovery",
    "iceberg-flusher",
    "kafka-consumer",
    "maintenance",
    "query-handler",
    "sequencer",
    "sink",
    "spill-replay",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSection {
    pub large_gap: u64,
    pub reset_distance: u64,
    pub reorder_window: u64,
    #[serde(with = "humantime_serde")]
    pub reorder_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`; empty: dedup and sequence state in memory.
    pub url: String,
    /// Longest wait for one round trip before falling back to memory.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Put before every key (several deployments on one Redis).
    pub key_prefix: String,
    /// How long an instance counts as alive after its last word to Redis;
    /// its claims on ids not yet durable pass to another instance after
    /// that.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsxConfig {
    pub timezone: chrono_tz::Tz,
}
