//! Interop: a Python Avro reader that K2 did not write (fastavro) decodes K2's
//! Confluent frames with nothing but schemas/*.avsc and gets the same values.
//!
//! K2's own round-trip tests only show that K2 agrees with itself (and with
//! apache-avro, also Rust). This test writes frames with [`WireCodec`], hands
//! them to tests/python/decode_frames.py, and compares every field of every
//! record fastavro returns with the event that was encoded: decimals as exact
//! `Decimal`s, timestamps as integer microseconds, enums as symbols.
//!
//! It needs python3 with fastavro (`python3 -m pip install -r
//! tests/python/requirements.txt`, as CI does) and fails, never skips, when
//! either is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use compact_str::CompactString;
use k2_core::codec::{SchemaIds, WireCodec};
use k2_core::model::decimal;
use k2_core::model::ids::{EventKind, message_id};
use k2_core::schema::{QUOTE_V2_AVSC, QUOTE_V2_NAME, TRADE_V2_AVSC, TRADE_V2_NAME};
use k2_core::{AssetClass, MarketEvent, QuoteV2, Timestamp, TradeSide, TradeV2, VendorData};
use rust_decimal::Decimal;
use serde_json::{Map, Value};

const IDS: SchemaIds = SchemaIds { trade: 7, quote: 8 };
const INSTALL_HINT: &str = "python3 -m pip install -r tests/python/requirements.txt";

// Timestamps, microseconds since the epoch.
/// 2024-03-10T00:00:00.123456Z.
const TS_2024: i64 = 1_710_028_800_123_456;
/// 1969-12-31T23:59:59.999999Z.
const TS_MINUS_ONE: i64 = -1;
/// 1930-11-18T00:28:29.876544Z.
const TS_1930: i64 = -1_234_567_890_123_456;
/// 0001-01-01T00:00:00Z, the earliest instant Python's datetime holds.
const TS_YEAR_1: i64 = -62_135_596_800_000_000;
/// 9999-12-31T23:59:59.999999Z, the latest instant Python's datetime holds.
const TS_YEAR_9999: i64 = 253_402_300_799_999_999;

fn d(s: &str) -> Decimal {
    decimal::parse("test", s).unwrap()
}

fn ts(micros: i64) -> Timestamp {
    Timestamp::from_micros(micros)
}

fn vendor(entries: &[(&str, &str)]) -> Option<VendorData> {
    Some(entries.iter().copied().collect())
}

fn conditions(items: &[&str]) -> Vec<CompactString> {
    items.iter().map(|&c| c.into()).collect()
}

fn trade(exchange: &str, symbol: &str, venue_id: &str) -> TradeV2 {
    TradeV2 {
        message_id: message_id(exchange, symbol, EventKind::Trade, venue_id),
        trade_id: format!("{exchange}-{venue_id}").into(),
        symbol: symbol.into(),
        exchange: exchange.into(),
        asset_class: AssetClass::Crypto,
        timestamp: ts(TS_2024),
        price: d("60610.00000000"),
        quantity: d("0.00154"),
        currency: "USDT".into(),
        side: TradeSide::Buy,
        trade_conditions: Vec::new(),
        source_sequence: Some(3_718_209_179),
        ingestion_timestamp: ts(TS_2024 + 1_234),
        platform_sequence: Some(1),
        vendor_data: None,
        is_sample_data: false,
    }
}

fn quote(exchange: &str, symbol: &str, venue_id: &str) -> QuoteV2 {
    QuoteV2 {
        message_id: message_id(exchange, symbol, EventKind::Quote, venue_id),
        quote_id: format!("{exchange}-{venue_id}").into(),
        symbol: symbol.into(),
        exchange: exchange.into(),
        asset_class: AssetClass::Crypto,
        timestamp: ts(TS_2024),
        bid_price: Some(d("60609.99")),
        bid_quantity: Some(d("1.25")),
        ask_price: Some(d("60610.01")),
        ask_quantity: Some(d("0.5")),
        currency: "USDT".into(),
        source_sequence: Some(400_900_217),
        ingestion_timestamp: ts(TS_2024 + 17),
        platform_sequence: Some(2),
        vendor_data: None,
        is_sample_data: false,
    }
}

