//! What a replay request asks for, read from its path and query string;
//! every refusal names its parameter.

use compact_str::CompactString;
use k2_core::query_params::{ParamError, parse_time};

/// How a frame wraps its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrap {
    /// `/stream?streams=`: `{"stream":"<name>","data":{...}}`.
    Combined,
    /// `/ws/<name>`: the payload alone.
    Raw,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplayParams {
    /// Upper-case symbols, each once, in the order asked.
    pub symbols: Vec<CompactString>,
    pub wrap: Wrap,
    /// Epoch microseconds, `[start, end)` as in `/v1`.
    pub start: i64,
    pub end: i64,
    /// Times real time; 0 for as fast as the client reads.
    pub speed: f64,
    /// `E` and `T` in microseconds (`timeUnit=MICROSECOND`), else milliseconds.
    pub micros: bool,
}

fn bad(parameter: &'static str, reason: impl Into<String>) -> ParamError {
    ParamError { parameter, reason: reason.into() }
}

/// The most symbols one stream replays (Binance's own cap per connection).
pub const MAX_STREAMS: usize = 1024;

impl ReplayParams {
    /// Reads `path_and_query` (e.g. `/stream?streams=btcusdt@trade&start=...`);
    /// `now` (µs) is the default end.
    pub fn parse(path_and_query: &str, now: i64) -> Result<Self, ParamError> {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let (wrap, names): (Wrap, Vec<&str>) = match path.trim_end_matches('/') {
            "/stream" => {
                let streams =
                    get("streams").ok_or_else(|| bad("streams", "missing: /stream?streams=<symbol>@trade/..."))?;
                (Wrap::Combined, streams.split('/').collect())
            }
            p => match p.strip_prefix("/ws/") {
                Some(rest) if !rest.is_empty() => (Wrap::Raw, rest.split('/').collect()),
                _ => return Err(bad("path", format!("{p:?} is neither /stream nor /ws/<stream>"))),
            },
        };
        let param = if wrap == Wrap::Combined { "streams" } else { "path" };
        if names.len() > MAX_STREAMS {
            return Err(bad(param, format!("at most {MAX_STREAMS} streams")));
        }
        let mut symbols: Vec<CompactString> = Vec::with_capacity(names.len());
        for name in names {
            let symbol = match name.split_once('@') {
                Some((symbol, "trade")) if !symbol.is_empty() && symbol.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                    CompactString::from(symbol.to_ascii_uppercase())
                }
                _ => return Err(bad(param, format!("{name:?}: only <symbol>@trade streams are replayed"))),
            };
            if !symbols.contains(&symbol) {
                symbols.push(symbol);
            }
        }
        let start = parse_time("start", get("start").ok_or_else(|| bad("start", "missing: where the replay starts"))?)?;
        let end = match get("end") {
            Some(t) => parse_time("end", t)?,
            None => now,
        };
        if end < start {
            return Err(bad("end", "before start"));
        }
        let speed = match get("speed") {
            None => 1.0,
            Some(s) => match s.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => v,
                _ => return Err(bad("speed", format!("{s:?} is not a number of 0 or more"))),
            },
        };
        let micros = match get("timeUnit") {
            None => false,
            Some(u) if u.eq_ignore_ascii_case("MILLISECOND") => false,
            Some(u) if u.eq_ignore_ascii_case("MICROSECOND") => true,
            Some(u) => return Err(bad("timeUnit", format!("{u:?}: MILLISECOND or MICROSECOND"))),
        };
        Ok(Self { symbols, wrap, start, end, speed, micros })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_and_raw_requests_are_read_and_each_refusal_names_its_parameter() {
        let p =
            ReplayParams::parse("/stream?streams=btcusdt@trade/ethusdt@trade/btcusdt@trade&start=1000&speed=0", 5000)
                .unwrap();
        assert_eq!(p.symbols, ["BTCUSDT", "ETHUSDT"]);
        assert_eq!((p.wrap, p.start, p.end, p.speed, p.micros), (Wrap::Combined, 1000, 5000, 0.0, false));
        let p =
            ReplayParams::parse("/ws/bnbusdt@trade?start=2024-01-02T00:00:00Z&timeUnit=MICROSECOND", i64::MAX).unwrap();
        assert_eq!((p.wrap, p.micros, p.speed), (Wrap::Raw, true, 1.0));
        assert_eq!(p.start, 1_704_153_600_000_000);
        for (request, parameter) in [
            ("/stream?start=1", "streams"),
            ("/stream?streams=btcusdt@depth&start=1", "streams"),
            ("/ws/btcusdt@kline_1m?start=1", "path"),
            ("/other?start=1", "path"),
            ("/stream?streams=btcusdt@trade", "start"),
            ("/stream?streams=btcusdt@trade&start=5&end=4", "end"),
            ("/stream?streams=btcusdt@trade&start=5&speed=-1", "speed"),
            ("/stream?streams=btcusdt@trade&start=5&speed=NaN", "speed"),
            ("/stream?streams=btcusdt@trade&start=5&timeUnit=NANO", "timeUnit"),
            ("/stream?streams=btcusdt@trade&start=yesterday", "start"),
        ] {
            let e = ReplayParams::parse(request, 10).unwrap_err();
            assert_eq!(e.parameter, parameter, "{request}: {e:?}");
        }
    }
}
