//! The degradation ladder against real pressure: `k2 run` streaming from
//! the exchange simulator while the admin endpoint slows every Iceberg
//! commit. Rows pile up, the ladder climbs to CIRCUIT_BREAK and pauses the
//! source; the pressure ends, the ladder comes back to NORMAL, the source
//! resumes, and gap recovery fetches what the exchange sent meanwhile: every
//! trade is in the table once.

mod common;

use std::time::{Duration, Instant};

use common::{
    Run, assert_contiguous_trades, get_json, metric, metric_total, post, read_iceberg, start_sim, wait_until,
    write_sim_config,
};

#[test]
fn slow_commits_climb_the_ladder_to_a_pause_and_it_comes_back_without_losing_a_trade() {
    let (_sim, addrs) = start_sim("2000");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Rows not yet durable drive the ladder here; the age trigger is set out
    // of reach so that the cause is the rows.
    let config = write_sim_config(
        dir.path(),
        &addrs,
        "[book]\nenabled = true\n[gap_recovery]\nrequests_per_second = 50\n[flush]\nmax_age = \"200ms\"\n[degradation]\ninterval = \"50ms\"\nlag = [2000, 4000, 6000, 8000]\nage = [1000.0, 2000.0, 3000.0, 4000.0]\ncool_down = \"1s\"\n",
    );
    let k2 = Run::start(&config, &data, "info", dir.path().join("k2.log"));
    let level = |http: &str| metric(http, "k2_degradation_level ");
    let start = Instant::now();
    while metric(&k2.http, "k2_sink_events_total{kind=\"trade\"}").unwrap_or(0.0) < 2000.0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no trades");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(level(&k2.http), Some(0.0));

    // Every commit waits 4 s, for 8 s.
    let answer = post(&k2.http, "/admin/pressure?effect=delay&millis=4000&seconds=8");
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let start = Instant::now();
    while level(&k2.http) != Some(4.0) {
        assert!(start.elapsed() < Duration::from_secs(30), "the ladder did not reach CIRCUIT_BREAK");
        std::thread::sleep(Duration::from_millis(50));
    }
    let reaction = start.elapsed();
    let health = get_json(&k2.http, "/health");
    assert_eq!(health["degradation"]["name"], "CIRCUIT_BREAK", "{health}");
    assert!(health["degradation"]["cause"].as_str().unwrap().contains("rows not yet durable"), "{health}");
    assert_eq!(health["status"], "degraded");
    // The source is paused.
    let start = Instant::now();
    while metric(&k2.http, "k2_binance_connection_status{connection=\"binance-0\"}") != Some(0.0) {
        assert!(start.elapsed() < Duration::from_secs(5), "the source was not paused");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The pressure ends: back to NORMAL, the source resumes, the trades sent
    // meanwhile are recovered.
    let start = Instant::now();
    while level(&k2.http) != Some(0.0) {
        assert!(start.elapsed() < Duration::from_secs(60), "the ladder did not come back to NORMAL");
        std::thread::sleep(Duration::from_millis(100));
    }
    let start = Instant::now();
    loop {
        let recovered = metric(&k2.http, "k2_gap_recovery_trades_total{result=\"recovered\"}").unwrap_or(0.0);
        let idle = metric(&k2.http, "k2_gap_recovery_queue ") == Some(0.0);
        if recovered > 0.0 && idle {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the trades missed while paused were not recovered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = common::get(&k2.http, "/metrics");
    for to in ["SOFT", "GRACEFUL", "AGGRESSIVE", "CIRCUIT_BREAK", "NORMAL"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("k2_degradation_transitions_total") && l.contains(&format!("to=\"{to}\""))),
            "no transition to {to}:\n{metrics}"
        );
    }
    // What the ladder shed is counted, shown in /health, and recorded in
    // the snapshots of the rows committed meanwhile.
    let shed = get_json(&k2.http, "/health")["shed"].clone();
    let stripped = shed.as_object().map_or(0, |m| {
        m.iter().filter(|(k, _)| k.ends_with("/vendor_data")).map(|(_, n)| n.as_u64().unwrap_or(0)).sum::<u64>()
    });
    assert!(stripped > 0, "vendor_data was stripped at SOFT and above: /health shed = {shed}");
    let counted = metric_total(&metrics, "k2_shed_total{", "kind=\"vendor_data\"");
    assert!(counted > 0.0, "k2_shed_total counts it:\n{metrics}");
    // Order books went first: their depth events were shed (counted), the
    // books unsynced with that cause, and every one synced again since.
    assert!(metric_total(&metrics, "k2_shed_total{", "kind=\"book_update\"") > 0.0, "depth events shed:\n{metrics}");
    assert!(
        metric_total(&metrics, "k2_book_resyncs_total{", "cause=\"shed\"") > 0.0,
        "books unsynced by shedding:\n{metrics}"
    );
    wait_until("every order book synced again", 30, || {
        ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
            .iter()
            .all(|s| get_json(&k2.http, &format!("/v1/book/{s}?depth=1"))["synced"] == true)
    });
    let snapshots = get_json(&k2.http, "/v1/snapshots?table=trades");
    let recorded: u64 = snapshots["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["summary"]["k2.shed"].as_str())
        .map(|j| serde_json::from_str::<std::collections::BTreeMap<String, u64>>(j).unwrap().values().sum::<u64>())
        .sum();
    assert!(recorded > 0, "no snapshot records what was shed: {snapshots}");
    let log = k2.stop();
    assert!(log.contains("source paused by the degradation controller") && log.contains("source resumed"), "{log}");
    eprintln!("pressure to CIRCUIT_BREAK in {} ms", reaction.as_millis());
    let v = read_iceberg(&data);
    assert_contiguous_trades(&v);
}

/// Level 3: under slow commits the sink spills batches to disk instead of
/// holding them; when the pressure falls they are replayed. Then the process
/// is killed (SIGKILL) while rows wait in the spill: the next start replays
/// them, gap recovery fetches what was lost from memory, and every trade is
/// in the table once.
#[test]
fn level_three_spills_to_disk_and_a_kill_during_it_loses_and_doubles_nothing() {
    let (_sim, addrs) = start_sim("2000");
    // Kept when the test fails: the logs are in it.
    let kept = tempfile::tempdir().unwrap().keep();
    let data = kept.join("data");
    // Rows not yet durable drive the ladder here; the age trigger is set out
    // of reach so that the cause is the rows.
    let config = write_sim_config(
        &kept,
        &addrs,
        "[gap_recovery]\nrequests_per_second = 50\n[flush]\nmax_age = \"200ms\"\n[degradation]\ninterval = \"50ms\"\nlag = [2000, 4000, 6000, 100000000]\nage = [1000.0, 2000.0, 3000.0, 4000.0]\ncool_down = \"1s\"\n",
    );
    let k2 = Run::start(&config, &data, "info", kept.join("k2-1.log"));
    let http = k2.http.clone();
    wait_until("no trades", 30, || metric(&http, "k2_sink_events_total{kind=\"trade\"}").unwrap_or(0.0) > 2000.0);

    // Round one: spill, then replay once the pressure is gone.
    assert!(post(&http, "/admin/pressure?effect=delay&millis=4000&seconds=6").starts_with("HTTP/1.1 202"));
    wait_until("no spill", 30, || metric(&http, "k2_spill_rows_written_total").unwrap_or(0.0) > 0.0);
    assert!(metric(&http, "k2_degradation_level ").unwrap() >= 3.0 || metric(&http, "k2_spill_rows ").unwrap() > 0.0);
    wait_until("the spill was not replayed", 60, || {
        metric(&http, "k2_spill_rows_replayed_total").unwrap_or(0.0) > 0.0
            && metric(&http, "k2_spill_rows ") == Some(0.0)
            && metric(&http, "k2_degradation_level ") == Some(0.0)
    });

    // Round two: killed while rows wait in the spill.
    assert!(post(&http, "/admin/pressure?effect=delay&millis=4000&seconds=30").starts_with("HTTP/1.1 202"));
    wait_until("nothing waits in the spill", 30, || metric(&http, "k2_spill_rows ").unwrap_or(0.0) > 500.0);
    k2.kill9();
    let segments = std::fs::read_dir(data.join("spill")).unwrap().count();
    assert!(segments > 0, "spill segments are on disk");

    let k2 = Run::start(&config, &data, "info", kept.join("k2-2.log"));
    let http = k2.http.clone();
    wait_until("the trades missed around the crash were not recovered", 60, || {
        metric(&http, "k2_gap_recovery_trades_total{result=\"recovered\"}").unwrap_or(0.0) > 0.0
            && metric(&http, "k2_gap_recovery_queue ") == Some(0.0)
    });
    let log = k2.stop();
    assert!(log.contains("spill left by an earlier run replayed"), "{log}");
    let v = read_iceberg(&data);
    eprintln!("logs in {}", kept.display());
    assert_contiguous_trades(&v);
    let _ = std::fs::remove_dir_all(&kept);
}

/// Failing commits open the Iceberg breaker (shown in /metrics and /health);
/// once they succeed again it closes, and the rows held meanwhile land once.
#[test]
fn failing_commits_open_the_iceberg_breaker_and_nothing_is_lost() {
    let (_sim, addrs) = start_sim("1000");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Rows not yet durable drive the ladder here; the age trigger is set out
    // of reach so that the cause is the rows.
    let config = write_sim_config(
        dir.path(),
        &addrs,
        "[flush]\nmax_age = \"100ms\"\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\n[breakers]\nfailures = 3\ncool_down = \"500ms\"\nsuccesses = 1\n[degradation]\nage = [1000.0, 2000.0, 3000.0, 4000.0]\n",
    );
    let k2 = Run::start(&config, &data, "warn", dir.path().join("k2.log"));
    let http = k2.http.clone();
    let state = "k2_circuit_breaker_state{dependency=\"iceberg\"}";
    let start = Instant::now();
    while metric(&http, "k2_lake_commits_total{table=\"trades\"}").unwrap_or(0.0) < 2.0 {
        assert!(start.elapsed() < Duration::from_secs(30), "no commits");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&http, state), Some(0.0));
    assert!(post(&http, "/admin/pressure?effect=fail&seconds=3").starts_with("HTTP/1.1 202"));
    let start = Instant::now();
    while metric(&http, state) != Some(1.0) {
        assert!(start.elapsed() < Duration::from_secs(10), "the iceberg breaker did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get_json(&http, "/health")["breakers"]["iceberg"], "open");
    let start = Instant::now();
    while metric(&http, state) != Some(0.0) {
        assert!(start.elapsed() < Duration::from_secs(20), "the iceberg breaker did not close");
        std::thread::sleep(Duration::from_millis(50));
    }
    k2.stop();
    assert_contiguous_trades(&read_iceberg(&data));
}

/// At a rate the flusher sustains, rows wait for their flush without being
/// pressure: the ladder stays at NORMAL throughout with the default triggers,
/// and every quote and every trade's `vendor_data` reaches the tables. (With
/// row triggers below one flush's worth, the ladder used to climb on every
/// flush cycle and strip `vendor_data`, then drop quotes.)
#[test]
fn a_rate_inside_capacity_stays_at_normal_and_sheds_nothing() {
    let (sim, addrs) = start_sim("20000");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("k2.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nbind = \"127.0.0.1:0\"\n[binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nbook_ticker = true\n[degradation]\ninterval = \"50ms\"\n",
            ws = addrs["ws"].as_str().unwrap(),
            rest = addrs["rest"].as_str().unwrap()
        ),
    )
    .unwrap();
    let k2 = Run::start(&config, &data, "warn", dir.path().join("k2.log"));
    let http = k2.http.clone();
    wait_until("no trades", 30, || metric(&http, "k2_sink_events_total{kind=\"trade\"}").unwrap_or(0.0) > 0.0);
    let start = Instant::now();
    let mut samples = 0;
    while start.elapsed() < Duration::from_secs(10) {
        assert_eq!(
            metric(&http, "k2_degradation_level "),
            Some(0.0),
            "the ladder left NORMAL: {}",
            get_json(&http, "/health")["degradation"]
        );
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let trades = metric(&http, "k2_sink_events_total{kind=\"trade\"}").unwrap();
    assert!(trades > 100_000.0, "only {trades} trades in 10 s: the test did not load K2");
    drop(sim);
    // The exchange is gone: what K2 took is all there will be.
    let mut last = (-1.0, -1.0);
    wait_until("the sink did not settle", 30, || {
        let now = (
            metric(&http, "k2_sink_events_total{kind=\"trade\"}").unwrap_or(0.0),
            metric(&http, "k2_sink_events_total{kind=\"quote\"}").unwrap_or(0.0),
        );
        let settled = now == last;
        last = now;
        std::thread::sleep(Duration::from_millis(300));
        settled
    });
    let shed = common::get(&http, "/metrics");
    assert!(!shed.lines().any(|l| l.starts_with("k2_shed_total")), "rows were shed:\n{shed}");
    let (trades, quotes) = last;
    k2.stop();
    let v = read_iceberg(&data);
    assert!(samples > 50, "{samples} samples");
    assert_eq!(v["trades"]["rows"].as_f64(), Some(trades), "{v}");
    assert_eq!(v["quotes"]["rows"].as_f64(), Some(quotes), "{v}");
    assert!(quotes > 0.0, "{v}");
    assert_eq!(v["trades"]["without_vendor_data"], 0, "trades stored without vendor_data: {v}");
}
