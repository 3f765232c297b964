//! The command line: one subcommand per job.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// K2: market data from exchange feeds and files, normalised to one exact v2
/// schema.
#[derive(Debug, Parser)]
#[command(name = "k2", version, about, long_about = None)]
pub struct Cli {
    /// Log lines as text or as one JSON object per line (for log shippers).
    #[arg(long, global = true, value_enum, env = "K2_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything offline in one process: a simulated Binance feed with
    /// faults, the supervised pipeline, /health and /metrics.
    Demo(DemoArgs),
    /// Run the service: sources (live Binance by default) through the
    /// supervised pipeline, with /health and /metrics, until Ctrl-C.
    Run(RunArgs),
    /// Run a local exchange speaking Binance's WebSocket and REST protocols,
    /// generating or replaying trades and injecting faults on schedule.
    ExchangeSim(ExchangeSimArgs),
    /// Parse Binance JSON lines or ASX CSV files and folders, and report what
    /// they hold and which lines are rejected and why.
    ParseCheck(ParseCheckArgs),
    /// Load Binance JSON lines or ASX CSV files through the sequence tracker
    /// and deduplicator, and report what was accepted, dropped and rejected.
    Load(LoadArgs),
    /// List or replay dead letters: batches a stage failed on and frames a
    /// source refused, kept with their reasons.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Maintain the tables once: drop partitions past their retention,
    /// compact small files, expire old snapshots, delete orphan files.
    /// Prints what it would do, then (unless --dry-run) what it did. `k2 run`
    /// does the same every maintenance.interval.
    Maintain(MaintainArgs),
    /// Print an embedded v2 Avro schema.
    Schema(SchemaArgs),
    /// Estimate the monthly AWS cost of running K2 (Kafka mode) at a
    /// sustained message rate, showing every formula and input.
    CostModel(CostModelArgs),
    /// Ask a running K2 for /health: exit 0 when it answers 200 (ok or
    /// degraded), 1 otherwise. For container health checks and probes on
    /// hosts without curl.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Tell each file's format from its name and first line.
    Auto,
    /// Binance WebSocket frames, one JSON document per line.
    Binance,
    /// ASX CSV: the sample layout (trades/, quotes/, reference-data/) or the
    /// header CSV.
    Asx,
}

#[derive(Debug, Args)]
pub struct ParseCheckArgs {
    /// Files or folders to read.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Input format.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// Print exactly one JSON object instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// company_info.csv mapping ASX company ids to symbols (default: found
    /// beside the files or in ../reference-data/).
    #[arg(long)]
    pub company_info: Option<PathBuf>,
    /// Time zone of exchange-local times in ASX files.
    #[arg(long, default_value = "Australia/Sydney")]
    pub timezone: chrono_tz::Tz,
    /// How many rejected lines to list.
    #[arg(long, default_value_t = 20)]
    pub max_errors: usize,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters, oldest first (pending ones by default).
    List(DeadLettersListArgs),
    /// Send pending dead letters through the pipeline again, leaving out
    /// events the tables already hold; each is marked replayed once what it
    /// sent is committed. Needs the data directory: stop `k2 run` first.
    Replay(DeadLettersReplayArgs),
}

#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Configuration file layered over the embedded profile.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory; overrides storage.data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Only this table (repeatable); both when absent.
    #[arg(long, value_enum)]
    pub table: Vec<TableArg>,
    /// Say what would be done and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The reports as JSON: one object with `planned` and `done`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableArg {
    Trades,
    Quotes,
    BookUpdates,
    BookSnapshots,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LetterStatus {
    Pending,
    Replayed,
    All,
}

#[derive(Debug, Args)]
pub struct DeadLettersListArgs {
    /// Configuration file layered over the embedded profile.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory; overrides storage.data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = LetterStatus::Pending)]
    pub status: LetterStatus,
    /// One JSON object per letter, one per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeadLettersReplayArgs {
    /// Configuration file layered over the embedded profile.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory; overrides storage.data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Replay only these letters (repeatable); all pending ones by default.
    #[arg(long = "id")]
    pub ids: Vec<u64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Files or folders to load.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Configuration file layered over the embedded profile.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Input format.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// Print the summary as one JSON object (and no progress).
    #[arg(long)]
    pub json: bool,
    /// Data directory (Iceberg catalog and warehouse); overrides
    /// storage.data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Mark the loaded events as sample data.
    #[arg(long)]
    pub sample_data: bool,
    /// company_info.csv mapping ASX company ids to symbols.
    #[arg(long)]
    pub company_info: Option<PathBuf>,
}

