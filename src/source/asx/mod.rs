//! ASX equity files → v2 events.
//!
//! Two formats: the headerless sample format of ../shared/data/asx-sample (one
//! file per company under `trades/` and `quotes/`, symbols from
//! `reference-data/company_info.csv`; see [`sample`]) and the original K2's CSV
//! with a header line ([`header_csv`]). Exchange-local times are converted to UTC
//! with the exchange's time zone (Australia/Sydney by default). A bad line is
//! reported with its file, line and reason, and the rest of the file goes on.

pub mod clock;
pub mod company;
pub mod header_csv;
pub mod sample;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono_tz::Tz;
use thiserror::Error;

use self::clock::LocalClock;
use self::company::CompanyInfo;
use self::header_csv::HeaderParser;
use self::sample::SampleParser;
use super::Rejected;
use crate::model::{MarketEvent, Timestamp};

/// Exchange code of ASX events.
pub const EXCHANGE: &str = "ASX";
/// Currency of ASX prices.
pub const CURRENCY: &str = "AUD";
/// Time zone the files' local times are in.
pub const TIMEZONE: Tz = chrono_tz::Australia::Sydney;

/// Problems with a whole file (a bad line is a [`Rejected`] instead).
#[derive(Debug, Error)]
pub enum AsxError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    BadReference { path: PathBuf, reason: String },
    #[error("{}: no company_info.csv found beside it or in ../reference-data/", path.display())]
    NoCompanyInfo { path: PathBuf },
    #[error("{}: company id {company_id} is not in {}", path.display(), reference.display())]
    UnknownCompany { path: PathBuf, company_id: String, reference: PathBuf },
    #[error("{}: not an ASX file: {reason}", path.display())]
    Unrecognised { path: PathBuf, reason: String },
}

/// The layout of one ASX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsxFileKind {
    SampleTrades {
        company_id: String,
    },
    SampleQuotes {
        company_id: String,
    },
    /// The original K2's CSV with a header line (trades or quotes).
    Header,
}

impl AsxFileKind {
    /// Tells a file's layout from its first line and, for the headerless sample
    /// format, its name (`<company_id>.csv`) and field count.
    pub fn detect(path: &Path) -> Result<Self, AsxError> {
        let file = File::open(path).map_err(|source| AsxError::Io { path: path.to_owned(), source })?;
        let mut first = String::new();
        BufReader::new(file).read_line(&mut first).map_err(|source| AsxError::Io { path: path.to_owned(), source })?;
        Self::from_first_line(path, &first)
    }

    /// [`Self::detect`] on a first line already read; `path` gives only the
    /// file's name and folder.
    pub fn from_first_line(path: &Path, first: &str) -> Result<Self, AsxError> {
        let unrecognised = |reason: &str| AsxError::Unrecognised { path: path.to_owned(), reason: reason.to_owned() };
        let first = first.trim_end();
        if first.to_ascii_lowercase().starts_with("symbol,") {
            return Ok(Self::Header);
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unrecognised("no header line, and the name is not <company_id>.csv"));
        }
        let company_id = stem.to_owned();
        let parent = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("");
        match (parent, first.split(',').count()) {
            ("trades", _) | (_, 7) => Ok(Self::SampleTrades { company_id }),
            ("quotes", _) | (_, 6) => Ok(Self::SampleQuotes { company_id }),
            _ => Err(unrecognised("first line has neither 7 (trade) nor 6 (quote) fields")),
        }
    }
}

/// How ASX files are read.
#[derive(Debug, Clone)]
pub struct AsxOptions {
    /// Time zone of the files' local times.
    pub timezone: Tz,
    /// Mark events as sample data.
    pub is_sample_data: bool,
    /// Use this company_info.csv instead of looking beside each file.
    pub company_info: Option<PathBuf>,
}

impl Default for AsxOptions {
    fn default() -> Self {
        Self { timezone: TIMEZONE, is_sample_data: false, company_info: None }
    }
}

/// Lines read from one file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FileStats {
    pub events: u64,
    pub rejected: u64,
}