/// The events under test: every optional field both ways, the decimal and
/// timestamp extremes, unicode, and a price at each boundary where the minimal
/// two's-complement encoding of a decimal gains a byte.
fn events() -> Vec<MarketEvent> {
    let mut out: Vec<MarketEvent> = Vec::new();

    // An ordinary Binance trade.
    out.push(trade("BINANCE", "BTCUSDT", "3718209179").into());

    // Largest and smallest decimal(18,8), unicode, pre-1970, empty vendor map.
    let mut t = trade("TSE", "トヨタ自動車-7203", "Ω-1");
    t.asset_class = AssetClass::Equities;
    t.price = d("9999999999.99999999");
    t.quantity = d("0.00000001");
    t.currency = "JPY".into();
    t.side = TradeSide::SellShort;
    t.trade_conditions = conditions(&["XT", "Ⓒ", ""]);
    t.timestamp = ts(TS_1930);
    t.ingestion_timestamp = ts(TS_MINUS_ONE);
    t.source_sequence = None;
    t.platform_sequence = None;
    t.vendor_data = Some(VendorData::new());
    t.is_sample_data = true;
    out.push(t.into());

    // Zeros, the datetime range ends, multi-entry unicode vendor data.
    let mut t = trade("CME", "ESZ4", "0");
    t.asset_class = AssetClass::Futures;
    t.price = Decimal::ZERO;
    t.quantity = d("0");
    t.currency = "USD".into();
    t.side = TradeSide::Unknown;
    t.trade_conditions = conditions(&["A", "B", "C", "D", "E", "F", "G", "H"]);
    t.timestamp = ts(TS_YEAR_1);
    t.ingestion_timestamp = ts(TS_YEAR_9999);
    t.source_sequence = Some(i64::MAX);
    t.platform_sequence = Some(0);
    t.vendor_data = vendor(&[
        ("venue", "XCME"),
        ("company_id", "7078"),
        ("ключ", "значение"),
        ("emoji 🚀", "📈 up"),
        ("empty", ""),
        ("", "empty key"),
    ]);
    out.push(t.into());

    // Trailing zeros in the Rust value: 1.50000000 must read back as 1.5.
    let mut t = trade("ASX", "BHP", "7078-20140310-1");
    t.asset_class = AssetClass::Options;
    t.price = Decimal::new(150_000_000, 8);
    t.quantity = Decimal::from_str("20000.0000000000000").unwrap();
    t.currency = "AUD".into();
    t.side = TradeSide::Sell;
    t.source_sequence = Some(-42);
    t.platform_sequence = Some(i64::MIN);
    t.vendor_data = vendor(&[("venue", "ASX")]);
    out.push(t.into());

    // Unscaled values either side of each byte-length boundary of the
    // decimal bytes (127/128, 32767/32768, ...), up to 10^18 - 1.
    let mut unscaled: Vec<i64> = Vec::new();
    for bits in [7u32, 15, 23, 31, 39, 47, 55] {
        unscaled.push((1i64 << bits) - 1);
        unscaled.push(1i64 << bits);
    }
    unscaled.push(decimal::UNSCALED_LIMIT - 1);
    for (i, u) in unscaled.into_iter().enumerate() {
        let mut t = trade("BINANCE", "ETHUSDT", &format!("edge-{i}"));
        t.price = Decimal::new(u, 8);
        t.quantity = Decimal::new(decimal::UNSCALED_LIMIT - 1 - u, 8);
        t.timestamp = ts(TS_2024 + i as i64);
        t.trade_conditions = conditions(&["edge"]);
        out.push(t.into());
    }

    // An ordinary quote, every side present.
    out.push(quote("BINANCE", "BTCUSDT", "400900217").into());

    // An empty book: every side null, every optional null, pre-1970.
    let mut q = quote("ASX", "CBA", "7078-19690101-2");
    q.asset_class = AssetClass::Equities;
    q.bid_price = None;
    q.bid_quantity = None;
    q.ask_price = None;
    q.ask_quantity = None;
    q.currency = "AUD".into();
    q.source_sequence = None;
    q.platform_sequence = None;
    q.timestamp = ts(TS_MINUS_ONE);
    q.ingestion_timestamp = ts(TS_1930);
    q.is_sample_data = true;
    out.push(q.into());

    // Bid only, tiny values, unicode symbol and vendor data.
    let mut q = quote("KRX", "삼성전자", "005930-1");
    q.asset_class = AssetClass::Equities;
    q.bid_price = Some(d("0.00000001"));
    q.bid_quantity = Some(d("9999999999.99999999"));
    q.ask_price = None;
    q.ask_quantity = None;
    q.currency = "KRW".into();
    q.vendor_data = vendor(&[("board", "本板"), ("session", "pré-ouverture")]);
    q.timestamp = ts(TS_YEAR_1);
    q.ingestion_timestamp = ts(0);
    out.push(q.into());

    // Ask only, the largest price and a zero quantity, empty vendor map.
    let mut q = quote("DERIBIT", "BTC-27DEC24-100000-C", "9");
    q.asset_class = AssetClass::Options;
    q.bid_price = None;
    q.bid_quantity = None;
    q.ask_price = Some(d("9999999999.99999999"));
    q.ask_quantity = Some(Decimal::ZERO);
    q.currency = "BTC".into();
    q.source_sequence = Some(0);
    q.platform_sequence = Some(i64::MAX);
    q.vendor_data = Some(VendorData::new());
    q.timestamp = ts(TS_YEAR_9999);
    q.is_sample_data = true;
    out.push(q.into());

    // A futures quote with trailing zeros on the Rust side.
    let mut q = quote("CME", "ESZ4", "77");
    q.asset_class = AssetClass::Futures;
    q.bid_price = Some(Decimal::new(591_225_000_000, 8));
    q.bid_quantity = Some(Decimal::from_str("3.000000000000").unwrap());
    q.ask_price = Some(d("5912.5"));
    q.ask_quantity = Some(d("0.10000000"));
    q.currency = "USD".into();
    q.vendor_data = vendor(&[("venue", "XCME"), ("tick", "0.25"), ("x", "y")]);
    out.push(q.into());

    out
}

