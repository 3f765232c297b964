//! The query API's parameters, parsed and checked before any plan is built.
//! Every problem is a [`ParamError`] naming the parameter (the HTTP layer
//! answers it with 400). Here, not beside the routes, because these parse
//! what anyone who reaches the port sends: they are fuzzed with the other
//! parsers (tests/fuzz), which build only this crate.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Deserialize;

use thiserror::Error;

/// A parameter that is missing, malformed or out of range, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{parameter}: {reason}")]
pub struct ParamError {
    pub parameter: &'static str,
    pub reason: String,
}

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 10_000;

fn bad(parameter: &'static str, reason: impl Into<String>) -> ParamError {
    ParamError { parameter, reason: reason.into() }
}

/// Where rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Committed snapshots plus rows not yet committed: everything accepted.
    Hybrid,
    /// Committed snapshots only.
    Historical,
    /// Rows not yet committed only.
    Realtime,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hybrid => "hybrid",
            Source::Historical => "historical",
            Source::Realtime => "realtime",
        }
    }
}

/// A pinned snapshot (time travel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Snapshot(i64),
    /// The latest snapshot committed at or before this time (epoch µs).
    Time(i64),
}

/// The query string of the read endpoints, as received.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// Symbol, exact (e.g. BTCUSDT, BHP).
    pub symbol: Option<String>,
    /// Exchange code, exact (e.g. BINANCE, ASX).
    pub exchange: Option<String>,
    /// Start of the time range, inclusive: RFC 3339 or epoch microseconds.
    pub start: Option<String>,
    /// End of the time range, exclusive: RFC 3339 or epoch microseconds.
    pub end: Option<String>,
    /// Rows per page, 1–10000 (default 100).
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `hybrid` (default), `historical` or `realtime`.
    pub source: Option<String>,
    /// Read this snapshot (time travel; historical only).
    pub as_of_snapshot: Option<String>,
    /// Read the latest snapshot committed at or before this time.
    pub as_of: Option<String>,
}

/// A keyset position: the last row of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub timestamp: i64,
    pub message_id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.timestamp, self.message_id)
    }

    pub fn decode(text: &str) -> Result<Self, ParamError> {
        let why = "not a cursor from a previous page";
        let (ts, id) = text.split_once('_').ok_or_else(|| bad("cursor", why))?;
        let timestamp = ts.parse().map_err(|_| bad("cursor", why))?;
        let message_id = uuid::Uuid::parse_str(id).map_err(|_| bad("cursor", why))?.hyphenated().to_string();
        Ok(Self { timestamp, message_id })
    }
}

/// Checked read parameters.
#[derive(Debug, Clone)]
pub struct ReadParams {
    pub symbol: Option<String>,
    pub exchange: Option<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub limit: usize,
    pub cursor: Option<Cursor>,
    pub pin: Pin,
}

/// Which data a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    pub source: Source,
    pub as_of: Option<AsOf>,
}

impl ReadQuery {
    pub fn check(self) -> Result<ReadParams, ParamError> {
        let start = self.start.as_deref().map(|t| parse_time("start", t)).transpose()?;
        let end = self.end.as_deref().map(|t| parse_time("end", t)).transpose()?;
        check_range(start, end)?;
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(bad("limit", format!("must be a whole number from 1 to {MAX_LIMIT}, got {l:?}"))),
            },
        };
        Ok(ReadParams {
            symbol: non_empty("symbol", self.symbol)?,
            exchange: non_empty("exchange", self.exchange)?,
            start,
            end,
            limit,
            cursor: self.cursor.as_deref().map(Cursor::decode).transpose()?,
            pin: pin(self.source.as_deref(), self.as_of_snapshot.as_deref(), self.as_of.as_deref())?,
        })
    }
}

/// Longest symbol or exchange code a query may name: no venue's is near
/// it, and a bound keeps an outsider's megabyte out of plans and logs.
pub const MAX_NAME_CHARS: usize = 64;

fn non_empty(parameter: &'static str, value: Option<String>) -> Result<Option<String>, ParamError> {
    match value {
        // ASCII whitespace only: the document's pattern (`\S`) is read by
        // other engines, which do not all call U+0085 or U+00A0 a space.
        Some(v) if v.trim_ascii().is_empty() => Err(bad(parameter, "must not be empty")),
        Some(v) if v.chars().count() > MAX_NAME_CHARS => {
            Err(bad(parameter, format!("must be at most {MAX_NAME_CHARS} characters")))
        }
        other => Ok(other),
    }
}

