//! Order books on the live path, measured: the exchange simulator (in this
//! process) sends K2_BENCH_TRADES trades per symbol (default 100,000) over
//! three symbols as fast as K2 reads, each trade followed by a diff-depth
//! event of one to four level changes (plus the levels the moving price
//! crossed), and an embedded K2 with books on takes both over one
//! connection: trades through the pipeline into Iceberg, depth events
//! through the order-book actor. Printed: depth events and level changes
//! applied per second (a level change is counted when applied to a synced
//! book; events the first snapshot already covered are not), and the trades
//! beside them; the run ends when every book is synced at the venue's last
//! update id and every trade is durable (flushes every 500 ms), and then
//! each book is compared with the venue's whole book. Then the bytes of
//! the `book_updates` Parquet per depth event and per row, as flushed and
//! compacted.
//!
//! `cargo bench -p k2 --bench book_live`

mod common;

use std::time::{Duration, Instant};

use figment::providers::Env;
use k2::lake::books::tables::BookTable;
use k2::lake::maintenance::{Maintained, Maintainer};
use k2::runtime::config::Config;
use k2::service::{Service, Stop};
use k2::sim::{SimConfig, Simulator};
use k2::state::books::GetBook;

const SYMBOLS: [&str; 3] = ["BTCUSDT", "ETHUSDT", "BNBUSDT"];

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let per_symbol: u64 = std::env::var("K2_BENCH_TRADES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    k2::runtime::run(|| async move {
        let sim = Simulator::start(SimConfig {
            symbols: SYMBOLS.iter().map(|s| (*s).to_owned()).collect(),
            rate: 0,
            trades_per_symbol: per_symbol,
            book_ticker_every: 0,
            depth_every: 1,
            hold_while_idle: true,
            ..SimConfig::default()
        })
        .await
        .expect("simulator");
        let file = dir.path().join("k2.toml");
        std::fs::write(
            &file,
            format!(
                "[http]\nbind = \"127.0.0.1:0\"\n\
                 [binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nbook_ticker = false\nsymbols = {SYMBOLS:?}\n\
                 [book]\nenabled = true\n[flush]\nmax_age = \"500ms\"\n[storage]\ndata_dir = \"{data}\"\n[maintenance]\nenabled = false\n",
                ws = sim.ws_url(),
                rest = sim.rest_url(),
                data = dir.path().join("lake").display(),
            ),
        )
        .expect("config");
        let config = Config::load_from(Some(&file), Env::prefixed("K2_BENCH_UNSET__")).expect("config");
        let mut k2 = Service::builder(&config).start().await.expect("K2");
        k2.start_binance();
        let started = Instant::now();
        let total = per_symbol * SYMBOLS.len() as u64;
        let give_up = Duration::from_secs(600);
        let (mut books_at, mut durable_at) = (None, None);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let done = sim.market.is_done();
            if books_at.is_none() && done {
                let mut level = true;
                for symbol in SYMBOLS {
                    let truth = sim.market.true_book(symbol, None).expect("truth").last_update_id;
                    let view = match k2.api.books.find(symbol) {
                        Some(actor) => actor.send(GetBook { symbol: symbol.into(), depth: 1 }).await.ok().flatten(),
                        None => None,
                    };
                    level &= view.and_then(|v| v.update_id) == Some(truth);
                }
                if level {
                    books_at = Some(started.elapsed());
                }
            }
            if durable_at.is_none() && k2.tails.trades.waiting_rows() == 0 && k2.tails.trades.appended() >= total {
                durable_at = Some(started.elapsed());
            }
            if books_at.is_some() && durable_at.is_some() {
                break;
            }
            assert!(started.elapsed() < give_up, "gave up after {give_up:?}");
        }
        let stats = sim.stats.snapshot();
        let books = books_at.unwrap_or_default().as_secs_f64();
        let metrics = k2::runtime::telemetry::prometheus().map(|p| p.render()).unwrap_or_default();
        let applied: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("k2_book_updates_applied_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        println!(
            "{} depth events ({applied:.0} level changes) and {total} trades over one connection, 3 symbols",
            stats.depth_events_sent
        );
        println!(
            "books at the venue's last update id after {books:.2} s: {:.0} depth events/s, {:.0} level changes/s applied",
            stats.depth_events_sent as f64 / books,
            applied / books
        );
        println!(
            "every trade durable after {:.2} s: {:.0} trades/s beside the books",
            durable_at.unwrap_or_default().as_secs_f64(),
            total as f64 / durable_at.unwrap_or_default().as_secs_f64()
        );
        for symbol in SYMBOLS {
            let truth = sim.market.true_book(symbol, None).expect("truth");
            let actor = k2.api.books.find(symbol).expect("book actor");
            let view = actor.send(GetBook { symbol: symbol.into(), depth: 5_000 }).await.expect("answer").expect("book");
            assert_eq!(view.update_id, Some(truth.last_update_id), "{symbol}");
            let same = |ours: &[[String; 2]], theirs: &[[String; 2]]| {
                ours.len() == theirs.len()
                    && ours.iter().zip(theirs).all(|(a, b)| {
                        a[0].parse::<rust_decimal::Decimal>().ok() == b[0].parse().ok()
                            && a[1].parse::<rust_decimal::Decimal>().ok() == b[1].parse().ok()
                    })
            };
            assert!(same(&view.bids, &truth.bids) && same(&view.asks, &truth.asks), "{symbol}: the book is not the venue's");
        }
        println!("every book equals the venue's whole book");

        // Storage: the book tables' Parquet as the flushes wrote it, then
        // compacted (the same rows in a file per day).
        k2.flush().await.expect("flush");
        let lake = dir.path().join("lake");
        let (files, bytes, rows) = parquet_of(&lake, "book_updates");
        let per = |b: u64| b as f64 / stats.depth_events_sent as f64;
        println!(
            "book_updates as flushed: {files} files, {bytes} bytes, {rows} rows: {:.1} bytes per depth event, {:.1} per row",
            per(bytes),
            bytes as f64 / rows as f64
        );
        let mut maintenance = config.maintenance.clone();
        maintenance.min_files = 2;
        let maintainer = Maintainer::new(k2.lake.clone(), maintenance, Duration::from_secs(30), Some(k2.tails.clone()));
        maintainer.run(&[Maintained::Book(BookTable::Updates)], false).await.expect("compaction");
        let (files, live, rows) = live_parquet_of(&k2, BookTable::Updates).await;
        println!(
            "book_updates compacted: {files} files, {live} bytes, {rows} rows: {:.1} bytes per depth event, {:.1} per row",
            per(live),
            live as f64 / rows as f64
        );
        k2.shutdown(Stop::Graceful).await;
        sim.stop().await;
    })
    .expect("runtime");
}

