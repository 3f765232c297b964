//! Stored order books, measured: `GET /v1/book/{symbol}?at=&depth=1000` at
//! random instants of one day of 10 symbols, each moving by 10 depth events
//! a second (one to four level changes each) over books of 1,000 levels a
//! side, with a periodic snapshot of each book every 60 s (the defaults).
//!
//! The day is written straight into `market.book_updates` and
//! `market.book_snapshots` as K2's book log writes them (the same records,
//! the same row layout), an hour per commit, with K2's instants spread over
//! the day; then K2 starts on that data directory and is asked over HTTP.
//! Printed: rows and bytes per table, p50/p99 of the answers on the hourly
//! files and again after maintenance compacted both tables, and how many
//! answers were checked against the venue's book (every answer's update id
//! is checked; K2_BENCH_CHECKS of them, level by level).
//!
//! K2_BENCH_HOURS (default 24), K2_BENCH_QUERIES (default 200),
//! K2_BENCH_CHECKS (default 10).
//!
//! `cargo bench -p k2 --bench book_at`

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use figment::providers::Env;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use k2::lake::books::tables::{self, BookTable};
use k2::lake::books::{BookLog, COMPLETE_UNTIL};
use k2::lake::maintenance::{Maintained, Maintainer};
use k2::lake::writer::{FileShape, unique_prefix, write_run};
use k2::lake::{Access, Lake};
use k2::runtime::config::Config;
use k2::service::{Service, Stop};
use k2_core::book::replay::records;
use k2_core::book::{DepthSnapshot, DepthUpdate, Level, OrderBook, Side};
use k2_core::{BookEventV2, Timestamp};
use rust_decimal::Decimal;

const SYMBOLS: usize = 10;
const EX: &str = "BINANCE";
/// 2026-12-06T00:00:00Z
const DAY0: i64 = 1_796_515_200_000_000;
/// Between a symbol's depth events: 10 a second.
const STEP_US: i64 = 100_000;
const EVENTS_PER_HOUR: u64 = 36_000;
/// A periodic snapshot after every 600th event: every 60 s.
const PERIODIC_EVERY: u64 = 600;
const LEVELS: i64 = 1_000;
const FIRST_ID: u64 = 1_000;

fn symbol(s: usize) -> String {
    format!("B{s:02}USDT")
}

/// One symbol's venue: a book of `LEVELS` price ticks a side around
/// 10,000.00, moved by random events; the same seed gives the same day.
struct Venue {
    s: usize,
    rng: u64,
    book: OrderBook,
    /// Events made so far.
    made: u64,
}

impl Venue {
    fn new(s: usize) -> Self {
        let side = |sign: i64| -> Vec<Level> {
            (1..=LEVELS).map(|k| (Decimal::new(1_000_000 + sign * k, 2), Decimal::new(1_000 + k, 3))).collect()
        };
        let book = OrderBook::from_snapshot(FIRST_ID, &side(-1), &side(1), 5_000);
        Self { s, rng: 0x9e37_79b9_7f4a_7c15 ^ (s as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d), book, made: 0 }
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n
    }

    /// The instant K2 recorded event `i` (1-based) of this symbol.
    fn stamp(&self, i: u64) -> i64 {
        DAY0 + i as i64 * STEP_US + self.s as i64 * 100
    }

    /// The next event, applied to the venue's book: two update ids each,
    /// levels mostly near the top.
    fn step(&mut self) -> DepthUpdate {
        self.made += 1;
        let (mut bids, mut asks) = (Vec::new(), Vec::new());
        for _ in 0..1 + self.rand(4) {
            let k = if self.rand(10) < 8 { 1 + self.rand(50) } else { 1 + self.rand(LEVELS as u64) } as i64;
            let quantity =
                if self.rand(8) == 0 { Decimal::ZERO } else { Decimal::new(1 + self.rand(100_000) as i64, 3) };
            if self.rand(2) == 0 {
                bids.push((Decimal::new(1_000_000 - k, 2), quantity));
            } else {
                asks.push((Decimal::new(1_000_000 + k, 2), quantity));
            }
        }
        // A level named twice in one event: the venue lists it once.
        dedup(&mut bids);
        dedup(&mut asks);
        let first = FIRST_ID + 2 * self.made - 1;
        self.book.apply(Side::Bid, &bids);
        self.book.apply(Side::Ask, &asks);
        self.book.set_update_id(first + 1);
        DepthUpdate {
            symbol: symbol(self.s).into(),
            event_time: Timestamp::from_micros(self.stamp(self.made) - 50_000),
            first_update_id: first,
            final_update_id: first + 1,
            bids,
            asks,
        }
    }
}

fn dedup(levels: &mut Vec<Level>) {
    let mut seen = std::collections::HashSet::new();
    levels.retain(|(p, _)| seen.insert(*p));
}

