//! The query API's parameters as the HTTP port receives them: a query
//! string, read the way actix-web's `Query` extractor reads it
//! (serde_urlencoded), then checked. What a check accepts must hold the
//! promises the query engine relies on.

#![no_main]

use k2_core::query_params::{
    BarsQuery, Cursor, MAX_LIMIT, MAX_NAME_CHARS, ReadQuery, SummaryQuery, SymbolsQuery, local_midnight, parse_time,
    pin,
};
use libfuzzer_sys::fuzz_target;

fn name_ok(name: &str) -> bool {
    // The rule the checks keep: not ASCII whitespace only (see query_params).
    !name.trim_ascii().is_empty() && name.chars().count() <= MAX_NAME_CHARS
}

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = serde_urlencoded::from_bytes::<ReadQuery>(data)
        && let Ok(p) = q.check()
    {
        assert!((1..=MAX_LIMIT).contains(&p.limit));
        if let (Some(start), Some(end)) = (p.start, p.end) {
            assert!(start < end);
        }
        if let Some(c) = &p.cursor {
            assert_eq!(Cursor::decode(&c.encode()).as_ref(), Ok(c), "a cursor survives its own encoding");
        }
        assert!(p.symbol.as_deref().is_none_or(name_ok) && p.exchange.as_deref().is_none_or(name_ok));
    }
    if let Ok(q) = serde_urlencoded::from_bytes::<BarsQuery>(data)
        && let Ok(p) = q.check()
    {
        assert!(p.start < p.end && name_ok(&p.symbol));
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    // `{date}?{query}`: the summary's path date and its query string.
    let (date, rest) = text.split_once('?').unwrap_or((text, ""));
    if let Ok(q) = serde_urlencoded::from_str::<SummaryQuery>(rest)
        && let Ok(p) = q.check("BTCUSDT".into(), date)
    {
        assert_eq!(p.date.format("%Y-%m-%d").to_string(), date, "only YYYY-MM-DD passes");
        if let Some(tz) = p.tz {
            let _ = local_midnight(tz, p.date);
        }
    }
    let _ = parse_time("start", text);
    let _ = Cursor::decode(text);
    if let Ok(q) = serde_urlencoded::from_str::<SymbolsQuery>(text) {
        let _ = pin(q.source.as_deref(), q.as_of_snapshot.as_deref(), q.as_of.as_deref());
    }
});
