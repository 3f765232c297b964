//! The landing rules on real tables (a SQL catalog in a temporary
//! directory), without a broker: the log is a list of records with offsets,
//! read as a consumer would (from the start, after a seek, twice).

use k2_core::book::DepthSnapshot;
use k2_core::book::replay::records;
use rust_decimal::Decimal;

use super::landing::Read;
use super::*;
use crate::lake::Access;

const TOPIC: &str = "t.market.crypto.book.binance";

fn storage(dir: &std::path::Path) -> crate::runtime::config::StorageConfig {
    let env = figment::providers::Env::prefixed("K2_TEST_UNSET__");
    let mut config = crate::runtime::config::Config::load_from(None, env).expect("default config");
    config.storage.data_dir = dir.to_owned();
    config.storage
}

/// Partition 0 holds BTCUSDT's records, partition 1 ETHUSDT's: a venue
/// snapshot, a sync, then states, and every fifth a periodic snapshot;
/// BTCUSDT's 12th record is a producer's `restart` marker stamped late.
fn log() -> Vec<Read> {
    let mut out = Vec::new();
    for (partition, symbol) in [(0, "BTCUSDT"), (1, "ETHUSDT")] {
        let base = 1_700_000_000_000_000 + i64::from(partition) * 7;
        for offset in 0..30i64 {
            let at = Timestamp::from_micros(base + offset * 1_000);
            let mut r = if offset == 0 || offset % 5 == 0 {
                let s = DepthSnapshot {
                    last_update_id: 100 + offset as u64,
                    bids: vec![(Decimal::new(100, 0), Decimal::new(1, 0))],
                    asks: vec![(Decimal::new(101, 0), Decimal::new(2, 0)), (Decimal::new(102, 0), Decimal::ONE)],
                    limit: 5000,
                };
                records::snapshot("BINANCE", symbol, &s, at)
            } else {
                let kind = if offset % 2 == 0 { BookEventKind::Unsynced } else { BookEventKind::Synced };
                records::state("BINANCE", symbol, kind, 100 + offset as u64, Some("gap"), at)
            };
            if partition == 0 && offset == 12 {
                r = records::state("BINANCE", symbol, BookEventKind::Unsynced, 0, Some("restart"), at);
                r.ingestion_timestamp = Timestamp::from_micros(base + 500_000);
                r.timestamp = r.ingestion_timestamp;
            }
            out.push(Read { topic: TOPIC.to_owned(), partition, offset, record: Ok(r) });
        }
    }
    out
}

fn copy(reads: &[Read]) -> Vec<Read> {
    reads
        .iter()
        .map(|r| Read { topic: r.topic.clone(), partition: r.partition, offset: r.offset, record: r.record.clone() })
        .collect()
}

/// (message id, stamp) → rows, over both tables as the catalog has them.
async fn stored(lake: &Lake) -> HashMap<(String, i64), usize> {
    let mut rows = HashMap::new();
    for table in [BookTable::Updates, BookTable::Snapshots] {
        let t = open_table(lake, table).await.expect("table");
        if t.metadata().current_snapshot().is_none() {
            continue;
        }
        let batches: Vec<arrow::array::RecordBatch> =
            t.scan().build().expect("scan").to_arrow().await.expect("arrow").try_collect().await.expect("rows");
        for b in &batches {
            let ids = b.column_by_name("message_id").expect("ids");
            let ids = ids.as_any().downcast_ref::<arrow::array::StringArray>().expect("strings");
            let at = b.column_by_name("ingestion_timestamp").expect("stamps");
            let at = at.as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>().expect("micros");
            for i in 0..b.num_rows() {
                *rows.entry((ids.value(i).to_owned(), at.value(i))).or_default() += 1;
            }
        }
    }
    rows
}

/// What the tables must hold after landing all of `reads`.
fn expected(reads: &[Read]) -> HashMap<(String, i64), usize> {
    let mut rows = HashMap::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    for read in reads {
        let Ok(r) = &read.record else { continue };
        let mut at = r.ingestion_timestamp.as_micros();
        if r.cause.as_deref() == Some("restart") {
            at = at.min(last[r.symbol.as_str()] + 1);
        }
        last.insert(r.symbol.to_string(), at);
        *rows.entry((r.message_id.to_string(), at)).or_default() += (r.bids.len() + r.asks.len()).max(1);
    }
    rows
}

