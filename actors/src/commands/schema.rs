//! `k2 schema`: print an embedded schema, exactly as the binary uses it.

use std::io::Write;
use std::process::ExitCode;

use super::CommandError;
use crate::cli::{SchemaArgs, SchemaName};

pub fn run(args: SchemaArgs) -> Result<ExitCode, CommandError> {
    let text = match args.name {
        SchemaName::Trade => k2_core::schema::TRADE_V2_AVSC,
        SchemaName::Quote => k2_core::schema::QUOTE_V2_AVSC,
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
