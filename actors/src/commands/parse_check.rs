//! `k2 parse-check`: read input files through the real parsers and report what
//! they hold, without storing anything.

use std::io::Write;
use std::process::ExitCode;

use k2_core::MarketEvent;
use k2_core::source::Rejected;
use k2_core::source::asx::AsxOptions;
use k2_core::source::binance::BinanceParser;
use k2_core::source::files::{InputFormat, InputReader, Item, discover};
use serde::Serialize;

use super::CommandError;
use crate::cli::ParseCheckArgs;

/// The report; with `--json` it is printed as exactly this object.
#[derive(Debug, Default, Serialize)]
struct Report {
    trades: u64,
    quotes: u64,
    control: u64,
    rejected: u64,
    /// The first `--max-errors` rejected lines.
    errors: Vec<Rejected>,
    #[serde(skip)]
    files: usize,
}

impl Report {
    fn reject(&mut self, r: Rejected, max: usize) {
        self.rejected += 1;
        if self.errors.len() < max {
            self.errors.push(r);
        }
    }
}

pub fn run(args: ParseCheckArgs) -> Result<ExitCode, CommandError> {
    let found = discover(&args.paths, InputFormat::from(args.format))?;
    let asx = AsxOptions { timezone: args.timezone, company_info: args.company_info.clone(), ..AsxOptions::default() };
    let mut reader = InputReader::new(asx, BinanceParser::default());
    let mut report = Report { files: found.files.len(), ..Report::default() };
    for skipped in found.skipped {
        report.reject(skipped, args.max_errors);
    }
    for file in &found.files {
        tracing::debug!(path = %file.path().display(), "reading");
        reader.read(file, &mut |item| match item {
            Item::Event(MarketEvent::Trade(_)) => report.trades += 1,
            Item::Event(MarketEvent::Quote(_)) => report.quotes += 1,
            Item::Control => report.control += 1,
            Item::Rejected(r) => report.reject(r, args.max_errors),
        })?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        writeln!(out, "files     {}", report.files)?;
        writeln!(out, "trades    {}", report.trades)?;
        writeln!(out, "quotes    {}", report.quotes)?;
        writeln!(out, "control   {}", report.control)?;
        writeln!(out, "rejected  {}", report.rejected)?;
        for e in &report.errors {
            writeln!(out, "  {}: {}", e.location, e.reason)?;
        }
        if report.rejected > report.errors.len() as u64 {
            writeln!(out, "  ... {} more", report.rejected - report.errors.len() as u64)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
