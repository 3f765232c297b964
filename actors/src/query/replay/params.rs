//! What a replay request asks for, read from its path and query string;
//! every refusal names its parameter.

use compact_str::CompactString;
use k2_core::query_params::{ParamError, parse_time};

use super::frames::Kind;

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
    /// The streams: upper-case symbols with their kind, each once, in the
    /// order asked.
    pub streams: Vec<(CompactString, Kind)>,
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
        let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        // The parameters may come as path segments before the stream part
        // (`/start/<t>/end/<t>/speed/<x>/stream?streams=...`): a client that
        // only lets its base URL change then replays a range too. The
        // query string's value wins over the path's.
        let path = take_path_pairs(path, &mut pairs)?;
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
        let mut streams: Vec<(CompactString, Kind)> = Vec::with_capacity(names.len());
        for name in names {
            let (symbol, kind) = name.split_once('@').unwrap_or((name, ""));
            let Some(kind) = Kind::of_suffix(kind) else {
                return Err(bad(
                    param,
                    format!(
                        "{name:?}: <symbol>@trade, <symbol>@bookTicker, <symbol>@depth, \
                         <symbol>@depth<5|10|20>, each depth stream also @100ms, are replayed"
                    ),
                ));
            };
            if symbol.is_empty() || !symbol.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad(param, format!("{name:?}: not a symbol")));
            }
            let stream = (CompactString::from(symbol.to_ascii_uppercase()), kind);
            if !streams.contains(&stream) {
                streams.push(stream);
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
        Ok(Self { streams, wrap, start, end, speed, micros })
    }
}

/// A `GET /api/v3/depth?symbol=&limit=` asked of the replay port: the
/// book as the replay has played it (see `depth.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct DepthAsk {
    /// Upper case.
    pub symbol: CompactString,
    /// Levels per side: Binance's default 100, at most 5000.
    pub limit: usize,
    /// The base URL's `start` (µs), when it carries one.
    pub start: Option<i64>,
}

/// The most levels per side a depth answer has (Binance's own cap).
pub const MAX_DEPTH_LIMIT: usize = 5000;

impl DepthAsk {
    /// `Ok(None)` when `path_and_query` is not a depth request.
    pub fn parse(path_and_query: &str) -> Result<Option<Self>, ParamError> {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        // Only a depth path's leading pairs are read: any other request
        // (a stream, with pairs of its own) is not this one's to refuse.
        if !path.trim_end_matches('/').ends_with("/api/v3/depth") {
            return Ok(None);
        }
        let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let path = take_path_pairs(path, &mut pairs)?;
        if path.trim_end_matches('/') != "/api/v3/depth" {
            return Ok(None);
        }
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let symbol = match get("symbol") {
            Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()) => s.to_ascii_uppercase(),
            _ => return Err(bad("symbol", "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")),
        };
        // As Binance: past the cap is the cap.
        let limit = match get("limit").map(str::parse::<usize>) {
            None => 100,
            Some(Ok(n)) if n >= 1 => n.min(MAX_DEPTH_LIMIT),
            Some(_) => return Err(bad("limit", "Illegal value for parameter 'limit': a whole number from 1 to 5000.")),
        };
        let start = get("start").map(|t| parse_time("start", t)).transpose()?;
        Ok(Some(Self { symbol: symbol.into(), limit, start }))
    }
}

