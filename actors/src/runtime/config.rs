//! Configuration: the embedded profile (config/default.toml), then a file,
//! then `K2__SECTION__KEY` environment variables. Unknown keys and bad values
//! are refused at start with the key named; validation reports every problem
//! at once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use thiserror::Error;

/// The embedded profile, compiled into the binary.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration is invalid:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `embedded` (the default: accepted rows go straight to the Iceberg
    /// tables) or `kafka` (they go to Kafka topics).
    pub mode: Mode,
    pub http: HttpConfig,
    pub pipeline: PipelineConfig,
    pub supervision: SupervisionConfig,
    pub sequence: SequenceSection,
    pub dedup: DedupConfig,
    pub asx: AsxConfig,
    pub binance: BinanceConfig,
    pub gap_recovery: GapRecoveryConfig,
    pub storage: StorageConfig,
    pub flush: FlushConfig,
    pub query: QueryConfig,
    pub kafka: KafkaConfig,
    pub breakers: BreakerConfig,
    pub redis: RedisConfig,
    pub degradation: DegradationConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DegradationConfig {
    /// How often the controller looks.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows accepted but not yet durable that trigger levels 1, 2, 3, 4.
    pub lag: [u64; 4],
    /// Fractions of `memory_budget_mb` (resident memory) that trigger levels
    /// 1, 2, 3, 4.
    pub memory: [f64; 4],
    /// 0: memory is not watched.
    pub memory_budget_mb: u64,
    /// Fractions of a mailbox's capacity that trigger levels 1 and 2.
    pub mailbox: [f64; 2],
    /// How long a level holds before it may fall.
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
    /// Symbols whose quotes are kept at level 2 and above.
    pub critical_symbols: Vec<String>,
}

/// Circuit breakers' thresholds (the same for every dependency).
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Embedded,
    Kafka,
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
    /// Consume the market topics into the Iceberg tables in this process.
    pub consume: bool,
    /// The flushers' consumer group (after `topic_prefix`).
    pub group: String,
    /// A flusher silent this long leaves the group.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Static group membership (`group.instance.id`); empty: dynamic.
    pub instance_id: String,
    /// A consumed record whose message id appeared within this many offsets
    /// before it in its partition is dropped; 0 turns the check off.
    pub duplicate_span: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Holds `catalog.db` (the Iceberg SQL catalog and the schema registry),
    /// the spill and, unless `warehouse` says otherwise, `warehouse/`.
    pub data_dir: std::path::PathBuf,
    /// The catalog's name; other engines must open it by the same name.
    pub catalog_name: String,
    pub namespace: String,
    /// Which Iceberg catalog holds the tables.
    pub catalog: CatalogKind,
    /// The REST catalog's base URL (`catalog = "rest"`).
    pub catalog_uri: String,
    /// Where data and metadata files go: empty for `{data_dir}/warehouse`,
    /// else a URL (`s3://bucket/prefix`, `file:///abs/path`); a REST
    /// catalog may also take a warehouse name it knows.
    pub warehouse: String,
    /// S3-compatible object store; empty keys leave the AWS defaults
    /// (environment, profile, instance role) in force.
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: Secret,
    /// `bucket` in the path, not the host name (MinIO, most self-hosted
    /// stores).
    pub s3_path_style: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    /// Iceberg's SQL catalog on SQLite in `data_dir` (the embedded default).
    Sql,
    /// An Iceberg REST catalog at `catalog_uri`.
    Rest,
}

/// Where the warehouse is, as `storage.warehouse` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warehouse {
    /// `{data_dir}/warehouse` (the key is empty).
    Default,
    /// A `file://` URL: a local directory.
    Local(std::path::PathBuf),
    /// An `s3://` (or `s3a://`) URL, without a trailing slash.
    S3(String),
    /// A REST catalog's own name for a warehouse (not a URL).
    Named(String),
}

