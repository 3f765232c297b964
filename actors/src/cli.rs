//! The command line: one subcommand per job.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// K2: market data from exchange feeds and files, normalised to one exact v2
/// schema.
#[derive(Debug, Parser)]
#[command(name = "k2", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse Binance JSON lines or ASX CSV files and folders, and report what
    /// they hold and which lines are rejected and why.
    ParseCheck(ParseCheckArgs),
    /// Load Binance JSON lines or ASX CSV files through the sequence tracker
    /// and deduplicator, and report what was accepted, dropped and rejected.
    Load(LoadArgs),
    /// Print an embedded v2 Avro schema.
    Schema(SchemaArgs),
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