fn check_range(start: Option<i64>, end: Option<i64>) -> Result<(), ParamError> {
    match (start, end) {
        (Some(s), Some(e)) if e <= s => Err(bad("end", "must be later than start")),
        _ => Ok(()),
    }
}

/// `source`, `as_of_snapshot` and `as_of` together.
pub fn pin(source: Option<&str>, snapshot: Option<&str>, as_of: Option<&str>) -> Result<Pin, ParamError> {
    let as_of = match (snapshot, as_of) {
        (Some(_), Some(_)) => return Err(bad("as_of", "give as_of or as_of_snapshot, not both")),
        (Some(id), None) => Some(AsOf::Snapshot(
            id.parse().map_err(|_| bad("as_of_snapshot", format!("must be a snapshot id (an integer), got {id:?}")))?,
        )),
        (None, Some(t)) => Some(AsOf::Time(parse_time("as_of", t)?)),
        (None, None) => None,
    };
    let source = match source {
        None => {
            if as_of.is_some() {
                Source::Historical
            } else {
                Source::Hybrid
            }
        }
        Some("hybrid") => Source::Hybrid,
        Some("historical") => Source::Historical,
        Some("realtime") => Source::Realtime,
        Some(other) => {
            return Err(bad("source", format!("must be hybrid, historical or realtime, got {other:?}")));
        }
    };
    if as_of.is_some() && source != Source::Historical {
        return Err(bad(
            "source",
            "time travel (as_of, as_of_snapshot) reads committed snapshots only: use source=historical or leave source out",
        ));
    }
    Ok(Pin { source, as_of })
}

/// RFC 3339, or an integer of epoch microseconds.
pub fn parse_time(parameter: &'static str, text: &str) -> Result<i64, ParamError> {
    if let Ok(micros) = text.parse::<i64>() {
        return if (crate::Timestamp::MIN.as_micros()..=crate::Timestamp::MAX.as_micros()).contains(&micros) {
            Ok(micros)
        } else {
            Err(bad(parameter, "epoch microseconds out of range (years 1 to 9999)"))
        };
    }
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc).timestamp_micros()).map_err(|e| {
        bad(parameter, format!("must be RFC 3339 (2024-01-02T03:04:05Z) or epoch microseconds, got {text:?}: {e}"))
    })
}

/// Query string of `/v1/summary/{symbol}/{date}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// Exchange code; needed when the symbol trades on several.
    pub exchange: Option<String>,
    /// IANA time zone of the trading day (default: the exchange's, else UTC).
    pub tz: Option<String>,
    /// `hybrid` (default), `historical` or `realtime`.
    pub source: Option<String>,
    pub as_of_snapshot: Option<String>,
    pub as_of: Option<String>,
}

/// Checked summary parameters.
#[derive(Debug, Clone)]
pub struct SummaryParams {
    pub symbol: String,
    pub date: NaiveDate,
    pub exchange: Option<String>,
    pub tz: Option<chrono_tz::Tz>,
    pub pin: Pin,
}

impl SummaryQuery {
    pub fn check(self, symbol: String, date: &str) -> Result<SummaryParams, ParamError> {
        // chrono's %Y takes a sign and more than four digits; the API's
        // dates are exactly YYYY-MM-DD, as `start` requires.
        let shaped = date.len() == 10
            && date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()
            .filter(|_| shaped)
            .ok_or_else(|| bad("date", format!("must be a date as YYYY-MM-DD, got {date:?}")))?;
        Ok(SummaryParams {
            symbol: non_empty("symbol", Some(symbol))?.unwrap_or_default(),
            date,
            exchange: non_empty("exchange", self.exchange)?,
            tz: parse_tz(self.tz.as_deref())?,
            pin: pin(self.source.as_deref(), self.as_of_snapshot.as_deref(), self.as_of.as_deref())?,
        })
    }
}

fn parse_tz(tz: Option<&str>) -> Result<Option<chrono_tz::Tz>, ParamError> {
    tz.map(|t| t.parse::<chrono_tz::Tz>().map_err(|_| bad("tz", format!("unknown IANA time zone {t:?}")))).transpose()
}

/// Bar width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    M1,
    M5,
    M15,
    H1,
    D1,
}