impl StorageConfig {
    /// What `warehouse` names, or why it is refused (naming the key).
    pub fn warehouse(&self) -> Result<Warehouse, String> {
        let raw = self.warehouse.trim();
        if raw.is_empty() {
            return Ok(Warehouse::Default);
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            // Polaris and Lakekeeper call a warehouse by name; the SQL
            // catalog needs a place.
            return match self.catalog {
                CatalogKind::Rest if !raw.contains(['/', ':']) => Ok(Warehouse::Named(raw.to_owned())),
                _ => Err(format!(
                    "storage.warehouse must be empty (for {{data_dir}}/warehouse) or a URL such as s3://bucket/prefix or file:///abs/path, not {raw:?}"
                )),
            };
        };
        match scheme {
            "file" => {
                // Table locations are the warehouse + "/namespace/table".
                let path = std::path::Path::new(rest.trim_end_matches('/'));
                if path.is_absolute() {
                    Ok(Warehouse::Local(path.to_owned()))
                } else {
                    Err(format!("storage.warehouse: a file URL needs an absolute path (file:///abs/path), not {raw:?}"))
                }
            }
            "s3" | "s3a" => {
                let bucket = rest.split('/').next().unwrap_or_default();
                if bucket.is_empty() {
                    Err(format!("storage.warehouse: an S3 URL names a bucket (s3://bucket/prefix), not {raw:?}"))
                } else {
                    Ok(Warehouse::S3(raw.trim_end_matches('/').to_owned()))
                }
            }
            other => Err(format!("storage.warehouse: scheme {other}:// is not supported (s3:// or file://)")),
        }
    }

    /// Every problem of `[storage]`, each naming its key.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.catalog_name.is_empty() {
            problems.push("storage.catalog_name must not be empty".to_owned());
        }
        if self.namespace.is_empty() {
            problems.push("storage.namespace must not be empty".to_owned());
        }
        match self.catalog {
            CatalogKind::Rest if self.catalog_uri.is_empty() => {
                problems.push("storage.catalog_uri must be set when storage.catalog = \"rest\"".to_owned())
            }
            CatalogKind::Rest => {
                if let Err(e) = http_url(&self.catalog_uri) {
                    problems.push(format!("storage.catalog_uri {e}"));
                }
            }
            CatalogKind::Sql if !self.catalog_uri.is_empty() => problems.push(
                "storage.catalog_uri is only read when storage.catalog = \"rest\"; the SQL catalog lives in storage.data_dir"
                    .to_owned(),
            ),
            CatalogKind::Sql => {}
        }
        if let Err(e) = self.warehouse() {
            problems.push(e);
        }
        if !self.s3_endpoint.is_empty()
            && let Err(e) = http_url(&self.s3_endpoint)
        {
            problems.push(format!("storage.s3_endpoint {e}"));
        }
        if self.s3_access_key_id.is_empty() != self.s3_secret_access_key.is_empty() {
            problems.push(
                "storage.s3_access_key_id and storage.s3_secret_access_key are set together or not at all".to_owned(),
            );
        }
        problems
    }
}

/// An `http://` or `https://` URL with a host.
fn http_url(text: &str) -> Result<(), String> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(_) => Err(format!("must be an http:// or https:// URL, not {text:?}")),
        Err(e) => Err(format!("is not a URL ({e}): {text:?}")),
    }
}