/// Reads ASX files, loading each company_info.csv once.
#[derive(Debug, Default)]
pub struct AsxReader {
    options: AsxOptions,
    companies: HashMap<PathBuf, Arc<CompanyInfo>>,
}

/// Which records a headerless sample file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Trades,
    Quotes,
}

impl AsxReader {
    pub fn new(options: AsxOptions) -> Self {
        Self { options, companies: HashMap::new() }
    }

    /// Reads a whole file, handing each event or rejected line to `on`.
    pub fn read_file(
        &mut self,
        path: &Path,
        kind: &AsxFileKind,
        on: &mut dyn FnMut(Result<MarketEvent, Rejected>),
    ) -> Result<FileStats, AsxError> {
        let io = |source| AsxError::Io { path: path.to_owned(), source };
        let (company_id, sample) = match kind {
            AsxFileKind::SampleTrades { company_id } => (company_id, SampleKind::Trades),
            AsxFileKind::SampleQuotes { company_id } => (company_id, SampleKind::Quotes),
            AsxFileKind::Header => return self.read_header_from(File::open(path).map_err(io)?, path, on),
        };
        let symbol = self.symbol_of(path, company_id)?;
        let input = BufReader::with_capacity(1 << 16, File::open(path).map_err(io)?);
        self.read_sample_from(input, path, company_id, &symbol, sample, on)
    }

    /// The lines of a headerless sample file of `company_id`, which trades as
    /// `symbol`, read from `input`; `path` names the input in rejections and
    /// errors. [`Self::read_file`] without the disk.
    pub fn read_sample_from(
        &self,
        input: impl BufRead,
        path: &Path,
        company_id: &str,
        symbol: &str,
        kind: SampleKind,
        on: &mut dyn FnMut(Result<MarketEvent, Rejected>),
    ) -> Result<FileStats, AsxError> {
        let clock = LocalClock::new(self.options.timezone);
        let mut parser = SampleParser::new(company_id, symbol, clock, self.options.is_sample_data);
        read_lines(input, path, on, |line, no, now| match kind {
            SampleKind::Trades => parser.trade(line, no, now).map(MarketEvent::Trade),
            SampleKind::Quotes => parser.quote(line, no, now).map(MarketEvent::Quote),
        })
    }

    fn symbol_of(&mut self, path: &Path, company_id: &str) -> Result<String, AsxError> {
        let reference = match &self.options.company_info {
            Some(p) => p.clone(),
            None => CompanyInfo::find_for(path).ok_or_else(|| AsxError::NoCompanyInfo { path: path.to_owned() })?,
        };
        let info = match self.companies.get(&reference) {
            Some(info) => info.clone(),
            None => {
                let info = Arc::new(CompanyInfo::load(&reference)?);
                self.companies.insert(reference.clone(), info.clone());
                info
            }
        };
        info.get(company_id).map(|c| c.symbol.to_string()).ok_or_else(|| AsxError::UnknownCompany {
            path: path.to_owned(),
            company_id: company_id.to_owned(),
            reference,
        })
    }

    /// A CSV file with a header line, read from `input`; `path` names the
    /// input in rejections and errors. [`Self::read_file`] without the disk.
    pub fn read_header_from(
        &self,
        input: impl Read,
        path: &Path,
        on: &mut dyn FnMut(Result<MarketEvent, Rejected>),
    ) -> Result<FileStats, AsxError> {
        let io = |source| AsxError::Io { path: path.to_owned(), source };
        // The csv reader buffers its input itself.
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
        let header =
            reader.headers().map_err(|e| AsxError::Unrecognised { path: path.to_owned(), reason: e.to_string() })?;
        let clock = LocalClock::new(self.options.timezone);
        let mut parser = HeaderParser::from_header(header, clock, self.options.is_sample_data)
            .map_err(|reason| AsxError::Unrecognised { path: path.to_owned(), reason })?;
        let mut stats = FileStats::default();
        let mut record = csv::StringRecord::new();
        loop {
            let line_no = reader.position().line();
            let parsed = match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    let line_no = record.position().map_or(line_no, |p| p.line());
                    parser.record(&record, line_no, Timestamp::now()).map_err(|reason| (line_no, reason))
                }
                Err(e) if e.is_io_error() => return Err(io(std::io::Error::other(e.to_string()))),
                Err(e) => Err((line_no, e.to_string())),
            };
            match parsed {
                Ok(event) => {
                    stats.events += 1;
                    on(Ok(event));
                }
                Err((line, reason)) => {
                    stats.rejected += 1;
                    on(Err(Rejected::at_line(path, line, reason)));
                }
            }
        }
        Ok(stats)
    }
}

