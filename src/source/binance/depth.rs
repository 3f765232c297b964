//! Binance spot diff-depth events (`<symbol>@depth` and `@depth@100ms`,
//! raw or in the combined-stream envelope) and REST depth snapshots
//! (`GET /api/v3/depth`) → the book's updates and snapshots. Prices and
//! quantities are exact decimals; a value that does not fit is refused, and
//! so is a whole event with one bad level (half an event applied would be
//! a wrong book).

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::raw::Text;
use super::{BinanceError, invalid, missing};
use crate::book::{DepthSnapshot, DepthUpdate, Level};
use crate::model::Timestamp;
use crate::model::decimal;

const EVENT: &str = "depthUpdate";

#[derive(Deserialize)]
struct Raw<'a, D> {
    data: Option<D>,
    #[serde(borrow, default)]
    e: Option<Text<'a>>,
    #[serde(rename = "E", default)]
    event_time: Option<i64>,
    #[serde(borrow, default)]
    s: Option<Text<'a>>,
    #[serde(rename = "U", default)]
    first: Option<u64>,
    #[serde(default)]
    u: Option<u64>,
    #[serde(borrow, default)]
    b: Option<Vec<(Text<'a>, Text<'a>)>>,
    #[serde(borrow, default)]
    a: Option<Vec<(Text<'a>, Text<'a>)>>,
}

type Payload<'a> = Raw<'a, IgnoredAny>;
type Envelope<'a> = Raw<'a, Payload<'a>>;

