//! ASX files on disk through discovery and the reader: the sample layout, the
//! header CSV, bad lines, repeat loads, and (when present) the real sample.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use k2_core::source::Rejected;
use k2_core::source::asx::{AsxFileKind, AsxOptions};
use k2_core::source::files::{InputFile, InputFormat, InputReader, Item, discover};
use k2_core::{MarketEvent, TradeSide};
use rust_decimal::Decimal;
use std::str::FromStr;

/// Writes a small data set in the sample's layout.
fn sample_layout(root: &Path) {
    fs::create_dir_all(root.join("trades")).unwrap();
    fs::create_dir_all(root.join("quotes")).unwrap();
    fs::create_dir_all(root.join("reference-data")).unwrap();
    fs::write(
        root.join("reference-data/company_info.csv"),
        "company_id,symbol,company_name,ISIN,start_date,end_date\n7078,BHP,BHP BILLITON LTD,AU000000BHP4,05/07/2008,03/31/2014\n",
    )
    .unwrap();
    fs::write(root.join("reference-data/dividends.csv"), "company id,declared date\n7078,09/25/2013\n").unwrap();
    fs::write(
        root.join("trades/7078.csv"),
        concat!(
            "03/10/2014,10:00:00.001,36.667,20000,3,X,\n",
            "03/10/2014,10:00:00.001,36.66,100,3,X,\n", // same time, distinct trade
            "03/10/2014,10:00:01.5,not-a-price,100,0,X,\n",
            "\n",
            "03/11/2014,16:10:00.000,36.9,250,25,,BUY1\r\n",
            "03/11/2014,16:10:00.000,36.9\n",
        ),
    )
    .unwrap();
    fs::write(
        root.join("quotes/7078.csv"),
        "03/10/2014,05:43:45.676,37.7,0.0,300,0\n03/10/2014,10:00:00.000,37.7,37.73,300,600\n03/10/2014,10:00:01.000,37.8,37.7,100,100\n",
    )
    .unwrap();
    fs::write(root.join("README.md"), "not data\n").unwrap();
}

struct Read {
    events: Vec<MarketEvent>,
    rejected: Vec<Rejected>,
}

fn read_all(paths: &[PathBuf]) -> Read {
    let found = discover(paths, InputFormat::Auto).unwrap();
    let mut reader = InputReader::new(AsxOptions::default(), Default::default());
    let mut out = Read { events: Vec::new(), rejected: found.skipped };
    for f in &found.files {
        reader
            .read(f, &mut |item| match item {
                Item::Event(e) => out.events.push(e),
                Item::Rejected(r) => out.rejected.push(r),
                Item::Control => {}
            })
            .unwrap();
    }
    out
}

#[test]
fn sample_layout_is_discovered_and_read() {
    let dir = tempfile::tempdir().unwrap();
    sample_layout(dir.path());
    let found = discover(&[dir.path().to_owned()], InputFormat::Auto).unwrap();
    let kinds: Vec<_> = found
        .files
        .iter()
        .map(|f| match f {
            InputFile::Asx(_, k) => k.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            AsxFileKind::SampleQuotes { company_id: "7078".into() },
            AsxFileKind::SampleTrades { company_id: "7078".into() }
        ],
        "reference-data/ and README.md are not market data"
    );

    let read = read_all(&[dir.path().to_owned()]);
    let trades: Vec<_> = read
        .events
        .iter()
        .filter_map(|e| match e {
            MarketEvent::Trade(t) => Some(t),
            _ => None,
        })
        .collect();
    let quotes: Vec<_> = read
        .events
        .iter()
        .filter_map(|e| match e {
            MarketEvent::Quote(q) => Some(q),
            _ => None,
        })
        .collect();
    assert_eq!((trades.len(), quotes.len()), (3, 3));

    // Bad lines are reported with file, line and reason; the rest goes on.
    let locations: Vec<_> = read.rejected.iter().map(|r| r.location.rsplit('/').next().unwrap().to_owned()).collect();
    assert_eq!(locations, ["7078.csv:3", "7078.csv:6"]);
    assert!(read.rejected[0].reason.contains("price") && read.rejected[0].reason.contains("not-a-price"));
    assert!(read.rejected[1].reason.contains("missing field Volume"));

    // Two trades at one timestamp are distinct; ids follow company, date, line.
    assert_eq!(trades[0].timestamp, trades[1].timestamp);
    assert_ne!(trades[0].message_id, trades[1].message_id);
    assert_eq!(
        trades.iter().map(|t| t.trade_id.as_str()).collect::<Vec<_>>(),
        ["ASX-7078-20140310-1", "ASX-7078-20140310-2", "ASX-7078-20140311-5"]
    );
    assert_eq!(trades[0].timestamp.to_string(), "2014-03-09T23:00:00.001000Z");
    assert_eq!(trades[2].timestamp.to_string(), "2014-03-11T05:10:00.000000Z");
    assert_eq!(trades[2].vendor_data.as_ref().unwrap().get("buyer_id"), Some("BUY1"));
    assert_eq!(trades[2].vendor_data.as_ref().unwrap().get("venue"), None);
    assert!(trades.iter().all(|t| t.symbol == "BHP" && t.currency == "AUD" && t.side == TradeSide::Unknown));

    // Pre-open quote with an empty ask; a crossed book is a real state, kept.
    assert_eq!(quotes[0].ask_price, None);
    assert_eq!(quotes[0].bid_price, Some(Decimal::from_str("37.7").unwrap()));
    assert!(quotes[2].bid_price > quotes[2].ask_price);
}