#[test]
fn every_record_lands_once_through_a_crash_a_reread_and_a_stale_flusher() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = storage(dir.path());
    crate::runtime::run(|| async move {
        let reads = log();
        let lake = Lake::open_with(&config, Access::Shared).await.expect("lake");
        let first = BookLog::open_landing(&lake, Duration::ZERO).await.expect("log");
        // A stale flusher: it opens the tables now and lands later.
        let stale_lake = Lake::open_with(&config, Access::Shared).await.expect("lake");
        let stale = BookLog::open_landing(&stale_lake, Duration::ZERO).await.expect("log");
        let p0: Vec<Read> = copy(&reads).into_iter().filter(|r| r.partition == 0).collect();
        stale.land(copy(&p0[..20])).await.expect("stale read");

        // The first flusher lands offsets 0..15 of each partition, then
        // reads up to 25 and crashes before committing.
        let head: Vec<Read> = copy(&reads).into_iter().filter(|r| r.offset < 15).collect();
        let landed = first.land(head).await.expect("land");
        assert_eq!((landed.taken, landed.seek.len()), (30, 0), "{landed:?}");
        assert_eq!(first.commit().await.expect("commit"), 30);
        let more: Vec<Read> = copy(&reads).into_iter().filter(|r| (15..25).contains(&r.offset)).collect();
        first.land(more).await.expect("land");
        drop(first);

        // The stale flusher's commit covers partition 0 from offset 0,
        // which the table has passed: fenced, and nothing of it lands.
        let err = stale.commit().await.expect_err("fenced");
        assert!(matches!(err, LakeError::Fenced { partition: 0, .. }), "{err}");
        assert_eq!(stored(&lake).await.values().sum::<usize>(), 30 + 6 * 2, "only the first commit's rows");

        // The next flusher is given records from offset 20 (where the
        // group said): it asks for a seek to where the tables end (15),
        // skips what the tables hold when read from 0, and lands the rest.
        let next = BookLog::open_landing(&lake, Duration::ZERO).await.expect("log");
        let from_20: Vec<Read> = copy(&reads).into_iter().filter(|r| r.offset >= 20).collect();
        let landed = next.land(from_20).await.expect("land");
        let mut seeks = landed.seek.clone();
        seeks.sort();
        assert_eq!(seeks, vec![(TOPIC.to_owned(), 0, 15), (TOPIC.to_owned(), 1, 15)], "{landed:?}");
        assert_eq!(landed.taken, 0);
        let landed = next.land(copy(&reads)).await.expect("land");
        assert_eq!((landed.taken, landed.seek.len()), (30, 0), "{landed:?}");
        next.commit().await.expect("commit");
        assert_eq!(stored(&lake).await, expected(&reads), "every record once, the restart dated after its book's last");

        // Read again from the start by a restarted flusher: nothing more.
        let again = BookLog::open_landing(&lake, Duration::ZERO).await.expect("log");
        let landed = again.land(copy(&reads)).await.expect("land");
        assert_eq!(landed.taken, 0, "{landed:?}");
        assert_eq!(again.commit().await.expect("commit"), 0);
        assert_eq!(stored(&lake).await, expected(&reads));

        // The book rebuilt at an instant after the restart marker reads as
        // unsynced by `restart`, from the restamped marker on.
        let marker = &reads[12].record.as_ref().expect("marker");
        let at = Timestamp::from_micros(reads[11].record.as_ref().expect("record").ingestion_timestamp.as_micros() + 1);
        let book = again.book_at("BINANCE", &marker.symbol, at).await.expect("book");
        assert_eq!(book.unsynced_cause.as_deref(), Some("restart"), "{book:?}");
    })
    .expect("runtime");
}

#[test]
fn a_restart_marker_of_a_book_with_no_record_is_dropped_and_undecodable_records_pass() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = storage(dir.path());
    crate::runtime::run(|| async move {
        let lake = Lake::open_with(&config, Access::Shared).await.expect("lake");
        let log = BookLog::open_landing(&lake, Duration::ZERO).await.expect("log");
        let at = Timestamp::from_micros(1_700_000_000_000_000);
        let marker = records::state("BINANCE", "BTCUSDT", BookEventKind::Unsynced, 0, Some("restart"), at);
        let batch = vec![
            Read { topic: TOPIC.to_owned(), partition: 0, offset: 0, record: Ok(marker) },
            Read { topic: TOPIC.to_owned(), partition: 0, offset: 1, record: Err("not a book record".to_owned()) },
        ];
        let landed = log.land(batch).await.expect("land");
        assert_eq!((landed.taken, landed.dead.clone()), (0, vec![(1, "not a book record".to_owned())]));
        assert_eq!(log.read_up_to(), vec![(TOPIC.to_owned(), 0, 2)], "both records passed");
        assert_eq!(log.commit().await.expect("commit"), 0);
    })
    .expect("runtime");
}

/// Embedded mode: a commit that landed though its answer was lost leaves
/// its records to the next commit, beside those taken since; only those
/// land then, each once.
#[test]
fn records_of_a_commit_whose_answer_was_lost_are_not_written_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = storage(dir.path());
    crate::runtime::run(|| async move {
        let lake = Lake::open_with(&config, Access::Exclusive).await.expect("lake");
        let log = BookLog::open(&lake, Duration::ZERO).await.expect("log");
        let changes = |n: u64| -> Vec<BookEventV2> {
            (0..n)
                .map(|i| {
                    let kind = if i % 2 == 0 { BookEventKind::Synced } else { BookEventKind::Unsynced };
                    records::state("BINANCE", "BTCUSDT", kind, 100 + i, Some("gap"), Timestamp::now())
                })
                .collect()
        };
        let before = log.table(BookTable::Updates);
        log.record(changes(4));
        let first = log.state().tails[slot(BookTable::Updates)].clone();
        assert_eq!(log.commit().await.expect("commit"), 4);
        // As if the catalog took that commit and its answer never came.
        {
            let mut state = log.state();
            state.tables[slot(BookTable::Updates)] = before;
            state.landing[slot(BookTable::Updates)] = Arc::new(first);
        }
        log.record(changes(3));
        log.commit().await.expect("commit");
        let rows = stored(&lake).await;
        assert_eq!(rows.len(), 7, "every record: {rows:?}");
        assert!(rows.values().all(|n| *n == 1), "each once: {rows:?}");
    })
    .expect("runtime");
}