/// One diff-depth event frame, raw or in the combined-stream envelope.
/// Errors name the field; a frame of another kind is `Unsupported`.
pub fn parse_depth_update(frame: &[u8]) -> Result<DepthUpdate, BinanceError> {
    let envelope: Envelope<'_> = serde_json::from_slice(frame).map_err(|e| BinanceError::Json(e.to_string()))?;
    let payload = match envelope.data {
        Some(data) => data,
        None => Payload {
            data: None,
            e: envelope.e,
            event_time: envelope.event_time,
            s: envelope.s,
            first: envelope.first,
            u: envelope.u,
            b: envelope.b,
            a: envelope.a,
        },
    };
    match payload.e.as_deref() {
        Some(EVENT) => {}
        Some(other) => return Err(BinanceError::Unsupported(format!("event {other:?}"))),
        None => return Err(missing(EVENT, "e")),
    }
    let symbol = payload.s.as_deref().ok_or_else(|| missing(EVENT, "s"))?;
    let millis = payload.event_time.ok_or_else(|| missing(EVENT, "E"))?;
    let event_time = Timestamp::from_millis(millis).ok_or_else(|| invalid("E", millis))?;
    let first_update_id = payload.first.ok_or_else(|| missing(EVENT, "U"))?;
    let final_update_id = payload.u.ok_or_else(|| missing(EVENT, "u"))?;
    if first_update_id > final_update_id {
        return Err(invalid("U", format!("{first_update_id} after u {final_update_id}")));
    }
    Ok(DepthUpdate {
        symbol: symbol.to_ascii_uppercase().into(),
        event_time,
        first_update_id,
        final_update_id,
        bids: levels("b", payload.b.as_deref().ok_or_else(|| missing(EVENT, "b"))?)?,
        asks: levels("a", payload.a.as_deref().ok_or_else(|| missing(EVENT, "a"))?)?,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSnapshot<'a> {
    last_update_id: u64,
    #[serde(borrow)]
    bids: Vec<(Text<'a>, Text<'a>)>,
    #[serde(borrow)]
    asks: Vec<(Text<'a>, Text<'a>)>,
}

/// The body of `GET /api/v3/depth?symbol=..&limit={limit}`.
pub fn parse_depth_snapshot(body: &[u8], limit: usize) -> Result<DepthSnapshot, BinanceError> {
    let raw: RawSnapshot<'_> = serde_json::from_slice(body).map_err(|e| BinanceError::Json(e.to_string()))?;
    Ok(DepthSnapshot {
        last_update_id: raw.last_update_id,
        bids: levels("bids", &raw.bids)?,
        asks: levels("asks", &raw.asks)?,
        limit,
    })
}

fn levels(field: &'static str, raw: &[(Text<'_>, Text<'_>)]) -> Result<Vec<Level>, BinanceError> {
    raw.iter()
        .map(|(price, quantity)| {
            // decimal::parse refuses negatives and values that do not fit.
            let price = decimal::parse(field, price)?;
            if price.is_zero() {
                return Err(invalid(field, price));
            }
            Ok((price, decimal::parse(field, quantity)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{BookSync, Side, SnapshotStep, Step};

    fn d(s: &str) -> rust_decimal::Decimal {
        s.parse().unwrap()
    }

    /// The example event and snapshot of Binance's spot WebSocket and REST
    /// documentation.
    const EVENT_DOC: &str = r#"{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}"#;
    const SNAPSHOT_DOC: &str =
        r#"{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}"#;

    #[test]
    fn the_documented_event_and_snapshot_parse() {
        let u = parse_depth_update(EVENT_DOC.as_bytes()).unwrap();
        assert_eq!((u.symbol.as_str(), u.first_update_id, u.final_update_id), ("BNBBTC", 157, 160));
        assert_eq!(u.event_time, Timestamp::from_millis(1672515782136).unwrap());
        assert_eq!((u.bids, u.asks), (vec![(d("0.0024"), d("10"))], vec![(d("0.0026"), d("100"))]));
        let enveloped = format!(r#"{{"stream":"bnbbtc@depth@100ms","data":{EVENT_DOC}}}"#);
        assert_eq!(parse_depth_update(enveloped.as_bytes()).unwrap().final_update_id, 160);
        let s = parse_depth_snapshot(SNAPSHOT_DOC.as_bytes(), 5000).unwrap();
        assert_eq!(s.last_update_id, 1027024);
        assert_eq!(s.bids, vec![(d("4.00000000"), d("431.00000000"))]);
        assert_eq!(s.asks, vec![(d("4.00000200"), d("12.00000000"))]);
    }

    #[test]
    fn bad_levels_and_missing_fields_are_named() {
        let cases = [
            (r#"{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1.0","-1"]],"a":[]}"#, "b \"-1\" is negative"),
            (r#"{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[],"a":[["0","1"]]}"#, "\"a\""),
            (r#"{"e":"depthUpdate","E":1,"s":"X","U":3,"u":2,"b":[],"a":[]}"#, "\"U\""),
            (r#"{"e":"depthUpdate","E":1,"s":"X","u":2,"b":[],"a":[]}"#, "\"U\""),
            (r#"{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1.123456789","1"]],"a":[]}"#, "never rounded"),
        ];
        for (frame, field) in cases {
            let e = parse_depth_update(frame.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(field), "{frame}: {e}");
        }
        assert!(matches!(parse_depth_update(br#"{"e":"trade","E":1}"#), Err(BinanceError::Unsupported(_))));
    }

    /// Frames written by hand in Binance's documented format: a snapshot
    /// and three hundred events, some of which it already covers, applied
    /// through the sync procedure.
    #[test]
    fn recorded_frames_parse_and_apply() {
        let snapshot = r#"{"lastUpdateId":5010,"bids":[["100.00","1.5"],["99.99","2"],["99.98","3"]],"asks":[["100.01","1"],["100.02","2.25"]]}"#;
        let mut frames = Vec::new();
        let mut id = 5_001;
        for i in 0..300u32 {
            let (first, last) = (id, id + u64::from(i % 3));
            id = last + 1;
            let bid = format!("{}.{:02}", 99 - i % 5, i % 100);
            let ask = format!("{}.{:02}", 101 + i % 5, i % 100);
            let bid_qty = if i % 4 == 0 { "0.00000000".to_owned() } else { format!("{}.5", i % 7) };
            frames.push(format!(
                r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":{},"s":"BTCUSDT","U":{first},"u":{last},"b":[["{bid}","{bid_qty}"]],"a":[["{ask}","{}.25"]]}}}}"#,
                1_700_000_000_000u64 + u64::from(i) * 100,
                i % 9 + 1
            ));
        }
        let mut sync = BookSync::new(1_000);
        for f in &frames[..10] {
            assert!(matches!(sync.on_update(parse_depth_update(f.as_bytes()).unwrap()), Step::Buffered { .. }));
        }
        let SnapshotStep::Synced { snapshot_id: 5010, applied } =
            sync.on_snapshot(&parse_depth_snapshot(snapshot.as_bytes(), 5000).unwrap())
        else {
            panic!("not synced")
        };
        assert!(applied.first().is_some_and(|u| u.first_update_id <= 5011 && u.final_update_id >= 5011));
        for f in &frames[10..] {
            assert!(matches!(sync.on_update(parse_depth_update(f.as_bytes()).unwrap()), Step::Applied(_)));
        }
        let book = sync.book().unwrap();
        assert_eq!(book.update_id(), id - 1);
        assert!(!book.is_crossed());
        assert_eq!(book.best_ask().map(|l| l.0), Some(d("100.01")), "the snapshot's best ask was never changed");
        assert!(book.top(Side::Bid, 10).0.len() == 10);
    }
}