fn manifest_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// What decode_frames.py made of a file of frames.
struct PythonRun {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs tests/python/decode_frames.py over `frames` (written length-prefixed
/// to a temporary file). Panics when python3 or fastavro is missing.
fn run_decoder<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> PythonRun {
    let mut file = tempfile::NamedTempFile::new().expect("create a temporary frames file");
    for frame in frames {
        let len = u32::try_from(frame.len()).expect("frame under 4 GiB");
        file.write_all(&len.to_be_bytes()).unwrap();
        file.write_all(frame).unwrap();
    }
    file.flush().unwrap();

    let script = manifest_path("tests/python/decode_frames.py");
    let trade_avsc = manifest_path("schemas/trade_v2.avsc");
    let quote_avsc = manifest_path("schemas/quote_v2.avsc");
    let output = Command::new("python3")
        .arg(&script)
        .arg(file.path())
        .arg("--schema")
        .arg(format!("{}={}", IDS.trade, trade_avsc.display()))
        .arg("--schema")
        .arg(format!("{}={}", IDS.quote, quote_avsc.display()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => panic!(
            "could not run python3 ({e}): this test needs python3 with fastavro; \
             install it with `{INSTALL_HINT}`"
        ),
    };
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.code() == Some(3) || stderr.contains("No module named 'fastavro'") {
        panic!("fastavro is not installed for python3: run `{INSTALL_HINT}`\n{stderr}");
    }
    PythonRun {
        success: output.status.success(),
        stdout: String::from_utf8(output.stdout).expect("decode_frames.py prints UTF-8"),
        stderr,
    }
}

/// The field names of a schema, in schema order.
fn schema_fields(avsc: &str) -> Vec<String> {
    let schema: Value = serde_json::from_str(avsc).unwrap();
    schema["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_owned()).collect()
}

/// Compares the fields of one decoded record with the Rust values, collecting
/// every mismatch instead of stopping at the first.
struct Check<'a> {
    what: String,
    rec: &'a Map<String, Value>,
    seen: BTreeSet<&'static str>,
    errors: Vec<String>,
}

impl<'a> Check<'a> {
    fn new(what: String, rec: &'a Map<String, Value>) -> Self {
        Self { what, rec, seen: BTreeSet::new(), errors: Vec::new() }
    }

    fn get(&mut self, field: &'static str) -> Option<&'a Value> {
        self.seen.insert(field);
        let v = self.rec.get(field);
        if v.is_none() {
            self.errors.push(format!("{}: field {field} missing from fastavro", self.what));
        }
        v
    }

    fn mismatch(&mut self, field: &str, python: &Value, rust: impl std::fmt::Debug) {
        self.errors.push(format!("{}: {field}: fastavro read {python}, K2 wrote {rust:?}", self.what));
    }

    fn string(&mut self, field: &'static str, want: &str) {
        let Some(v) = self.get(field) else { return };
        if v.as_str() != Some(want) {
            self.mismatch(field, v, want);
        }
    }

    fn long(&mut self, field: &'static str, want: i64) {
        let Some(v) = self.get(field) else { return };
        if v.as_i64() != Some(want) {
            self.mismatch(field, v, want);
        }
    }

    fn timestamp(&mut self, field: &'static str, want: Timestamp) {
        self.long(field, want.as_micros());
    }

    fn opt_long(&mut self, field: &'static str, want: Option<i64>) {
        let Some(v) = self.get(field) else { return };
        let ok = match want {
            None => v.is_null(),
            Some(w) => v.as_i64() == Some(w),
        };
        if !ok {
            self.mismatch(field, v, want);
        }
    }

    fn boolean(&mut self, field: &'static str, want: bool) {
        let Some(v) = self.get(field) else { return };
        if v.as_bool() != Some(want) {
            self.mismatch(field, v, want);
        }
    }

    /// Decimals compare as exact values: "1.50000000" equals 1.5.
    fn decimal(&mut self, field: &'static str, want: Decimal) {
        let Some(v) = self.get(field) else { return };
        let got = v.as_str().and_then(|s| Decimal::from_str(s).ok());
        if got != Some(want) {
            self.mismatch(field, v, want);
        }
    }

    fn opt_decimal(&mut self, field: &'static str, want: Option<Decimal>) {
        let Some(v) = self.get(field) else { return };
        let ok = match want {
            None => v.is_null(),
            Some(w) => v.as_str().and_then(|s| Decimal::from_str(s).ok()) == Some(w),
        };
        if !ok {
            self.mismatch(field, v, want);
        }
    }

    fn strings(&mut self, field: &'static str, want: &[CompactString]) {
        let Some(v) = self.get(field) else { return };
        let got: Option<Vec<&str>> = v.as_array().and_then(|items| items.iter().map(Value::as_str).collect());
        if got.as_deref() != Some(&want.iter().map(|c| c.as_str()).collect::<Vec<_>>()[..]) {
            self.mismatch(field, v, want);
        }
    }

    fn vendor_data(&mut self, field: &'static str, want: Option<&VendorData>) {
        let Some(v) = self.get(field) else { return };
        let ok = match (want, v) {
            (None, Value::Null) => true,
            (Some(w), Value::Object(m)) => {
                let got: Option<BTreeMap<&str, &str>> =
                    m.iter().map(|(k, v)| v.as_str().map(|v| (k.as_str(), v))).collect();
                got == Some(w.iter().collect())
            }
            _ => false,
        };
        if !ok {
            self.mismatch(field, v, want);
        }
    }

    /// Every schema field was compared, and fastavro returned no other.
    fn finish(mut self, schema: &[String]) -> Vec<String> {
        let schema: BTreeSet<&str> = schema.iter().map(String::as_str).collect();
        let seen: BTreeSet<&str> = self.seen.iter().copied().collect();
        if seen != schema {
            self.errors.push(format!("{}: the test compares {seen:?} but the schema has {schema:?}", self.what));
        }
        let returned: BTreeSet<&str> = self.rec.keys().map(String::as_str).collect();
        if returned != schema {
            self.errors
                .push(format!("{}: fastavro returned fields {returned:?}, the schema has {schema:?}", self.what));
        }
        self.errors
    }
}

fn check_trade(what: String, t: &TradeV2, rec: &Map<String, Value>) -> Vec<String> {
    let mut c = Check::new(what, rec);
    c.string("message_id", &t.message_id.hyphenated().to_string());
    c.string("trade_id", &t.trade_id);
    c.string("symbol", &t.symbol);
    c.string("exchange", &t.exchange);
    c.string("asset_class", t.asset_class.as_str());
    c.timestamp("timestamp", t.timestamp);
    c.decimal("price", t.price);
    c.decimal("quantity", t.quantity);
    c.string("currency", &t.currency);
    c.string("side", t.side.as_str());
    c.strings("trade_conditions", &t.trade_conditions);
    c.opt_long("source_sequence", t.source_sequence);
    c.timestamp("ingestion_timestamp", t.ingestion_timestamp);
    c.opt_long("platform_sequence", t.platform_sequence);
    c.vendor_data("vendor_data", t.vendor_data.as_ref());
    c.boolean("is_sample_data", t.is_sample_data);
    c.finish(&schema_fields(TRADE_V2_AVSC))
}

fn check_quote(what: String, q: &QuoteV2, rec: &Map<String, Value>) -> Vec<String> {
    let mut c = Check::new(what, rec);
    c.string("message_id", &q.message_id.hyphenated().to_string());
    c.string("quote_id", &q.quote_id);
    c.string("symbol", &q.symbol);
    c.string("exchange", &q.exchange);
    c.string("asset_class", q.asset_class.as_str());
    c.timestamp("timestamp", q.timestamp);
    c.opt_decimal("bid_price", q.bid_price);
    c.opt_decimal("bid_quantity", q.bid_quantity);
    c.opt_decimal("ask_price", q.ask_price);
    c.opt_decimal("ask_quantity", q.ask_quantity);
    c.string("currency", &q.currency);
    c.opt_long("source_sequence", q.source_sequence);
    c.timestamp("ingestion_timestamp", q.ingestion_timestamp);
    c.opt_long("platform_sequence", q.platform_sequence);
    c.vendor_data("vendor_data", q.vendor_data.as_ref());
    c.boolean("is_sample_data", q.is_sample_data);
    c.finish(&schema_fields(QUOTE_V2_AVSC))
}

/// Compares one line of decode_frames.py output with the event encoded.
fn check_line(index: usize, event: &MarketEvent, line: &Value) -> Vec<String> {
    let (want_id, want_name) = match event {
        MarketEvent::Trade(_) => (IDS.trade, TRADE_V2_NAME),
        MarketEvent::Quote(_) => (IDS.quote, QUOTE_V2_NAME),
    };
    let what = format!("frame {index} ({})", event.message_id());
    let mut errors = Vec::new();
    if line["schema_id"].as_u64() != Some(u64::from(want_id)) || line["schema"].as_str() != Some(want_name) {
        errors.push(format!(
            "{what}: fastavro read schema id {} ({}), K2 wrote {want_id} ({want_name})",
            line["schema_id"], line["schema"]
        ));
    }
    let Some(rec) = line["record"].as_object() else {
        errors.push(format!("{what}: no record object in {line}"));
        return errors;
    };
    errors.extend(match event {
        MarketEvent::Trade(t) => check_trade(what, t, rec),
        MarketEvent::Quote(q) => check_quote(what, q, rec),
    });
    errors
}

fn parse_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))).collect()
}

