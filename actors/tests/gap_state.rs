//! A gap that is open when K2 dies is not forgotten: each snapshot records
//! the open gaps beside the marks, in the same commit as the rows, and a
//! restarted K2 queues them for recovery. Deterministic: the first run has
//! gap recovery off, so every gap it sees is open when it is killed while
//! later trades are already committed.

mod common;

use common::{Run, assert_contiguous_trades, get_json, metric, read_iceberg, start_sim_with, wait_until};

/// Trades per symbol the simulator sends, then it stops (its REST API stays).
const TRADES: u64 = 3_010;

#[test]
fn gaps_open_at_a_kill_are_recovered_after_the_restart() {
    let (_sim, addrs) =
        start_sim_with("1000", &["--gap-every", "150", "--gap-size", "2", "--trades", &TRADES.to_string()]);
    let kept = tempfile::tempdir().unwrap().keep();
    let data = kept.join("data");
    let config = |name: &str, rest: &str| {
        let dir = kept.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        common::write_sim_config(&dir, &addrs, rest)
    };

    // Run one: gaps stay open while the trades after them commit.
    let off = config("off", "[gap_recovery]\nenabled = false\n[flush]\nmax_age = \"200ms\"\n");
    let k2 = Run::start(&off, &data, "info", kept.join("k2-1.log"));
    let http = k2.http.clone();
    wait_until("no gaps were committed past", 60, || {
        metric(&http, "k2_sequence_missing_total{exchange=\"BINANCE\"}").unwrap_or(0.0) >= 6.0
            && metric(&http, "k2_lake_commits_total{table=\"trades\"}").unwrap_or(0.0) >= 3.0
    });
    // Let a commit land after the last gap seen, so it lies below the mark.
    let commits = metric(&http, "k2_lake_commits_total{table=\"trades\"}").unwrap_or(0.0);
    wait_until("no commit after the gaps", 30, || {
        metric(&http, "k2_lake_commits_total{table=\"trades\"}").unwrap_or(0.0) > commits
    });
    k2.kill9();
    let before = read_iceberg(&data);
    let open = before["trades"]["open_gaps"].as_u64().unwrap_or(0);
    assert!(open >= 6, "the table records the open gaps: {before}");

    // Run two: recovery on. The open gaps are queued at start and fetched.
    let on = config("on", "[gap_recovery]\nrequests_per_second = 50\n[flush]\nmax_age = \"200ms\"\n");
    let k2 = Run::start(&on, &data, "info", kept.join("k2-2.log"));
    let http = k2.http.clone();
    let mut last_total = 0;
    wait_until("the market did not end in K2", 90, || {
        let symbols = get_json(&http, "/v1/symbols?source=hybrid");
        let total: u64 =
            symbols["data"].as_array().map_or(0, |rows| rows.iter().filter_map(|r| r["trades"].as_u64()).sum());
        // The market has ended once nothing new arrives for a second.
        let still = total > 0 && total == last_total;
        last_total = total;
        std::thread::sleep(std::time::Duration::from_secs(1));
        still
            && metric(&http, "k2_gap_recovery_queue ") == Some(0.0)
            && metric(&http, "k2_gap_recovery_trades_total{result=\"recovered\"}").unwrap_or(0.0) >= open as f64
    });
    let log = k2.stop();
    let v = read_iceberg(&data);
    assert_contiguous_trades(&v);
    assert_eq!(v["trades"]["open_gaps"], 0, "every gap closed: {v}");
    assert!(log.contains("open gaps from the tables queued for recovery"), "{log}");
    let _ = std::fs::remove_dir_all(&kept);
}
