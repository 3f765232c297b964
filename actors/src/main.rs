//! `k2`: the K2 market-data platform's command.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::ParseCheck(args) => commands::parse_check::run(args),
        Command::Load(args) => commands::load::run(args),
        Command::DeadLetters(command) => commands::dead_letters::run(command),
        Command::Run(args) => commands::run::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::ExchangeSim(args) => commands::exchange_sim::run(args),
        Command::Maintain(args) => commands::maintain::run(args),
        Command::Schema(args) => commands::schema::run(args),
        Command::CostModel(args) => commands::cost_model::run(args),
        Command::Healthcheck(args) => Ok(commands::healthcheck::run(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("k2: {e:#}");
            commands::ExitStatus::from(&e).into()
        }
    }
}

fn init_logging(format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("K2_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        cli::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // One object per line, fields flattened beside the message, for
        // journald/Loki/Elasticsearch shippers.
        cli::LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
}