impl Interval {
    pub fn micros(self) -> i64 {
        const MIN: i64 = 60_000_000;
        match self {
            Interval::M1 => MIN,
            Interval::M5 => 5 * MIN,
            Interval::M15 => 15 * MIN,
            Interval::H1 => 60 * MIN,
            Interval::D1 => 24 * 60 * MIN,
        }
    }
}

/// Most bars one request may produce.
pub const MAX_BARS: i64 = 100_000;

/// Query string of `/v1/bars`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BarsQuery {
    /// Symbol (required).
    pub symbol: Option<String>,
    pub exchange: Option<String>,
    /// 1m, 5m, 15m, 1h or 1d.
    pub interval: Option<String>,
    /// Start, inclusive: RFC 3339 or epoch microseconds (required).
    pub start: Option<String>,
    /// End, exclusive: RFC 3339 or epoch microseconds (required).
    pub end: Option<String>,
    /// Time zone of daily bars (default: the exchange's, else UTC).
    pub tz: Option<String>,
    pub source: Option<String>,
    pub as_of_snapshot: Option<String>,
    pub as_of: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BarsParams {
    pub symbol: String,
    pub exchange: Option<String>,
    pub interval: Interval,
    pub start: i64,
    pub end: i64,
    pub tz: Option<chrono_tz::Tz>,
    pub pin: Pin,
}

impl BarsQuery {
    pub fn check(self) -> Result<BarsParams, ParamError> {
        let symbol = non_empty("symbol", self.symbol)?.ok_or_else(|| bad("symbol", "is required"))?;
        let interval = match self.interval.as_deref() {
            Some("1m") => Interval::M1,
            Some("5m") => Interval::M5,
            Some("15m") => Interval::M15,
            Some("1h") => Interval::H1,
            Some("1d") => Interval::D1,
            None => return Err(bad("interval", "is required: 1m, 5m, 15m, 1h or 1d")),
            Some(other) => return Err(bad("interval", format!("must be 1m, 5m, 15m, 1h or 1d, got {other:?}"))),
        };
        let start = parse_time("start", self.start.as_deref().ok_or_else(|| bad("start", "is required"))?)?;
        let end = parse_time("end", self.end.as_deref().ok_or_else(|| bad("end", "is required"))?)?;
        check_range(Some(start), Some(end))?;
        // Partial buckets at both ends count.
        if (end - start + interval.micros() - 1) / interval.micros() + 1 > MAX_BARS {
            return Err(bad(
                "interval",
                format!("more than {MAX_BARS} bars between start and end: widen the interval or narrow the range"),
            ));
        }
        Ok(BarsParams {
            symbol,
            exchange: non_empty("exchange", self.exchange)?,
            interval,
            start,
            end,
            tz: parse_tz(self.tz.as_deref())?,
            pin: pin(self.source.as_deref(), self.as_of_snapshot.as_deref(), self.as_of.as_deref())?,
        })
    }
}

/// Query string of `/v1/snapshots`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsQuery {
    /// `trades` (default) or `quotes`.
    pub table: Option<String>,
}

/// Query string of `/v1/dead-letters`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersQuery {
    /// `pending` (default: not replayed yet), `replayed` or `all`.
    pub status: Option<String>,
    /// Only letters with a higher id (for paging: the last id seen).
    pub after: Option<u64>,
    /// At most this many letters, 1 to 1000 (default 100).
    pub limit: Option<u64>,
}

/// Query string of `/v1/symbols`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolsQuery {
    pub source: Option<String>,
    pub as_of_snapshot: Option<String>,
    pub as_of: Option<String>,
}

/// UTC instant where a local date starts in `tz` (the earliest, when a
/// time-zone change makes midnight ambiguous or absent).
pub fn local_midnight(tz: chrono_tz::Tz, date: NaiveDate) -> i64 {
    let mut t = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    // A zone may skip midnight (DST starting at 00:00): take the first hour
    // that exists.
    for _ in 0..4 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.with_timezone(&Utc).timestamp_micros();
        }
        t += chrono::Duration::hours(1);
    }
    t.and_utc().timestamp_micros()
}

/// Most points `/v1/book/{symbol}/top` answers with.
pub const MAX_TOP_POINTS: i64 = 10_000;