/// A credential: never shown by `Debug`. Text only: figment reads an
/// unquoted environment value that looks like a number as one, which would
/// lose leading zeros, so such a value is refused with the fix named.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"<redacted>\"" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string (in an environment variable, quote one that looks like a number: '\"0123\"')")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
        }
        d.deserialize_str(Text)
    }
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
    pub api_key: String,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapRecoveryConfig {
    pub enabled: bool,
    pub requests_per_second: u32,
    pub max_attempts: u32,
    pub page_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of /health, /metrics and the API.
    pub bind: SocketAddr,
    /// Serve /admin/* fault injection (refused unless bound to loopback).
    pub admin: bool,
    /// When not empty, `/v1/*` requires one of these in `X-API-Key`.
    #[serde(default)]
    pub api_keys: Vec<String>,
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
pub const ACTOR_KINDS: [&str; 10] = [
    "binance",
    "dedup",
    "degradation",
    "gap_recovery",
    "iceberg-flusher",
    "kafka-consumer",
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

impl Config {
    /// The embedded profile, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("K2__").split("__"))
    }

    /// As [`Config::load`] with an explicit environment provider (tests).
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        let config: Self = figment.merge(env).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Every problem at once, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut need = |ok: bool, msg: &str| {
            if !ok {
                problems.push(msg.to_owned());
            }
        };
        need(self.pipeline.batch_size > 0, "pipeline.batch_size must be at least 1");
        need(self.pipeline.mailbox_capacity > 0, "pipeline.mailbox_capacity must be at least 1");
        need(self.supervision.max_restarts > 0, "supervision.max_restarts must be at least 1");
        need(!self.supervision.window.is_zero(), "supervision.window must be longer than 0");
        need(
            self.supervision.backoff_initial <= self.supervision.backoff_max,
            "supervision.backoff_initial must not exceed supervision.backoff_max",
        );
        for (kind, o) in &self.supervision.kinds {
            need(
                ACTOR_KINDS.contains(&kind.as_str()),
                &format!("supervision.kinds.{kind}: no such actor kind (one of {})", ACTOR_KINDS.join(", ")),
            );
            need(o.max_restarts != Some(0), &format!("supervision.kinds.{kind}.max_restarts must be at least 1"));
            need(
                o.window.is_none_or(|w| !w.is_zero()),
                &format!("supervision.kinds.{kind}.window must be longer than 0"),
            );
            need(
                o.backoff_initial.unwrap_or(self.supervision.backoff_initial)
                    <= o.backoff_max.unwrap_or(self.supervision.backoff_max),
                &format!("supervision.kinds.{kind}.backoff_initial must not exceed its backoff_max"),
            );
        }
        need(self.dedup.capacity > 0, "dedup.capacity must be at least 1");
        need(!self.dedup.window.is_zero(), "dedup.window must be longer than 0");
        let b = &self.binance;
        for (key, url) in [("binance.endpoint", &b.endpoint), ("binance.alternate_endpoint", &b.alternate_endpoint)] {
            need(
                url.starts_with("ws://") || url.starts_with("wss://"),
                &format!("{key} must start with ws:// or wss://"),
            );
        }
        need(
            b.rest_endpoint.starts_with("http://") || b.rest_endpoint.starts_with("https://"),
            "binance.rest_endpoint must start with http:// or https://",
        );
        need(!b.enabled || !b.symbols.is_empty(), "binance.symbols must not be empty when binance.enabled");
        need(
            (2..=1024).contains(&b.max_streams_per_connection),
            "binance.max_streams_per_connection must be between 2 and 1024 (Binance's limit)",
        );
        need(!b.rotate_after.is_zero(), "binance.rotate_after must be longer than 0");
        need(!b.silence_timeout.is_zero(), "binance.silence_timeout must be longer than 0");
        need(b.reconnect_initial <= b.reconnect_max, "binance.reconnect_initial must not exceed binance.reconnect_max");
        let g = &self.gap_recovery;
        need(g.requests_per_second > 0, "gap_recovery.requests_per_second must be at least 1");
        need(g.max_attempts > 0, "gap_recovery.max_attempts must be at least 1");
        need((1..=1000).contains(&g.page_size), "gap_recovery.page_size must be between 1 and 1000");
        need(
            !self.http.admin || self.http.bind.ip().is_loopback(),
            "http.admin may only be on when http.bind is a loopback address",
        );
        need(self.flush.max_rows > 0, "flush.max_rows must be at least 1");
        need(!self.flush.max_age.is_zero(), "flush.max_age must be longer than 0");
        need(self.flush.retry_initial <= self.flush.retry_max, "flush.retry_initial must not exceed flush.retry_max");
        need(!self.query.timeout.is_zero(), "query.timeout must be longer than 0");
        need(self.query.max_concurrent > 0, "query.max_concurrent must be at least 1");
        need(self.breakers.failures > 0, "breakers.failures must be at least 1");
        need(self.breakers.successes > 0, "breakers.successes must be at least 1");
        need(self.kafka.partitions > 0, "kafka.partitions must be at least 1");
        need(self.kafka.replication_factor > 0, "kafka.replication_factor must be at least 1");
        need(
            ["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.kafka.compression.as_str()),
            "kafka.compression must be none, gzip, snappy, lz4 or zstd",
        );
        need(
            self.mode != Mode::Kafka || !self.kafka.bootstrap_servers.is_empty(),
            "kafka.bootstrap_servers must be set when mode = \"kafka\"",
        );
        need(self.http.api_keys.iter().all(|k| !k.is_empty()), "http.api_keys must not hold an empty key");
        problems.extend(self.storage.problems());
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    pub fn sequence_config(&self) -> k2_core::transform::sequence::SequenceConfig {
        k2_core::transform::sequence::SequenceConfig {
            large_gap: self.sequence.large_gap,
            reset_distance: self.sequence.reset_distance,
            reorder_window: self.sequence.reorder_window,
            reorder_timeout: self.sequence.reorder_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Env {
        Env::prefixed("K2_TEST_NOTHING_SET__").split("__")
    }

    #[test]
    fn the_embedded_profile_loads() {
        let c = Config::load_from(None, no_env()).unwrap();
        assert_eq!(c.http.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.dedup.window, Duration::from_secs(24 * 3600));
        assert_eq!(c.asx.timezone, chrono_tz::Australia::Sydney);
    }

    #[test]
    fn a_file_overrides_only_what_it_sets_and_unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k2.toml");
        std::fs::write(&file, "[pipeline]\nbatch_size = 7\n").unwrap();
        let c = Config::load_from(Some(&file), no_env()).unwrap();
        assert_eq!((c.pipeline.batch_size, c.pipeline.mailbox_capacity), (7, 32));

        std::fs::write(&file, "[pipeline]\nbatch_sise = 7\n").unwrap();
        let err = Config::load_from(Some(&file), no_env()).unwrap_err().to_string();
        assert!(err.contains("batch_sise") && err.contains("pipeline"), "{err}");

        std::fs::write(&file, "[dedup]\nwindow = \"soon\"\n").unwrap();
        let err = Config::load_from(Some(&file), no_env()).unwrap_err().to_string();
        assert!(err.contains("dedup.window") || err.contains("window"), "{err}");
    }

    #[test]
    fn supervision_kinds_load_from_nested_tables_and_an_unknown_kind_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k2.toml");
        std::fs::write(&file, "[supervision.kinds.binance]\nmax_restarts = 2\n").unwrap();
        let c = Config::load_from(Some(&file), no_env()).unwrap();
        let binance = &c.supervision.kinds["binance"];
        assert_eq!((binance.max_restarts, binance.window), (Some(2), None));
        // The file adds a kind; the embedded profile's stays.
        assert_eq!(c.supervision.kinds["kafka-consumer"].backoff_initial, Some(Duration::from_secs(1)));

        std::fs::write(&file, "[supervision.kinds.binance-2]\nmax_restarts = 2\n").unwrap();
        let err = Config::load_from(Some(&file), no_env()).unwrap_err().to_string();
        assert!(err.contains("supervision.kinds.binance-2: no such actor kind"), "{err}");

        std::fs::write(&file, "[supervision.kinds.sink]\nbackoff_initial = \"1m\"\n").unwrap();
        let err = Config::load_from(Some(&file), no_env()).unwrap_err().to_string();
        assert!(err.contains("supervision.kinds.sink.backoff_initial"), "against the global backoff_max: {err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k2.toml");
        std::fs::write(
            &file,
            "[pipeline]\nbatch_size = 0\nmailbox_capacity = 0\n[http]\nbind = \"0.0.0.0:1\"\nadmin = true\n",
        )
        .unwrap();
        let err = Config::load_from(Some(&file), no_env()).unwrap_err().to_string();
        for key in ["pipeline.batch_size", "pipeline.mailbox_capacity", "http.admin"] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
    }
}