#[test]
fn a_second_read_yields_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    sample_layout(dir.path());
    let first: Vec<_> = read_all(&[dir.path().to_owned()]).events.iter().map(MarketEvent::message_id).collect();
    let second: Vec<_> = read_all(&[dir.path().to_owned()]).events.iter().map(MarketEvent::message_id).collect();
    assert_eq!(first, second);
    assert_eq!(first.iter().collect::<HashSet<_>>().len(), first.len(), "ids are unique within a load");
}

#[test]
fn a_file_without_reference_data_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("7078.csv"), "03/10/2014,10:00:00.001,36.667,20000,3,X,\n").unwrap();
    let found = discover(&[dir.path().join("7078.csv")], InputFormat::Asx).unwrap();
    let mut reader = InputReader::default();
    let err = reader.read(&found.files[0], &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("company_info.csv"), "{err}");
}

#[test]
fn header_csv_trades_and_quotes() {
    let dir = tempfile::tempdir().unwrap();
    let trades = dir.path().join("asx_trades.csv");
    fs::write(
        &trades,
        concat!(
            "symbol,exchange_timestamp,price,quantity,side,sequence_number,trade_id,company_id,qualifiers,venue\n",
            "BHP,2026-01-10T10:30:00.123Z,45.50,1000,buy,12345,T-001,123,0,X\n",
            "rio,2026-01-10 10:30:00.456,120.75,500,SELL,12346,T-002,456,0,X\n",
            "BHP,2026-01-10T10:30:01Z,45.50,1000,sideways,12347,T-003,,,\n",
            "\"CBA\",2026-01-10T10:30:02+11:00,95.75,2000,sell_short,,T-004,,,\n",
        ),
    )
    .unwrap();
    let quotes = dir.path().join("asx_quotes.csv");
    fs::write(
        &quotes,
        "symbol,exchange_timestamp,bid_price,ask_price,bid_size,ask_size,sequence_number\nBHP,2026-01-10T10:30:00.123456Z,45.40,45.50,1000,2000,12345\nRIO,2026-01-10T10:30:01Z,0,120.30,0,1000,12346\n",
    )
    .unwrap();
    let read = read_all(&[trades.clone(), quotes]);
    assert_eq!(read.rejected.len(), 1);
    assert!(read.rejected[0].location.ends_with("asx_trades.csv:4"), "{:?}", read.rejected);
    assert!(read.rejected[0].reason.contains("sideways"));

    let MarketEvent::Trade(t0) = &read.events[0] else { panic!() };
    assert_eq!((t0.trade_id.as_str(), t0.side, t0.source_sequence), ("ASX-T-001", TradeSide::Buy, Some(12345)));
    assert_eq!(t0.timestamp.to_string(), "2026-01-10T10:30:00.123000Z");
    assert_eq!(t0.vendor_data.as_ref().unwrap().get("company_id"), Some("123"));
    let MarketEvent::Trade(t1) = &read.events[1] else { panic!() };
    // No offset: exchange-local (Sydney, UTC+11 in January).
    assert_eq!((t1.symbol.as_str(), t1.timestamp.to_string()), ("RIO", "2026-01-09T23:30:00.456000Z".to_string()));
    let MarketEvent::Trade(t2) = &read.events[2] else { panic!() };
    assert_eq!(
        (t2.symbol.as_str(), t2.side, t2.source_sequence, t2.vendor_data.as_ref()),
        ("CBA", TradeSide::SellShort, None, None)
    );
    let MarketEvent::Quote(q1) = &read.events[4] else { panic!() };
    assert_eq!((q1.bid_price, q1.ask_price), (None, Some(Decimal::from_str("120.3").unwrap())));
    assert_eq!(q1.quote_id, "ASX-12346");
}

/// The real ASX sample, when it is where the project expects it.
#[test]
fn real_asx_sample_parses_completely() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/asx-sample");
    if !sample.is_dir() {
        eprintln!("SKIPPED: {} is absent", sample.display());
        return;
    }
    let read = read_all(&[sample]);
    let trades = read.events.iter().filter(|e| e.is_trade()).count();
    assert_eq!((trades, read.events.len() - trades), (200_545, 169_629));
    assert!(read.rejected.is_empty(), "{:?}", &read.rejected[..read.rejected.len().min(5)]);
    let ids: HashSet<_> = read.events.iter().map(MarketEvent::message_id).collect();
    assert_eq!(ids.len(), read.events.len(), "every message id is distinct");
}