/// Moves `name/value` segments before `/stream`, `/ws/` or `/api/` from `path`
/// into `pairs` (after those there); the path left.
fn take_path_pairs<'a>(path: &'a str, pairs: &mut Vec<(String, String)>) -> Result<&'a str, ParamError> {
    // The byte offset of each segment's leading '/'.
    let starts: Vec<usize> = path.match_indices('/').map(|(i, _)| i).collect();
    let segment = |k: usize| &path[starts[k] + 1..starts.get(k + 1).copied().unwrap_or(path.len())];
    let Some(k) = (0..starts.len()).find(|&k| matches!(segment(k), "stream" | "ws" | "api")) else { return Ok(path) };
    if k == 0 {
        return Ok(path);
    }
    if k % 2 != 0 {
        return Err(bad("path", format!("{:?}: name/value pairs before the stream", &path[..starts[k]])));
    }
    for i in (0..k).step_by(2) {
        let name = match segment(i) {
            n @ ("start" | "end" | "speed" | "timeUnit") => n,
            other => return Err(bad("path", format!("{other:?} is not start, end, speed or timeUnit"))),
        };
        // Percent-decoded; a '+' stays a '+' (a time zone offset), unlike in
        // a query string.
        let encoded = format!("v={}", segment(i + 1).replace('+', "%2B"));
        let value: String =
            url::form_urlencoded::parse(encoded.as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default();
        pairs.push((name.to_owned(), value));
    }
    Ok(&path[starts[k]..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_and_raw_requests_are_read_and_each_refusal_names_its_parameter() {
        let p = ReplayParams::parse(
            "/stream?streams=btcusdt@trade/ethusdt@trade/btcusdt@trade/btcusdt@bookTicker&start=1000&speed=0",
            5000,
        )
        .unwrap();
        let streams: Vec<(&str, Kind)> = p.streams.iter().map(|(s, k)| (s.as_str(), *k)).collect();
        assert_eq!(streams, [("BTCUSDT", Kind::Trade), ("ETHUSDT", Kind::Trade), ("BTCUSDT", Kind::BookTicker)]);
        let depth = ReplayParams::parse("/ws/btcusdt@depth@100ms/ethusdt@depth?start=1", 5).unwrap();
        let streams: Vec<(&str, Kind)> = depth.streams.iter().map(|(s, k)| (s.as_str(), *k)).collect();
        assert_eq!(streams, [("BTCUSDT", Kind::Depth100ms), ("ETHUSDT", Kind::Depth)]);
        let partial = ReplayParams::parse("/stream?streams=btcusdt@depth5/ethusdt@depth20@100ms&start=1", 5).unwrap();
        let streams: Vec<(&str, Kind)> = partial.streams.iter().map(|(s, k)| (s.as_str(), *k)).collect();
        assert_eq!(
            streams,
            [
                ("BTCUSDT", Kind::Partial { levels: 5, fast: false }),
                ("ETHUSDT", Kind::Partial { levels: 20, fast: true })
            ]
        );
        for suffix in ["depth5", "depth10", "depth20", "depth5@100ms", "depth10@100ms", "depth20@100ms", "depth@100ms"]
        {
            let kind = Kind::of_suffix(suffix).unwrap();
            assert_eq!(kind.suffix(), suffix, "a stream is named back as asked");
        }
        assert_eq!((p.wrap, p.start, p.end, p.speed, p.micros), (Wrap::Combined, 1000, 5000, 0.0, false));
        let p =
            ReplayParams::parse("/ws/bnbusdt@trade?start=2024-01-02T00:00:00Z&timeUnit=MICROSECOND", i64::MAX).unwrap();
        assert_eq!((p.wrap, p.micros, p.speed), (Wrap::Raw, true, 1.0));
        assert_eq!(p.start, 1_704_153_600_000_000);
        // A base URL carrying the range.
        let p = ReplayParams::parse("/start/1000/end/2000/speed/0/stream?streams=btcusdt@trade", 5000).unwrap();
        assert_eq!((p.start, p.end, p.speed, p.wrap), (1000, 2000, 0.0, Wrap::Combined));
        let p = ReplayParams::parse("/start/2024-01-02T10:00:00+10:00/stream?streams=btcusdt@trade", i64::MAX).unwrap();
        assert_eq!(p.start, 1_704_153_600_000_000, "an offset's '+' is kept");
        let p = ReplayParams::parse("/start/2024-01-02T00:00:00Z/ws/btcusdt@trade?start=7", i64::MAX).unwrap();
        assert_eq!((p.start, p.wrap), (7, Wrap::Raw), "the query string wins");
        for (request, parameter) in [
            ("/start/1/stream/x?streams=btcusdt@trade", "path"),
            ("/start/stream?streams=btcusdt@trade", "path"),
            ("/limit/5/stream?streams=btcusdt@trade&start=1", "path"),
            ("/stream?start=1", "streams"),
            ("/stream?streams=btcusdt@depth15&start=1", "streams"),
            ("/stream?streams=btcusdt@trade@100ms&start=1", "streams"),
            ("/stream?streams=btcusdt@depth@250ms&start=1", "streams"),
            ("/stream?streams=@trade&start=1", "streams"),
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

    #[test]
    fn a_depth_request_is_read_with_binances_defaults_and_cap() {
        let ask = DepthAsk::parse("/start/1000/end/2000/speed/0/api/v3/depth?symbol=btcusdt").unwrap().unwrap();
        assert_eq!((ask.symbol.as_str(), ask.limit, ask.start), ("BTCUSDT", 100, Some(1000)));
        let ask = DepthAsk::parse("/api/v3/depth?symbol=ETHUSDT&limit=9000").unwrap().unwrap();
        assert_eq!((ask.limit, ask.start), (MAX_DEPTH_LIMIT, None));
        assert_eq!(DepthAsk::parse("/stream?streams=btcusdt@depth&start=1").unwrap(), None);
        assert_eq!(DepthAsk::parse("/api/v3/trades?symbol=BTCUSDT").unwrap(), None);
        assert_eq!(DepthAsk::parse("/start/1/x/stream?streams=btcusdt@trade").unwrap(), None, "a stream's own");
        for (request, parameter) in [
            ("/api/v3/depth", "symbol"),
            ("/api/v3/depth?symbol=BTC-USDT", "symbol"),
            ("/api/v3/depth?symbol=BTCUSDT&limit=0", "limit"),
            ("/api/v3/depth?symbol=BTCUSDT&limit=ten", "limit"),
            ("/start/soon/api/v3/depth?symbol=BTCUSDT", "start"),
        ] {
            let e = DepthAsk::parse(request).unwrap_err();
            assert_eq!(e.parameter, parameter, "{request}: {e:?}");
        }
    }
}