/// The update id of `symbol`'s book at `at`: that of the last event
/// recorded at or before it.
fn id_at(s: usize, at: i64) -> u64 {
    let i = (at - DAY0 - s as i64 * 100).div_euclid(STEP_US).max(0) as u64;
    FIRST_ID + 2 * i
}

fn config(dir: &Path) -> Config {
    let file = dir.join("k2.toml");
    let symbols: Vec<String> = (0..SYMBOLS).map(symbol).collect();
    std::fs::write(
        &file,
        format!(
            "[http]\nbind = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[maintenance]\nenabled = false\n\
             [binance]\nsymbols = {symbols:?}\n[book]\nenabled = true\n",
            dir.join("lake").display()
        ),
    )
    .expect("config");
    Config::load_from(Some(&file), Env::prefixed("K2_BENCH_UNSET__")).expect("config")
}

/// Appends `records` (sorted here) to `table` as one commit saying the
/// table is complete up to `until`.
async fn commit(lake: &Lake, table: BookTable, mut records: Vec<BookEventV2>, hour: u64, until: i64) {
    let ident = Maintained::Book(table).ident(lake);
    let current = lake.catalog().load_table(&ident).await.expect("table");
    let schema = std::sync::Arc::new(
        iceberg::arrow::schema_to_arrow_schema(current.metadata().current_schema()).expect("schema"),
    );
    records.sort_by(|a, b| (&a.symbol, a.ingestion_timestamp).cmp(&(&b.symbol, b.ingestion_timestamp)));
    let batch = tables::to_batch(table, &schema, &records).expect("rows");
    let files = write_run(current.clone(), batch, unique_prefix(hour), FileShape::FLUSH).await.expect("write");
    let summary = HashMap::from([
        (COMPLETE_UNTIL.to_owned(), until.to_string()),
        (k2::lake::summary::WRITER.to_owned(), lake.writer().to_owned()),
    ]);
    let tx = Transaction::new(&current);
    let tx = tx.fast_append().add_data_files(files).set_snapshot_properties(summary).apply(tx).expect("append");
    tx.commit(lake.catalog().as_ref()).await.expect("commit");
}

/// Writes `hours` of the day; returns (update rows, snapshot rows).
async fn write_day(config: &Config, hours: u64) -> (usize, usize) {
    let lake = Lake::open_with(&config.storage, Access::Exclusive).await.expect("lake");
    // Creates both tables as K2 does.
    drop(BookLog::open(&lake, config.book.snapshot_every).await.expect("book tables"));
    let mut venues: Vec<Venue> = (0..SYMBOLS).map(Venue::new).collect();
    let (mut update_rows, mut snapshot_rows) = (0, 0);
    for hour in 0..hours {
        let (mut updates, mut snapshots) = (Vec::new(), Vec::new());
        for v in &mut venues {
            let sym = symbol(v.s);
            if hour == 0 {
                // The venue's snapshot the book synced from, and the sync.
                let side = |s| v.book.top(s, usize::MAX).0;
                let s = DepthSnapshot {
                    last_update_id: FIRST_ID,
                    bids: side(Side::Bid),
                    asks: side(Side::Ask),
                    limit: 5_000,
                };
                let t = Timestamp::from_micros(DAY0 + v.s as i64 * 100);
                snapshots.push(records::snapshot(EX, &sym, &s, t));
                let synced = records::state(
                    EX,
                    &sym,
                    k2_core::BookEventKind::Synced,
                    FIRST_ID,
                    None,
                    Timestamp::from_micros(t.as_micros() + 1),
                );
                updates.push(synced);
            }
            for _ in 0..EVENTS_PER_HOUR {
                let u = v.step();
                let recorded = Timestamp::from_micros(v.stamp(v.made));
                updates.push(records::update(EX, &u, recorded));
                if v.made.is_multiple_of(PERIODIC_EVERY) {
                    let p = records::periodic(
                        EX,
                        &sym,
                        &v.book,
                        1_000,
                        u.event_time,
                        Timestamp::from_micros(recorded.as_micros() + 1),
                    );
                    snapshots.extend(p);
                }
            }
        }
        update_rows += updates.iter().map(|r| (r.bids.len() + r.asks.len()).max(1)).sum::<usize>();
        snapshot_rows += snapshots.iter().map(|r| (r.bids.len() + r.asks.len()).max(1)).sum::<usize>();
        let until = DAY0 + ((hour + 1) * EVENTS_PER_HOUR) as i64 * STEP_US + 1_000_000;
        commit(&lake, BookTable::Snapshots, snapshots, hour, until).await;
        commit(&lake, BookTable::Updates, updates, hour, until).await;
    }
    (update_rows, snapshot_rows)
}

fn parquet_bytes(dir: &Path, table: &str) -> (usize, u64) {
    let files = common::parquet_files(dir, table);
    (files.len(), files.iter().map(|(_, len)| len).sum())
}

