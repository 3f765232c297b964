//! The subcommands, and how their failures map to exit codes.

pub mod cost_model;
pub mod dead_letters;
pub mod demo;
pub mod exchange_sim;
pub mod healthcheck;
pub mod load;
pub mod maintain;
pub mod parse_check;
pub mod run;
pub mod schema;

use std::process::ExitCode;

use thiserror::Error;

/// A failure that ends a command.
#[derive(Debug, Error)]
pub enum CommandError {
    /// A path could not be read or interpreted at all (exit 2).
    #[error(transparent)]
    Input(#[from] k2_core::source::files::InputError),
    /// The configuration is unusable (exit 2).
    #[error(transparent)]
    Config(#[from] k2::runtime::config::ConfigError),
    /// The pipeline failed while running.
    #[error("pipeline: {0}")]
    Pipeline(String),
    /// The service could not start (tables, registry, Kafka, Redis, HTTP).
    #[error(transparent)]
    Start(#[from] k2::service::StartError),
    /// The cost model's inputs are unusable (exit 2).
    #[error(transparent)]
    Cost(#[from] k2::cost::CostError),
    /// Writing the report (or starting the runtime) failed.
    #[error("{0}")]
    Output(#[from] std::io::Error),
}

/// Exit codes: 0 done (even with rejected lines), 2 unusable input or arguments.
pub enum ExitStatus {
    BadInput,
    Failed,
}

impl From<&CommandError> for ExitStatus {
    fn from(e: &CommandError) -> Self {
        match e {
            CommandError::Input(_) | CommandError::Config(_) | CommandError::Cost(_) => Self::BadInput,
            CommandError::Output(_) | CommandError::Pipeline(_) | CommandError::Start(_) => Self::Failed,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        match s {
            ExitStatus::BadInput => ExitCode::from(2),
            ExitStatus::Failed => ExitCode::from(1),
        }
    }
}
