//! Configuration: the embedded profile (config/default.toml), then a file,
//! then `K2__SECTION__KEY` environment variables. Unknown keys and bad values
//! are refused at start with the key named; validation reports every problem
//! at once.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use thiserror::Error;

/// The consumer accepts responses up to 256 MiB (`receive.message.max.bytes`),
/// which librdkafka wants 512 bytes above the largest fetch.
const MAX_FETCH: usize = (256 << 20) - 512;

/// The embedded profile, compiled into the binary.
pub const DEFAULT_TOML: &str = include_str!("../../../../config/default.toml");

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
    /// `all`, `producer`, `flusher` or `query` (see [`Role`]).
    pub role: Role,
    pub http: HttpConfig,
    pub pipeline: PipelineConfig,
    pub supervision: SupervisionConfig,
    pub sequence: SequenceSection,
    pub dedup: DedupConfig,
    pub asx: AsxConfig,
    pub binance: BinanceConfig,
    pub book: BookConfig,
    pub gap_recovery: GapRecoveryConfig,
    pub storage: StorageConfig,
    pub flush: FlushConfig,
    pub maintenance: MaintenanceConfig,
    pub query: QueryConfig,
    pub replay: ReplayConfig,
    pub flight: FlightConfig,
    pub kafka: KafkaConfig,
    pub breakers: BreakerConfig,
    pub redis: RedisConfig,
    pub degradation: DegradationConfig,
}

mod secret;
mod sections;
mod storage;

pub use secret::{Secret, mask_url_passwords};
pub use sections::*;
pub use storage::*;

