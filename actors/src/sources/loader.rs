//! The batch loader: reads input files on a blocking thread and feeds their
//! events through the pipeline in batches, with back-pressure all the way.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use k2_core::MarketEvent;
use k2_core::source::Rejected;
use k2_core::source::asx::AsxOptions;
use k2_core::source::binance::BinanceParser;
use k2_core::source::files::{InputFile, InputReader, Item};
use serde::Serialize;

use crate::transforms::Entrance;

/// What one load did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LoadReport {
    pub files: usize,
    /// Events parsed and sent into the pipeline.
    pub read: u64,
    /// Lines refused by the parsers.
    pub rejected: u64,
    /// Rejections grouped by reason (quoted values replaced by `…`).
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// The first rejected lines, with their location.
    pub first_rejected: Vec<Rejected>,
    pub seconds: f64,
}

enum Read {
    Batch(Vec<MarketEvent>),
    Rejected(Rejected),
    FileDone(u64),
    Failed(String),
}

/// Loads `files` into `pipeline` and waits until every event reached the sink.
pub async fn load(
    files: Vec<InputFile>,
    asx: AsxOptions,
    pipeline: &Entrance,
    progress: bool,
) -> Result<LoadReport, String> {
    let started = Instant::now();
    let batch_size = pipeline.batch_size();
    let total_bytes: u64 = files.iter().map(|f| std::fs::metadata(f.path()).map_or(0, |m| m.len())).sum();
    let mut report = LoadReport { files: files.len(), ..LoadReport::default() };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Read>(4);

    let reader = tokio::task::spawn_blocking(move || {
        let mut input = InputReader::new(asx, BinanceParser::default().sample_data(false));
        for file in &files {
            let mut batch = Vec::with_capacity(batch_size);
            let mut closed = false;
            let result = input.read(file, &mut |item| {
                if closed {
                    return;
                }
                match item {
                    Item::Event(e) => {
                        batch.push(e);
                        if batch.len() >= batch_size {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                            closed = tx.blocking_send(Read::Batch(full)).is_err();
                        }
                    }
                    Item::Rejected(r) => closed = tx.blocking_send(Read::Rejected(r)).is_err(),
                    Item::Control => {}
                }
            });
            if !batch.is_empty() {
                let _ = tx.blocking_send(Read::Batch(batch));
            }
            let size = std::fs::metadata(file.path()).map_or(0, |m| m.len());
            let msg = match result {
                Ok(_) => Read::FileDone(size),
                Err(e) => Read::Failed(e.to_string()),
            };
            if tx.blocking_send(msg).is_err() {
                return;
            }
        }
    });

    let mut progress = Progress::new(progress, total_bytes);
    while let Some(msg) = rx.recv().await {
        match msg {
            Read::Batch(events) => {
                report.read += events.len() as u64;
                pipeline.send(events).await.map_err(|e| format!("pipeline closed: {e}"))?;
                progress.rows(report.read);
            }
            Read::Rejected(r) => {
                report.rejected += 1;
                *report.rejected_by_reason.entry(reason_kind(&r.reason)).or_default() += 1;
                if report.first_rejected.len() < 20 {
                    report.first_rejected.push(r);
                }
            }
            Read::FileDone(bytes) => progress.file_done(bytes),
            Read::Failed(e) => return Err(e),
        }
    }
    reader.await.map_err(|e| format!("file reader failed: {e}"))?;
    pipeline.drain().await.map_err(|e| format!("pipeline closed while draining: {e}"))?;
    progress.finish(report.read);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A reason with its quoted values blanked, so like rejections group together.
fn reason_kind(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut quoted = false;
    for c in reason.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…");
            } else {
                out.push('"');
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// A progress bar on a terminal, plain periodic lines otherwise.
enum Progress {
    Bar(indicatif::ProgressBar, Instant),
    Lines { last: Instant, started: Instant },
    Off,
}

impl Progress {
    fn new(enabled: bool, total_bytes: u64) -> Self {
        if !enabled {
            return Self::Off;
        }
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total_bytes);
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} (ETA {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            Self::Bar(bar, Instant::now())
        } else {
            let now = Instant::now();
            Self::Lines { last: now, started: now }
        }
    }

    fn rows(&mut self, rows: u64) {
        match self {
            Self::Bar(bar, started) => {
                let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{rows} rows, {rate:.0} rows/s"));
            }
            Self::Lines { last, started } if last.elapsed() >= Duration::from_secs(2) => {
                *last = Instant::now();
                let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
                eprintln!("k2 load: {rows} rows, {rate:.0} rows/s");
            }
            _ => {}
        }
    }

    fn file_done(&mut self, bytes: u64) {
        if let Self::Bar(bar, _) = self {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self, rows: u64) {
        if let Self::Bar(bar, _) = self {
            bar.finish_with_message(format!("{rows} rows"));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reasons_group_without_their_values() {
        assert_eq!(
            super::reason_kind(r#"price "x1" is not a plain decimal number"#),
            r#"price "…" is not a plain decimal number"#
        );
    }
}
