//! Writes the hand-made seed inputs of every target into `corpus/<target>/`
//! (named by content, so running it again adds nothing twice):
//!
//! ```sh
//! cargo run --manifest-path tests/fuzz/Cargo.toml --example seeds -- tests/fuzz/corpus
//! ```
//!
//! The committed corpora started from these and grew by fuzzing. Every seed
//! is a small snippet written here, never a copy of real data.

use std::path::Path;

use k2_core::book::replay::records;
use k2_core::book::{DepthSnapshot, DepthUpdate};
use k2_core::codec::{WireCodec, book};
use k2_core::schema::{QUOTE_V2_AVSC, TRADE_V2_AVSC};
use k2_core::source::binance::{BinanceParser, Frame};
use k2_core::{BookEventKind, MarketEvent, Timestamp};
use rust_decimal::Decimal;

const BINANCE: &[&str] = &[
    r#"{"e":"trade","E":1722766102790,"s":"BTCUSDT","t":3718209179,"p":"60610.00000000","q":"0.00154000","T":1722766102789,"m":true,"M":true}"#,
    r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1722766102790,"s":"BTCUSDT","t":3718209179,"p":"60610.00000000","q":"0.00154000","T":1722766102789,"m":false,"M":true}}"#,
    r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#,
    r#"{"e":"bookTicker","u":400900218,"s":"ETHBTC","b":"0.00000000","B":"0.00000000","a":"0.05","A":"1","T":1722766102789,"E":1722766102790}"#,
    r#" { "data" : {"u":1,"s":"btcusdt","b":"1.5","B":"2","a":"1.6","A":"3"} , "stream" : "btcusdt@bookTicker" } "#,
    r#"{"e":"trade","s":"BTC\u0055SDT","t":1,"p":"1.0","q":"1e-8","T":0,"m":true}"#,
    r#"{"result":null,"id":1}"#,
    r#"{"result":["btcusdt@trade"],"id":"sub-2"}"#,
    r#"{"code":2,"msg":"Invalid request: unknown stream"}"#,
    r#"{"e":"serverShutdown","E":1722766102790}"#,
    r#"[{"id":3718209179,"price":"60610.00000000","qty":"0.00154000","quoteQty":"93.339","time":1722766102789,"isBuyerMaker":true,"isBestMatch":true},{"id":3718209180,"price":"60611","qty":"1","time":1722766102790,"isBuyerMaker":false}]"#,
];

/// ASX sample files: the first byte picks the kind (low two bits: 0 trades,
/// 1 quotes, 2 company_info.csv, 3 the first-line check) and the time zone
/// (high four bits).
const ASX: &[(u8, &str)] = &[
    (0x00, "03/10/2014,10:00:00.001,36.667,20000,3,X,\n03/10/2014,10:00:00.001,36.66,100,3,X,\n"),
    (0x10, "03/10/2014,16:10:00.000,36.9,250,25,,BUY1\r\n\n03/10/2014,10:00:01.5,x,1,0,X,\n"),
    (0x20, "04/06/2014,02:30:00,1,1,,,\n10/05/2014,02:30:00,1,1,,,\n04/06/2014,03:30:00,1,1,,,\n"),
    (0x01, "03/10/2014,05:43:45.676,37.7,0.0,300,0\n03/10/2014,10:00:00.000,37.7,37.73,300,600\n"),
    (0x31, "03/10/2014,10:00:01.000,37.8,37.7,100,100\n03/10/2014,10:00:01,0.0,0.0,0,0\n"),
    (
        0x02,
        "company_id,symbol,company_name,ISIN,start_date,end_date\n7078,BHP,BHP BILLITON LTD,AU000000BHP4,05/07/2008,03/31/2014\n7458,rio,\"RIO, TINTO\",AU000000RIO1\n",
    ),
    (0x03, "03/10/2014,10:00:00.001,36.667,20000,3,X,\n"),
    (0x03, "symbol,exchange_timestamp,price\n"),
];

const HEADER: &[&str] = &[
    "symbol,exchange_timestamp,price,quantity,side,sequence_number,trade_id\nBHP,2014-03-10 10:00:00.5,36.667,100,buy,1,T1\nbhp,2014-03-10T10:00:01,36.7,5,SELL,,T2\n",
    "symbol,exchange_timestamp,price,quantity,side,sequence_number,trade_id,company_id,qualifiers,venue,exchange,currency\nCBA,2024-03-10T10:00:00+11:00,100.01,1,sell_short,7,A1,7078,XT,CXA,chia,aud\n",
    "trade_id, Side ,quantity,PRICE,exchange_timestamp,symbol,sequence_number\nZ9,unknown,1,2,2014-04-06 02:30:00,RIO,9\n",
    "symbol,exchange_timestamp,bid_price,ask_price,bid_size,ask_size,sequence_number,quote_id\nBHP,2014-03-10 10:00:00,37.7,37.73,300,600,1,Q1\nBHP,2014-03-10 10:00:01,0,37.73,0,600,,\n",
    "symbol,exchange_timestamp,bid_price,ask_price,bid_size,ask_size,sequence_number\n\"RIO\",\"2014-03-10 10:00:00\",1,2,3,4,\"5\"\nRIO,bad,1,2,3\n",
];

