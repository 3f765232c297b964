//! The degradation ladder against real pressure: `k2 run` streaming from
//! the exchange simulator while the admin endpoint slows every Iceberg
//! commit. Rows pile up, the ladder climbs to CIRCUIT_BREAK and pauses the
//! source; the pressure ends, the ladder comes back to NORMAL, the source
//! resumes, and gap recovery fetches what the exchange sent meanwhile: every
//! trade is in the table once.

mod common;

use std::time::{Duration, Instant};

use common::{Run, assert_contiguous_trades, get_json, metric, post, read_iceberg, start_sim};

#[test]
fn slow_commits_climb_the_ladder_to_a_pause_and_it_comes_back_without_losing_a_trade() {
    let (_sim, addrs) = start_sim("2000");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("k2.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nbind = \"127.0.0.1:0\"\nadmin = true\n[binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\nbook_ticker = false\n[gap_recovery]\nrequests_per_second = 50\n[flush]\nmax_age = \"200ms\"\n[degradation]\ninterval = \"50ms\"\nlag = [2000, 4000, 6000, 8000]\ncool_down = \"1s\"\n",
            ws = addrs["ws"].as_str().unwrap(),
            rest = addrs["rest"].as_str().unwrap()
        ),
    )
    .unwrap();
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
    let log = k2.stop();
    assert!(log.contains("source paused by the degradation controller") && log.contains("source resumed"), "{log}");
    eprintln!("pressure to CIRCUIT_BREAK in {} ms", reaction.as_millis());
    let v = read_iceberg(&data);
    assert_contiguous_trades(&v);
}