/// The tables `maintenance.retention` may name (lake::maintenance's
/// `Maintained`, whose test holds the two lists equal: config sits below
/// the lake in the layout, so it cannot ask it).
pub const MAINTAINED_TABLES: [&str; 4] = ["trades", "quotes", "book_updates", "book_snapshots"];

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
        let mut config: Self = figment.merge(env).extract().map_err(Box::new)?;
        config.apply_role();
        config.validate()?;
        Ok(config)
    }

    /// Sets the keys `role` decides. A role named on the command line is
    /// set, then applied, then validated again.
    pub fn apply_role(&mut self) {
        match self.role {
            Role::All => {}
            Role::Producer => self.kafka.consume = false,
            Role::Flusher => {
                self.binance.enabled = false;
                self.gap_recovery.enabled = false;
                self.kafka.consume = true;
            }
            Role::Query => {
                self.binance.enabled = false;
                self.gap_recovery.enabled = false;
                self.kafka.consume = false;
                // In embedded mode the one writer beside it maintains the
                // tables; its flushes do not expect another process's
                // commits.
                if self.mode == Mode::Embedded {
                    self.maintenance.enabled = false;
                }
            }
        }
    }

    /// Whether this process commits no rows to the tables (a query node, or
    /// a Kafka producer that does not consume): its queries then follow the
    /// tables' latest snapshots in the catalog, where other processes'
    /// commits show.
    pub fn follows_catalog(&self) -> bool {
        self.role == Role::Query || (self.mode == Mode::Kafka && !self.kafka.consume)
    }

    /// Whether this process records its order books in the book tables:
    /// books kept and stored, in embedded mode, by a writer.
    pub fn stores_books(&self) -> bool {
        self.book.enabled && self.book.store && self.mode == Mode::Embedded && self.role != Role::Query
    }

    /// Whether this process produces its order books' records to the book
    /// topics: books kept and stored, in Kafka mode, by a producer.
    pub fn produces_books(&self) -> bool {
        self.book.enabled && self.book.store && self.mode == Mode::Kafka && self.role != Role::Query
    }

    /// Whether this process lands the book topics in the book tables: a
    /// Kafka-mode flusher with `book.store` (its own books need not be on).
    pub fn lands_books(&self) -> bool {
        self.book.store && self.mode == Mode::Kafka && self.kafka.consume && self.role != Role::Query
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
        need(
            (1..=5000).contains(&self.book.snapshot_limit),
            "book.snapshot_limit must be from 1 to 5000 (what Binance's GET /api/v3/depth accepts)",
        );
        need(self.book.max_buffer > 0, "book.max_buffer must be at least 1");
        need(
            (1..=5000).contains(&self.book.snapshot_depth),
            "book.snapshot_depth must be from 1 to 5000 (levels per side of each periodic snapshot)",
        );
        need(
            self.book.snapshot_every.is_zero() || self.book.snapshot_every >= Duration::from_secs(1),
            "book.snapshot_every must be 0s (off) or at least 1s",
        );
        need(
            [Duration::from_millis(100), Duration::from_secs(1)].contains(&self.book.update_speed),
            "book.update_speed must be 100ms or 1s (the speeds Binance's depth stream has)",
        );
        need(
            self.http.request_timeout > self.query.timeout,
            "http.request_timeout must be longer than query.timeout (a query would be cut off with 408 before its own 503)",
        );
        need(self.http.max_requests_per_client > 0, "http.max_requests_per_client must be at least 1");
        need(
            self.http.max_connections_per_client >= self.http.max_requests_per_client,
            "http.max_connections_per_client must be at least http.max_requests_per_client",
        );
        need(self.http.max_uri_length >= 256, "http.max_uri_length must be at least 256 bytes");
        need(
            self.http.max_connections >= self.http.max_connections_per_client,
            "http.max_connections must be at least http.max_connections_per_client",
        );
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
        let m = &self.maintenance;
        need(!m.interval.is_zero(), "maintenance.interval must be longer than 0");
        need(m.target_file_size_mb > 0, "maintenance.target_file_size_mb must be at least 1");
        need(m.min_files >= 2, "maintenance.min_files must be at least 2 (one file has nothing to merge with)");
        need(m.keep_last_snapshots >= 1, "maintenance.keep_last_snapshots must be at least 1");
        for (table, keep) in &m.retention {
            need(
                MAINTAINED_TABLES.contains(&table.as_str()),
                &format!(
                    "maintenance.retention.{table}: no such table (trades, quotes, book_updates or book_snapshots)"
                ),
            );
            need(
                *keep >= Duration::from_secs(86_400),
                &format!("maintenance.retention.{table} must be at least 1 day (whole days are dropped)"),
            );
        }
        need(!self.query.timeout.is_zero(), "query.timeout must be longer than 0");
        need(self.query.max_concurrent > 0, "query.max_concurrent must be at least 1");
        need(!self.flight.timeout.is_zero(), "flight.timeout must be longer than 0");
        need(self.flight.memory_limit >= 1 << 20, "flight.memory_limit must be at least 1048576 bytes");
        need(self.flight.max_rows > 0, "flight.max_rows must be at least 1");
        need(self.flight.max_prepared > 0, "flight.max_prepared must be at least 1");
        need(self.flight.max_prepared_per_key > 0, "flight.max_prepared_per_key must be at least 1");
        for (dependency, b) in self.breakers.each() {
            need(b.failures > 0, &format!("breakers.failures (or breakers.{dependency}.failures) must be at least 1"));
            need(
                b.successes > 0,
                &format!("breakers.successes (or breakers.{dependency}.successes) must be at least 1"),
            );
        }
        need(self.kafka.partitions > 0, "kafka.partitions must be at least 1");
        need(self.kafka.replication_factor > 0, "kafka.replication_factor must be at least 1");
        need(
            (1024..=MAX_FETCH).contains(&self.kafka.fetch_partition_bytes),
            "kafka.fetch_partition_bytes must be between 1024 and 268434944",
        );
        need(
            (self.kafka.fetch_partition_bytes.max(1_000_000)..=MAX_FETCH).contains(&self.kafka.fetch_max_bytes),
            "kafka.fetch_max_bytes must be at least kafka.fetch_partition_bytes and 1000000, and at most 268434944",
        );
        need(self.kafka.fetch_wait <= Duration::from_secs(30), "kafka.fetch_wait must be at most 30s");
        need(
            (1..=2_097_151).contains(&self.kafka.fetch_ahead_kb),
            "kafka.fetch_ahead_kb must be between 1 and 2097151",
        );
        need((1..=1_000_000).contains(&self.kafka.consume_batch), "kafka.consume_batch must be between 1 and 1000000");
        need(
            ["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.kafka.compression.as_str()),
            "kafka.compression must be none, gzip, snappy, lz4 or zstd",
        );
        need(
            self.mode == Mode::Kafka || !matches!(self.role, Role::Producer | Role::Flusher),
            "role = \"producer\" and role = \"flusher\" need mode = \"kafka\"",
        );
        need(
            self.mode != Mode::Kafka || !self.kafka.bootstrap_servers.is_empty(),
            "kafka.bootstrap_servers must be set when mode = \"kafka\"",
        );
        need(self.http.api_keys.iter().all(|k| !k.is_empty()), "http.api_keys must not hold an empty key");
        problems.extend(self.storage.problems());
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    /// The degradation ladder's row triggers: `degradation.lag`, or 3, 6, 12
    /// and 24 flushes' worth of rows.
    pub fn lag_triggers(&self) -> [u64; 4] {
        self.degradation.lag.unwrap_or_else(|| [3, 6, 12, 24].map(|n| n * self.flush.max_rows as u64))
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
    use std::time::Duration;

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
    fn a_dependency_s_breaker_takes_its_own_thresholds_and_the_shared_ones_for_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k2.toml");
        std::fs::write(&file, "[breakers]\nfailures = 7\n[breakers.kafka]\ncool_down = \"45s\"\nsuccesses = 4\n")
            .unwrap();
        let c = Config::load_from(Some(&file), no_env()).unwrap();
        let kafka = c.breakers.of("kafka");
        assert_eq!((kafka.failures, kafka.cool_down, kafka.successes), (7, Duration::from_secs(45), 4));
        let iceberg = c.breakers.of("iceberg");
        assert_eq!((iceberg.failures, iceberg.cool_down, iceberg.successes), (7, Duration::from_secs(10), 2));

        std::fs::write(&file, "[breakers.object-store]\nfailures = 0\n").unwrap();
        let err = Config::load_from(Some(&file), no_env()).unwrap_err().to_string();
        assert!(err.contains("breakers.object-store.failures"), "{err}");
        std::fs::write(&file, "[breakers.kafak]\nfailures = 2\n").unwrap();
        let err = Config::load_from(Some(&file), no_env()).unwrap_err().to_string();
        assert!(err.contains("kafak"), "{err}");
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