const SCHEMAS: &[&str] = &[
    r#""string""#,
    r#"{"type":"record","name":"T","fields":[{"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":18,"scale":8}}]}"#,
    r#"{"type":"record","name":"List","namespace":"a.b","fields":[{"name":"v","type":"long"},{"name":"next","type":["null","List"],"default":null}]}"#,
    r#"{"type":"record","name":"R","fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}},{"name":"f","type":{"type":"fixed","name":"F","size":16,"logicalType":"decimal","precision":38,"scale":2}},{"name":"m","type":{"type":"map","values":{"type":"array","items":"E"}}},{"name":"u","type":{"type":"string","logicalType":"uuid"},"aliases":["id"]},{"name":"d","type":{"type":"int","logicalType":"date"}},{"name":"dur","type":{"type":"fixed","name":"D","size":12,"logicalType":"duration"}}]}"#,
];

fn main() {
    let root = std::env::args().nth(1).expect("usage: seeds <corpus directory>");
    let root = Path::new(&root);
    for f in BINANCE {
        write(root, "binance_frame", f.as_bytes());
    }
    for (selector, file) in ASX {
        write(root, "asx_csv", &[&[*selector], file.as_bytes()].concat());
    }
    for f in HEADER {
        write(root, "header_csv", f.as_bytes());
    }
    for frame in frames() {
        write(root, "confluent_avro", &frame);
    }
    for datum in book_records() {
        write(root, "book_avro", &datum);
    }
    for schema in SCHEMAS.iter().copied().chain([TRADE_V2_AVSC, QUOTE_V2_AVSC]) {
        let body = serde_json::json!({ "schema": schema }).to_string();
        write(root, "registry_body", body.as_bytes());
    }
    for other in [
        r#"{"schema":"\"int\"","schemaType":"AVRO","references":[]}"#,
        r#"{"schema":"{}","schemaType":"PROTOBUF"}"#,
        r#"{"schema":"\"int\"","references":[{"name":"x","subject":"s","version":1}]}"#,
        r#"{"compatibility":"FULL_TRANSITIVE"}"#,
        "market.crypto.trades.binance-value",
        "42",
    ] {
        write(root, "registry_body", other.as_bytes());
    }
}

/// Real frames, written by K2's own encoder: the events the Binance seeds
/// parse into, and variants that fill every optional field.
fn frames() -> Vec<Vec<u8>> {
    let codec = WireCodec::new(k2_fuzz::IDS);
    let mut parser = BinanceParser::default();
    let received = Timestamp::from_micros(1_722_766_102_790_000);
    let mut events: Vec<MarketEvent> = BINANCE
        .iter()
        .filter_map(|f| match parser.parse(f.as_bytes(), received) {
            Ok(Frame::Event(e)) => Some(e),
            _ => None,
        })
        .collect();
    let filled: Vec<MarketEvent> = events
        .iter()
        .cloned()
        .map(|mut e| {
            match &mut e {
                MarketEvent::Trade(t) => {
                    t.trade_conditions = vec!["XT".into(), "".into()];
                    t.platform_sequence = Some(-1);
                    t.vendor_data = None;
                }
                MarketEvent::Quote(q) => {
                    q.platform_sequence = Some(i64::MAX);
                    q.vendor_data = Some([("company_id", "7078"), ("venue", "ü")].into_iter().collect());
                }
            }
            e
        })
        .collect();
    events.extend(filled);
    events.iter().map(|e| codec.encode(e).expect("seed events encode")).collect()
}

/// Book records of every kind, made by the constructors the order-book
/// actor uses and written by K2's own encoder: an update with levels on
/// both sides and a removal, a venue snapshot with its depth, and the two
/// sync changes with their causes.
fn book_records() -> Vec<Vec<u8>> {
    let at = Timestamp::from_micros(1_722_766_102_790_000);
    let level = |p: i64, q: i64| (Decimal::new(p, 8), Decimal::new(q, 8));
    let update = records::update(
        "BINANCE",
        &DepthUpdate {
            symbol: "BTCUSDT".into(),
            event_time: at,
            first_update_id: 157,
            final_update_id: 160,
            bids: vec![level(6_000_012_000_000, 250_000_000), level(6_000_011_000_000, 0)],
            asks: vec![level(6_000_013_000_000, 1)],
        },
        at,
    );
    let venue = DepthSnapshot {
        last_update_id: 156,
        bids: vec![level(6_000_012_000_000, 100_000_000)],
        asks: vec![level(6_000_013_000_000, 99_999_999_999)],
        limit: 5_000,
    };
    let mut snapshot = records::snapshot("BINANCE", "BTCUSDT", &venue, at);
    snapshot.platform_sequence = Some(i64::MAX);
    let synced = records::state("BINANCE", "BTCUSDT", BookEventKind::Synced, 156, Some("rest"), at);
    let mut unsynced = records::state("BINANCE", "BTCUSDT", BookEventKind::Unsynced, 160, Some("store_gap"), at);
    unsynced.is_sample_data = true;
    [update, snapshot, synced, unsynced]
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            book::encode_book(r, &mut out).expect("seed records encode");
            out
        })
        .collect()
}

fn write(root: &Path, target: &str, data: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    // Named by a hash of the content, so a second run rewrites the same files.
    let name = format!("seed-{:016x}", fnv1a(data));
    std::fs::write(dir.join(name), data).expect("write a seed");
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