impl From<FormatArg> for k2_core::source::files::InputFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Auto => Self::Auto,
            FormatArg::Binance => Self::Binance,
            FormatArg::Asx => Self::Asx,
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Configuration file layered over the embedded profile.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Simulated trades per second over all symbols.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Stop after this many seconds (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
    /// Data directory (Iceberg catalog and warehouse); overrides
    /// storage.data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Commit a snapshot at least this often (overrides flush.max_age, so
    /// that snapshots show up quickly in the demo).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub flush_every: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file layered over the embedded profile.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Data directory (Iceberg catalog and warehouse); overrides
    /// storage.data_dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// What this process does; overrides `role`: `producer` (Kafka mode,
    /// no consumer), `flusher` (Kafka mode, no sources), `query` (no
    /// sources, no consumer: serves /v1 from the tables' latest snapshots).
    #[arg(long, value_enum)]
    pub role: Option<k2::runtime::config::Role>,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Configuration of the service to check; its http.bind is asked (an
    /// unspecified address such as 0.0.0.0 means this host's loopback).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Ask this address (host:port) instead of the configuration's.
    #[arg(long)]
    pub addr: Option<String>,
    /// Longest wait for connecting and for the answer, each.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ExchangeSimArgs {
    /// WebSocket address (combined streams at /stream?streams=...).
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub ws_bind: std::net::SocketAddr,
    /// REST address (/api/v3/historicalTrades, /sim/stats).
    #[arg(long, default_value = "127.0.0.1:9444")]
    pub rest_bind: std::net::SocketAddr,
    /// Symbols to trade.
    #[arg(long, value_delimiter = ',', default_value = "btcusdt,ethusdt,bnbusdt")]
    pub symbols: Vec<String>,
    /// Trades per second over all symbols (0: as fast as clients read).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Trades per symbol, then stop (0: unbounded).
    #[arg(long, default_value_t = 0)]
    pub trades: u64,
    /// One book ticker per this many trades of a symbol (0: none).
    #[arg(long, default_value_t = 4)]
    pub book_ticker_every: u64,
    /// One diff-depth event per this many trades of a symbol (0: none).
    #[arg(long, default_value_t = 1)]
    pub depth_every: u64,
    /// Every Nth depth event of a symbol changes the book but is not sent.
    #[arg(long, default_value_t = 0)]
    pub depth_skip_every: u64,
    /// Every Nth depth event of a symbol is sent twice.
    #[arg(long, default_value_t = 0)]
    pub depth_duplicate_every: u64,
    /// Every Nth REST depth snapshot of a symbol is an old one, older than
    /// the stream.
    #[arg(long, default_value_t = 0)]
    pub stale_snapshot_every: u64,
    /// Interval of the server's pings.
    #[arg(long, default_value = "20s")]
    pub ping_interval: humantime::Duration,
    #[arg(long, default_value_t = 1)]
    pub first_trade_id: u64,
    /// Seed of the price walk.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Replay this JSON-lines recording instead of generating.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// Every Nth trade of a symbol starts a gap of --gap-size unsent trades.
    #[arg(long, default_value_t = 0)]
    pub gap_every: u64,
    #[arg(long, default_value_t = 3)]
    pub gap_size: u64,
    /// Every Nth trade of a symbol is sent twice.
    #[arg(long, default_value_t = 0)]
    pub duplicate_every: u64,
    /// Every Nth trade of a symbol is sent after the next one.
    #[arg(long, default_value_t = 0)]
    pub reorder_every: u64,
    /// A malformed frame after every Nth frame.
    #[arg(long, default_value_t = 0)]
    pub malformed_every: u64,
    /// Drop every connection after every Nth frame.
    #[arg(long, default_value_t = 0)]
    pub disconnect_every: u64,
    /// Send serverShutdown after N frames.
    #[arg(long, default_value_t = 0)]
    pub shutdown_after: u64,
    /// Time between serverShutdown and the close.
    #[arg(long, default_value = "2s")]
    pub shutdown_grace: humantime::Duration,
    /// Exit once a bounded market (--trades) has sent everything.
    #[arg(long)]
    pub exit_when_done: bool,
    /// Trade only while a client is connected (the market waits while
    /// nobody is subscribed), so a bounded market ends while a client is
    /// there to see its last trades.
    #[arg(long)]
    pub hold_while_idle: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaName {
    Trade,
    Quote,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which schema.
    #[arg(value_enum)]
    pub name: SchemaName,
}

#[derive(Debug, Args)]
pub struct CostModelArgs {
    /// Sustained messages per second, all symbols together.
    #[arg(long, allow_negative_numbers = true)]
    pub rate: f64,
    /// Days of data the Iceberg tables keep on S3.
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true)]
    pub retention_days: f64,
    /// Kafka replication factor.
    #[arg(long, default_value_t = 3)]
    pub replication: u32,
    /// Days Kafka keeps records (default: the pricing file's
    /// kafka.retention_days, which is K2's kafka.retention).
    #[arg(long, allow_negative_numbers = true)]
    pub kafka_retention_days: Option<f64>,
    /// Pricing and sizing file (default: config/pricing/aws-us-east-1.toml,
    /// compiled in).
    #[arg(long)]
    pub pricing: Option<PathBuf>,
    /// Print the estimate as one JSON object.
    #[arg(long)]
    pub json: bool,
}
