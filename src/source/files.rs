//! Input files of any supported format: finding them under the paths a user
//! names, and reading each into v2 events.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::Rejected;
use super::asx::{AsxError, AsxFileKind, AsxOptions, AsxReader, FileStats};
use super::binance::{BinanceParser, Frame};
use crate::model::{MarketEvent, Timestamp};

/// The format a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// Tell each file's format from its name and first line.
    #[default]
    Auto,
    /// Binance WebSocket frames, one JSON document per line.
    Binance,
    /// ASX CSV (the sample layout or the header CSV).
    Asx,
}

/// One file to read, with its format settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputFile {
    Binance(PathBuf),
    Asx(PathBuf, AsxFileKind),
}

impl InputFile {
    pub fn path(&self) -> &Path {
        match self {
            Self::Binance(p) | Self::Asx(p, _) => p,
        }
    }
}

/// A path that cannot be used at all.
#[derive(Debug, Error)]
pub enum InputError {
    #[error("{}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{}: format not recognised: {reason}", path.display())]
    Unrecognised { path: PathBuf, reason: String },
    #[error(transparent)]
    Asx(#[from] AsxError),
}

/// What [`discover`] found: files to read, and files inside folders that were
/// skipped because their format could not be told.
#[derive(Debug, Default)]
pub struct Discovered {
    pub files: Vec<InputFile>,
    pub skipped: Vec<Rejected>,
}

/// Expands files and folders into input files, in a stable (sorted) order.
///
/// A file named explicitly must be readable and recognisable. Inside a folder,
/// `reference-data/` is left out (it holds reference data, not market data),
/// files that are not `.csv`, `.json`, `.jsonl` or `.ndjson` are ignored, and a
/// data file whose format cannot be told is reported in `skipped`.
pub fn discover(paths: &[PathBuf], format: InputFormat) -> Result<Discovered, InputError> {
    let mut found = Discovered::default();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| InputError::Unreadable { path: path.clone(), source })?;
        if meta.is_dir() {
            walk(path, format, &mut found)?;
        } else {
            found.files.push(classify(path, format)?);
        }
    }
    Ok(found)
}

fn walk(dir: &Path, format: InputFormat, found: &mut Discovered) -> Result<(), InputError> {
    let unreadable = |source| InputError::Unreadable { path: dir.to_owned(), source };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(unreadable)?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "reference-data") {
                continue;
            }
            walk(&path, format, found)?;
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if !matches!(ext.as_str(), "csv" | "json" | "jsonl" | "ndjson") {
            continue;
        }
        match classify(&path, format) {
            Ok(file) => found.files.push(file),
            Err(InputError::Unreadable { path, source }) => {
                return Err(InputError::Unreadable { path, source });
            }
            Err(e) => found.skipped.push(Rejected { location: path.display().to_string(), reason: e.to_string() }),
        }
    }
    Ok(())
}

fn classify(path: &Path, format: InputFormat) -> Result<InputFile, InputError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let binance = match format {
        InputFormat::Binance => true,
        InputFormat::Asx => false,
        InputFormat::Auto => match ext.as_str() {
            "json" | "jsonl" | "ndjson" => true,
            "csv" => false,
            _ => first_byte_is_brace(path)?,
        },
    };
    if binance {
        return Ok(InputFile::Binance(path.to_owned()));
    }
    let kind = AsxFileKind::detect(path).map_err(|e| match e {
        AsxError::Io { path, source } => InputError::Unreadable { path, source },
        AsxError::Unrecognised { path, reason } => InputError::Unrecognised { path, reason },
        other => InputError::Asx(other),
    })?;
    Ok(InputFile::Asx(path.to_owned(), kind))
}

fn first_byte_is_brace(path: &Path) -> Result<bool, InputError> {
    let file = File::open(path).map_err(|source| InputError::Unreadable { path: path.to_owned(), source })?;
    let mut reader = BufReader::new(file);
    let buf = reader.fill_buf().map_err(|source| InputError::Unreadable { path: path.to_owned(), source })?;
    Ok(buf.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'))
}

/// What reading one file produced, beside the events themselves.
// Events are nearly every item: boxing them would allocate per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(MarketEvent),
    /// A control frame of a Binance recording (counted, not an error).
    Control,
    Rejected(Rejected),
}

/// Reads input files of every format, keeping per-format state between files.
#[derive(Debug, Default)]
pub struct InputReader {
    asx: AsxReader,
    binance: BinanceParser,
}

impl InputReader {
    pub fn new(asx: AsxOptions, binance: BinanceParser) -> Self {
        Self { asx: AsxReader::new(asx), binance }
    }

    /// Reads one file to the end, handing every item to `on`.
    pub fn read(&mut self, file: &InputFile, on: &mut dyn FnMut(Item)) -> Result<FileStats, InputError> {
        match file {
            InputFile::Asx(path, kind) => Ok(self.asx.read_file(path, kind, &mut |r| {
                on(match r {
                    Ok(e) => Item::Event(e),
                    Err(r) => Item::Rejected(r),
                })
            })?),
            InputFile::Binance(path) => self.read_binance(path, on),
        }
    }

    fn read_binance(&mut self, path: &Path, on: &mut dyn FnMut(Item)) -> Result<FileStats, InputError> {
        let io = |source| InputError::Unreadable { path: path.to_owned(), source };
        let mut reader = BufReader::with_capacity(1 << 16, File::open(path).map_err(io)?);
        let mut buf = Vec::with_capacity(512);
        let mut stats = FileStats::default();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
                return Ok(stats);
            }
            line_no += 1;
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match self.binance.parse(&buf, Timestamp::now()) {
                Ok(Frame::Event(e)) => {
                    stats.events += 1;
                    on(Item::Event(e));
                }
                Ok(Frame::Control(_)) => on(Item::Control),
                Err(e) => {
                    stats.rejected += 1;
                    on(Item::Rejected(Rejected::at_line(path, line_no, e.to_string())));
                }
            }
        }
    }
}