/// Parquet files under `table`'s data directory: how many, their bytes and
/// rows (every file written, live or not).
fn parquet_of(lake: &std::path::Path, table: &str) -> (usize, u64, i64) {
    let files = common::parquet_files(lake, table);
    let rows = files.iter().map(|(path, _)| footer(path).1).sum();
    (files.len(), files.iter().map(|(_, len)| len).sum(), rows)
}

fn footer(path: &std::path::Path) -> (u64, i64) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).expect("open");
    let bytes = file.metadata().expect("metadata").len();
    let reader = SerializedFileReader::new(file).expect("parquet");
    (bytes, reader.metadata().file_metadata().num_rows())
}

/// The live files of `table`'s current snapshot: how many, bytes and rows.
async fn live_parquet_of(k2: &Service, table: BookTable) -> (usize, u64, i64) {
    let ident = Maintained::Book(table).ident(&k2.lake);
    let table = k2.lake.catalog().load_table(&ident).await.expect("table");
    let scan = table.scan().build().expect("scan");
    let tasks: Vec<_> =
        futures_util::TryStreamExt::try_collect(scan.plan_files().await.expect("plan")).await.expect("tasks");
    let mut out = (0, 0, 0);
    for task in tasks {
        let path = task.data_file_path.strip_prefix("file://").unwrap_or(&task.data_file_path).to_owned();
        let (b, r) = footer(std::path::Path::new(&path));
        out = (out.0 + 1, out.1 + b, out.2 + r);
    }
    out
}