/// Reads text line by line (numbered from 1, blank lines skipped) and hands
/// each line to `parse`; `path` names the input in rejections.
fn read_lines(
    mut input: impl BufRead,
    path: &Path,
    on: &mut dyn FnMut(Result<MarketEvent, Rejected>),
    mut parse: impl FnMut(&str, u64, Timestamp) -> Result<MarketEvent, String>,
) -> Result<FileStats, AsxError> {
    let io = |source| AsxError::Io { path: path.to_owned(), source };
    let mut buf = Vec::with_capacity(256);
    let mut stats = FileStats::default();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            return Ok(stats);
        }
        line_no += 1;
        let line = match std::str::from_utf8(&buf) {
            Ok(l) => l.trim_end_matches(['\n', '\r']),
            Err(_) => {
                stats.rejected += 1;
                on(Err(Rejected::at_line(path, line_no, "line is not UTF-8")));
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match parse(line, line_no, Timestamp::now()) {
            Ok(event) => {
                stats.events += 1;
                on(Ok(event));
            }
            Err(reason) => {
                stats.rejected += 1;
                on(Err(Rejected::at_line(path, line_no, reason)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        f: impl FnOnce(&AsxReader, &mut dyn FnMut(Result<MarketEvent, Rejected>)) -> Result<FileStats, AsxError>,
    ) -> (FileStats, Vec<Result<MarketEvent, Rejected>>) {
        let mut seen = Vec::new();
        let stats = f(&AsxReader::default(), &mut |r| seen.push(r)).unwrap();
        (stats, seen)
    }

    #[test]
    fn content_in_memory_reads_as_a_file_would() {
        let lines = "03/10/2014,10:00:00.001,36.667,20000,3,X,\n\n03/10/2014,10:00:01,x,1,0,X,\n";
        let (stats, seen) = read(|r, on| {
            r.read_sample_from(lines.as_bytes(), Path::new("t/7078.csv"), "7078", "BHP", SampleKind::Trades, on)
        });
        assert_eq!(stats, FileStats { events: 1, rejected: 1 });
        let Ok(MarketEvent::Trade(t)) = &seen[0] else { panic!("{seen:?}") };
        assert_eq!((t.symbol.as_str(), t.trade_id.as_str()), ("BHP", "ASX-7078-20140310-1"));
        assert_eq!(seen[1].as_ref().unwrap_err().location, "t/7078.csv:3");

        let csv = "symbol,exchange_timestamp,bid_price,ask_price,bid_size,ask_size,sequence_number\nBHP,2014-03-10 10:00:00,1,2,3,4,5\nBHP,x\n";
        let (stats, seen) = read(|r, on| r.read_header_from(csv.as_bytes(), Path::new("q.csv"), on));
        assert_eq!(stats, FileStats { events: 1, rejected: 1 });
        assert!(matches!(seen[0], Ok(MarketEvent::Quote(_))));
        assert_eq!(seen[1].as_ref().unwrap_err().location, "q.csv:3");
    }

    #[test]
    fn the_first_line_tells_the_layout() {
        let kind = |path: &str, first: &str| AsxFileKind::from_first_line(Path::new(path), first).ok();
        assert_eq!(kind("x/a.csv", "Symbol,exchange_timestamp\r\n"), Some(AsxFileKind::Header));
        assert_eq!(kind("trades/7078.csv", "a"), Some(AsxFileKind::SampleTrades { company_id: "7078".into() }));
        assert_eq!(kind("x/7078.csv", "1,2,3,4,5,6"), Some(AsxFileKind::SampleQuotes { company_id: "7078".into() }));
        assert_eq!(kind("x/data.csv", "1,2,3,4,5,6"), None);
    }
}