/// Query string of `/v1/book/{symbol}/top`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookTopQuery {
    /// First instant sampled: RFC 3339 or epoch microseconds (required).
    pub start: Option<String>,
    /// Last instant sampled at most (required); past now, the samples stop
    /// at now.
    pub end: Option<String>,
    /// Between samples: a whole number and ms, s, m or h, 100ms to 24h
    /// (default 1s).
    pub interval: Option<String>,
    /// Levels per side summed into the depth, 1 to 5000 (default 10).
    pub levels: Option<String>,
    pub exchange: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BookTopParams {
    pub start: i64,
    pub end: i64,
    pub interval_us: i64,
    pub levels: usize,
    pub exchange: Option<String>,
}

impl BookTopQuery {
    /// Checks the query against `now` (epoch µs).
    pub fn check(self, now: i64) -> Result<BookTopParams, ParamError> {
        let start = parse_time("start", self.start.as_deref().ok_or_else(|| bad("start", "is required"))?)?;
        let end = parse_time("end", self.end.as_deref().ok_or_else(|| bad("end", "is required"))?)?;
        if end < start {
            return Err(bad("end", "must not be before start"));
        }
        // No book is known after now: the samples stop there.
        let end = end.min(now);
        let interval_us = match self.interval.as_deref() {
            None => 1_000_000,
            Some(text) => parse_interval(text).ok_or_else(|| {
                bad("interval", format!("must be a whole number and ms, s, m or h, from 100ms to 24h, got {text:?}"))
            })?,
        };
        if end >= start && (end - start) / interval_us + 1 > MAX_TOP_POINTS {
            return Err(bad(
                "interval",
                format!(
                    "more than {MAX_TOP_POINTS} points between start and end: widen the interval or narrow the range"
                ),
            ));
        }
        let levels = match self.levels.as_deref().map(str::parse::<usize>) {
            None => 10,
            Some(Ok(n)) if (1..=5000).contains(&n) => n,
            Some(_) => return Err(bad("levels", "must be a whole number from 1 to 5000")),
        };
        Ok(BookTopParams { start, end, interval_us, levels, exchange: non_empty("exchange", self.exchange)? })
    }
}