fn levels(v: &serde_json::Value) -> Vec<Level> {
    v.as_array()
        .expect("levels")
        .iter()
        .map(|l| {
            (l[0].as_str().expect("price").parse().expect("price"), l[1].as_str().expect("qty").parse().expect("qty"))
        })
        .collect()
}

/// The venue's book of symbol `s` at update id `id`, made again from the seed.
fn truth(s: usize, id: u64) -> OrderBook {
    let mut v = Venue::new(s);
    while v.book.update_id() < id {
        v.step();
    }
    v.book
}

/// `queries` answers at random instants of the first `hours`: latencies,
/// each answer's update id checked, and the first `checks` level by level.
async fn ask(k2: &Service, hours: u64, queries: usize, checks: usize, seed: u64) -> Vec<Duration> {
    let http = k2.serve().expect("http");
    let base = format!("http://{}", http.addr);
    let client = reqwest::Client::new();
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let span = (hours * EVENTS_PER_HOUR) as i64 * STEP_US;
    let mut took = Vec::with_capacity(queries);
    for q in 0..queries {
        let s = next(SYMBOLS as u64) as usize;
        // After the first second: the book is synced from then on.
        let at = DAY0 + 1_000_000 + next((span - 1_000_000) as u64) as i64;
        let url = format!("{base}/v1/book/{}?at={at}&depth=1000", symbol(s));
        let t = Instant::now();
        let body: serde_json::Value = client.get(url).send().await.expect("answer").json().await.expect("json");
        took.push(t.elapsed());
        assert_eq!(body["synced"], true, "{} at {at}: {body}", symbol(s));
        let id = body["update_id"].as_u64().expect("update id");
        assert_eq!(id, id_at(s, at), "{} at {at}", symbol(s));
        if q < checks {
            let want = truth(s, id);
            assert_eq!(levels(&body["bids"]), want.top(Side::Bid, 1_000).0, "{} bids at {at}", symbol(s));
            assert_eq!(levels(&body["asks"]), want.top(Side::Ask, 1_000).0, "{} asks at {at}", symbol(s));
        }
    }
    http.handle.stop(true).await;
    took
}

fn report(what: &str, took: Vec<Duration>) {
    let max = took.iter().max().copied().unwrap_or_default();
    let (p50, p99) = common::percentiles(took.clone());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{what}: {} answers, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", took.len(), ms(p50), ms(p99), ms(max));
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let hours = env("K2_BENCH_HOURS", 24);
    let queries = env("K2_BENCH_QUERIES", 200) as usize;
    let checks = env("K2_BENCH_CHECKS", 10) as usize;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let config2 = config.clone();
    let lake_dir = dir.path().join("lake");
    k2::runtime::run(|| async move {
        let t = Instant::now();
        let (update_rows, snapshot_rows) = write_day(&config, hours).await;
        println!(
            "{hours} h of {SYMBOLS} books x 10 events/s, 1,000 levels a side, a periodic snapshot a minute: \
             {update_rows} book_updates rows, {snapshot_rows} book_snapshots rows, written in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        for table in ["book_updates", "book_snapshots"] {
            let (files, bytes) = parquet_bytes(&lake_dir, table);
            println!("{table}: {files} files, {bytes} bytes");
        }

        let t = Instant::now();
        let k2 = Service::builder(&config).start().await.expect("K2 starts");
        println!("K2 started on the day in {:.1} s (the book log reads every sync change)", t.elapsed().as_secs_f64());
        report("/v1/book?at=&depth=1000, an hour per file", ask(&k2, hours, queries, checks, 0x5eed).await);

        let mut maintenance = config.maintenance.clone();
        maintenance.min_files = 2;
        let maintainer = Maintainer::new(k2.lake.clone(), maintenance, Duration::from_secs(30), Some(k2.tails.clone()));
        let t = Instant::now();
        let tables = [Maintained::Book(BookTable::Updates), Maintained::Book(BookTable::Snapshots)];
        maintainer.run(&tables, false).await.expect("compaction");
        println!("both tables compacted in {:.1} s", t.elapsed().as_secs_f64());
        // It holds the data directory's lock with its handle on the lake.
        drop(maintainer);
        for table in ["book_updates", "book_snapshots"] {
            let (files, bytes) = parquet_bytes(&lake_dir, table);
            println!("{table} after compaction: {files} files on disk (old ones until expiry), {bytes} bytes");
        }
        k2.shutdown(Stop::Graceful).await;
    })
    .expect("runtime");

    // A new process, so the book log reads the compacted tables.
    k2::runtime::run(|| async move {
        let k2 = Service::builder(&config2).start().await.expect("K2 starts");
        report("/v1/book?at=&depth=1000, compacted", ask(&k2, hours, queries, checks, 0x5eed ^ 1).await);
        k2.shutdown(Stop::Graceful).await;
    })
    .expect("runtime");
}