fn encode_all(events: &[MarketEvent]) -> Vec<Vec<u8>> {
    let codec = WireCodec::new(IDS);
    events.iter().map(|e| codec.encode(e).expect("every test event is valid")).collect()
}

#[test]
fn fastavro_reads_k2_frames_with_the_same_values() {
    let events = events();
    let frames = encode_all(&events);

    // The events are valid K2 events: K2 itself reads them back unchanged.
    let codec = WireCodec::new(IDS);
    for (e, f) in events.iter().zip(&frames) {
        assert_eq!(&codec.decode(f).unwrap(), e);
    }

    let run = run_decoder(frames.iter().map(Vec::as_slice));
    assert!(run.success, "decode_frames.py failed on K2's frames:\n{}", run.stderr);
    let lines = parse_lines(&run.stdout);
    assert_eq!(
        lines.len(),
        events.len(),
        "decode_frames.py printed {} records for {} frames",
        lines.len(),
        events.len()
    );

    let errors: Vec<String> =
        events.iter().zip(&lines).enumerate().flat_map(|(i, (e, l))| check_line(i, e, l)).collect();
    assert!(errors.is_empty(), "fastavro disagrees with K2 on {} field(s):\n{}", errors.len(), errors.join("\n"));
}

/// The comparison is not vacuous: an event one unit off in the 8th decimal
/// place, a null turned into a value, or a timestamp one microsecond off is
/// reported against what fastavro read.
#[test]
fn a_wrong_value_is_noticed() {
    let events = events();
    let frames = encode_all(&events);
    let run = run_decoder(frames.iter().map(Vec::as_slice));
    assert!(run.success, "{}", run.stderr);
    let lines = parse_lines(&run.stdout);

    let one_unit = Decimal::new(1, 8);
    let MarketEvent::Trade(mut t) = events[1].clone() else { panic!("event 1 is a trade") };
    t.quantity += one_unit;
    t.ingestion_timestamp = ts(t.ingestion_timestamp.as_micros() + 1);
    let errors = check_line(1, &t.into(), &lines[1]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].contains("quantity"), "{errors:#?}");
    assert!(errors[1].contains("ingestion_timestamp"), "{errors:#?}");

    let MarketEvent::Quote(mut q) = events.last().unwrap().clone() else { panic!("the last event is a quote") };
    q.bid_price = q.bid_price.map(|p| p - one_unit);
    let errors = check_line(events.len() - 1, &q.into(), &lines[events.len() - 1]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("bid_price"), "{errors:#?}");

    // Reading a quote frame as a trade is caught at the schema id.
    let errors = check_line(1, &events[1], &lines[events.len() - 1]);
    assert!(errors[0].contains("schema id"), "{errors:#?}");
}

/// The reader checks the Confluent header rather than skipping 5 bytes.
#[test]
fn decoder_refuses_a_bad_header() {
    let frame = encode_all(&events()[..1]).remove(0);

    let mut wrong_magic = frame.clone();
    wrong_magic[0] = 1;
    let run = run_decoder([wrong_magic.as_slice()]);
    assert!(!run.success, "accepted magic byte 1: {}", run.stdout);
    assert!(run.stderr.contains("magic byte"), "{}", run.stderr);

    let mut unknown_id = frame.clone();
    unknown_id[1..5].copy_from_slice(&99u32.to_be_bytes());
    let run = run_decoder([unknown_id.as_slice()]);
    assert!(!run.success, "accepted schema id 99: {}", run.stdout);
    assert!(run.stderr.contains("unknown schema id 99"), "{}", run.stderr);

    let mut trailing = frame;
    trailing.push(0);
    let run = run_decoder([trailing.as_slice()]);
    assert!(!run.success, "accepted a trailing byte: {}", run.stdout);
    assert!(run.stderr.contains("left over"), "{}", run.stderr);
}