/// `100ms`, `5s`, `1m`, `1h`: microseconds, from 100 ms to a day.
fn parse_interval(text: &str) -> Option<i64> {
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(digits);
    let n: i64 = n.parse().ok()?;
    let unit_us = match unit {
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        _ => return None,
    };
    let us = n.checked_mul(unit_us)?;
    (100_000..=86_400_000_000).contains(&us).then_some(us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(e: ParamError) -> &'static str {
        e.parameter
    }

    #[test]
    fn times_are_rfc3339_or_epoch_micros() {
        assert_eq!(parse_time("start", "2024-01-02T00:00:00Z").unwrap(), 1_704_153_600_000_000);
        assert_eq!(parse_time("start", "2024-01-02T11:00:00+11:00").unwrap(), 1_704_153_600_000_000);
        assert_eq!(parse_time("start", "1704153600000000").unwrap(), 1_704_153_600_000_000);
        assert_eq!(param(parse_time("end", "yesterday").unwrap_err()), "end");
        assert_eq!(param(parse_time("end", "999999999999999999").unwrap_err()), "end");
    }

    #[test]
    fn every_bad_read_parameter_is_named() {
        let cases: Vec<(ReadQuery, &str)> = vec![
            (ReadQuery { limit: Some("0".into()), ..Default::default() }, "limit"),
            (ReadQuery { limit: Some("10001".into()), ..Default::default() }, "limit"),
            (ReadQuery { limit: Some("ten".into()), ..Default::default() }, "limit"),
            (ReadQuery { start: Some("x".into()), ..Default::default() }, "start"),
            (ReadQuery { start: Some("2".into()), end: Some("1".into()), ..Default::default() }, "end"),
            (ReadQuery { cursor: Some("abc".into()), ..Default::default() }, "cursor"),
            (ReadQuery { source: Some("lake".into()), ..Default::default() }, "source"),
            (ReadQuery { as_of_snapshot: Some("x".into()), ..Default::default() }, "as_of_snapshot"),
            (ReadQuery { as_of: Some("x".into()), ..Default::default() }, "as_of"),
            (ReadQuery { symbol: Some(" ".into()), ..Default::default() }, "symbol"),
            (ReadQuery { exchange: Some("X".repeat(65)), ..Default::default() }, "exchange"),
            (ReadQuery { as_of: Some("1".into()), source: Some("realtime".into()), ..Default::default() }, "source"),
        ];
        for (q, want) in cases {
            assert_eq!(param(q.check().unwrap_err()), want);
        }
        let ok = ReadQuery::default().check().unwrap();
        assert_eq!((ok.limit, ok.pin.source), (DEFAULT_LIMIT, Source::Hybrid));
    }

    #[test]
    fn cursors_round_trip_and_are_checked() {
        let c = Cursor { timestamp: 5, message_id: uuid::Uuid::nil().to_string() };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("5_notauuid").is_err());
    }

    #[test]
    fn bars_need_symbol_interval_and_range() {
        let full = || BarsQuery {
            symbol: Some("BHP".into()),
            interval: Some("1m".into()),
            start: Some("2024-01-01T00:00:00Z".into()),
            end: Some("2024-01-02T00:00:00Z".into()),
            ..Default::default()
        };
        assert!(full().check().is_ok());
        assert_eq!(param(BarsQuery { symbol: None, ..full() }.check().unwrap_err()), "symbol");
        assert_eq!(param(BarsQuery { interval: Some("2m".into()), ..full() }.check().unwrap_err()), "interval");
        assert_eq!(param(BarsQuery { start: None, ..full() }.check().unwrap_err()), "start");
        assert_eq!(param(BarsQuery { tz: Some("Mars/Base".into()), ..full() }.check().unwrap_err()), "tz");
        let long = BarsQuery { start: Some("2000-01-01T00:00:00Z".into()), ..full() };
        assert_eq!(param(long.check().unwrap_err()), "interval");
    }

    #[test]
    fn an_asx_trading_day_starts_at_sydney_midnight() {
        let d = NaiveDate::from_ymd_opt(2014, 3, 10).unwrap();
        // AEDT (+11:00) in March 2014: 2014-03-09T13:00:00Z.
        assert_eq!(local_midnight(chrono_tz::Australia::Sydney, d), 1_394_370_000_000_000);
        assert_eq!(param(SummaryQuery::default().check("BHP".into(), "2014-13-01").unwrap_err()), "date");
        for signed_or_long in ["+2014-01-01", "-2014-01-01", "12014-01-01", "2014-1-01"] {
            assert_eq!(param(SummaryQuery::default().check("BHP".into(), signed_or_long).unwrap_err()), "date");
        }
        assert!(SummaryQuery::default().check("BHP".into(), "2014-01-02").is_ok());
    }

    #[test]
    fn book_tops_need_a_past_range_and_name_what_is_wrong() {
        let now = 1_800_000_000_000_000;
        let full = || BookTopQuery {
            start: Some((now - 60_000_000).to_string()),
            end: Some(now.to_string()),
            interval: Some("500ms".into()),
            levels: Some("20".into()),
            exchange: None,
        };
        let p = full().check(now).unwrap();
        assert_eq!((p.interval_us, p.levels, p.end - p.start), (500_000, 20, 60_000_000));
        assert_eq!(BookTopQuery { interval: None, levels: None, ..full() }.check(now).unwrap().interval_us, 1_000_000);
        assert_eq!(param(BookTopQuery { start: None, ..full() }.check(now).unwrap_err()), "start");
        assert_eq!(BookTopQuery { end: Some((now + 9).to_string()), ..full() }.check(now).unwrap().end, now);
        let later = BookTopQuery { start: Some((now + 1).to_string()), end: Some((now + 2).to_string()), ..full() };
        let later = later.check(now).unwrap();
        assert!(later.end < later.start, "nothing to sample after now");
        assert_eq!(param(BookTopQuery { start: Some((now + 1).to_string()), ..full() }.check(now).unwrap_err()), "end");
        for bad in ["10ms", "2d", "1.5s", "s", "5x", ""] {
            assert_eq!(
                param(BookTopQuery { interval: Some(bad.into()), ..full() }.check(now).unwrap_err()),
                "interval"
            );
        }
        let long = BookTopQuery { interval: Some("100ms".into()), start: Some("0".into()), ..full() };
        assert_eq!(param(long.check(now).unwrap_err()), "interval");
        for bad in ["0", "5001", "x"] {
            assert_eq!(param(BookTopQuery { levels: Some(bad.into()), ..full() }.check(now).unwrap_err()), "levels");
        }
    }
}
