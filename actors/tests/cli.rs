//! The `k2` binary as a user runs it.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::asx_fixture;

/// Runs k2 with its tables in a fresh temporary directory.
fn k2(args: &[&str]) -> Output {
    k2_env(args, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

const TRADE: &str = r#"{"e":"trade","E":1722766102790,"s":"BTCUSDT","t":3718209179,"p":"60610.00000000","q":"0.00154000","T":1722766102789,"m":true,"M":true}"#;

#[test]
fn help_lists_the_subcommands() {
    let out = k2(&["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for cmd in ["parse-check", "load", "schema", "cost-model"] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
}

#[test]
fn parse_check_json_is_exactly_one_object() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("binance.jsonl");
    let mut lines = vec![
        format!(r#"{{"stream":"btcusdt@trade","data":{TRADE}}}"#),
        r#"{"result":null,"id":1}"#.to_owned(),
        r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#
            .to_owned(),
        String::new(),
    ];
    // 25 malformed lines: all counted, 20 listed.
    lines.extend((0..25).map(|i| format!("{{broken {i}")));
    lines.push(TRADE.replace("3718209179", "3718209180"));
    fs::write(&file, lines.join("\n")).unwrap();

    let out = k2(&["parse-check", "--json", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "rejected lines are not a failure");
    let text = stdout(&out);
    assert_eq!(text.trim().lines().count(), 1, "one JSON object: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<_> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = ["control", "errors", "quotes", "rejected", "trades"];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(
        (v["trades"].as_u64(), v["quotes"].as_u64(), v["control"].as_u64(), v["rejected"].as_u64()),
        (Some(2), Some(1), Some(1), Some(25))
    );
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 20);
    assert!(errors[0]["location"].as_str().unwrap().ends_with("binance.jsonl:5"), "{}", errors[0]);
    assert!(errors[0]["reason"].as_str().unwrap().contains("malformed JSON"));
}

#[test]
fn format_can_be_forced() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("capture.txt");
    fs::write(&file, format!("{TRADE}\n")).unwrap();
    let out = k2(&["parse-check", "--json", "--format", "binance", file.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trades"], 1);
}

#[test]
fn unreadable_paths_and_bad_arguments_exit_2() {
    let out = k2(&["parse-check", "/nonexistent/k2/path"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/k2/path"));
    assert_eq!(k2(&["parse-check", "--format", "nope", "."]).status.code(), Some(2));
    assert_eq!(k2(&["parse-check"]).status.code(), Some(2));
    assert_eq!(k2(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn schema_prints_the_embedded_schema() {
    let out = k2(&["schema", "trade"]);
    assert!(out.status.success());
    let on_disk = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/trade_v2.avsc")).unwrap();
    assert_eq!(stdout(&out), on_disk);
}

/// The acceptance check of the foundation issue, when the sample is present.
#[test]
fn parse_check_counts_the_real_asx_sample() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/asx-sample");
    if !sample.is_dir() {
        eprintln!("SKIPPED: {} is absent", sample.display());
        return;
    }
    let out = k2(&["parse-check", "--json", sample.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["trades"].as_u64(), v["quotes"].as_u64(), v["rejected"].as_u64()),
        (Some(200_545), Some(169_629), Some(0))
    );
}

fn k2_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k2"));
    cmd.args(args).env("K2__STORAGE__DATA_DIR", data.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("k2 runs")
}

#[test]
fn load_accepts_everything_once_and_nothing_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    asx_fixture(dir.path());
    let p = dir.path().to_str().unwrap();
    let out = k2(&["load", "--json", p, p]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 4);
    assert_eq!(v["read"], 1004);
    assert_eq!((v["accepted_trades"].as_u64(), v["accepted_quotes"].as_u64()), (Some(500), Some(2)));
    assert_eq!(v["duplicates_dropped"], 502, "the second copy is all duplicates");
    assert_eq!(v["rejected"], 2, "the bad line, once per copy");
    let reasons = v["rejected_by_reason"].as_object().unwrap();
    assert_eq!(reasons.len(), 1);
    assert!(reasons.keys().next().unwrap().contains("price"), "{reasons:?}");
}

#[test]
fn a_second_load_in_a_new_process_accepts_nothing_again() {
    let dir = tempfile::tempdir().unwrap();
    asx_fixture(dir.path());
    let (p, data) = (dir.path().to_str().unwrap(), dir.path().join("data"));
    let data = data.to_str().unwrap();
    let first = k2(&["load", "--json", "--data-dir", data, p]);
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    let again = k2(&["load", "--json", "--data-dir", data, p]);
    assert_eq!(again.status.code(), Some(0), "{}", String::from_utf8_lossy(&again.stderr));
    let (a, b): (serde_json::Value, serde_json::Value) =
        (serde_json::from_slice(&first.stdout).unwrap(), serde_json::from_slice(&again.stdout).unwrap());
    assert_eq!((a["accepted_trades"].as_u64(), a["accepted_quotes"].as_u64()), (Some(500), Some(2)));
    assert_eq!((b["accepted_trades"].as_u64(), b["accepted_quotes"].as_u64()), (Some(0), Some(0)));
    assert_eq!(b["duplicates_dropped"], 502);
    assert_eq!(a["trades_snapshot_id"], b["trades_snapshot_id"], "nothing new was committed");
}

#[test]
fn configuration_mistakes_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    asx_fixture(dir.path());
    let p = dir.path().to_str().unwrap();
    let out = k2_env(&["load", p], &[("K2__PIPELINE__BATCH_SIZE", "0")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipeline.batch_size"));

    let file = dir.path().join("k2.toml");
    fs::write(&file, "[dedup]\nwindoww = \"1h\"\n").unwrap();
    let out = k2(&["load", "--config", file.to_str().unwrap(), p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("windoww"), "{}", String::from_utf8_lossy(&out.stderr));

    // A good override applies.
    let out = k2_env(&["load", "--json", p], &[("K2__PIPELINE__BATCH_SIZE", "7")]);
    assert_eq!(out.status.code(), Some(0));
}

/// The loader acceptance check of the pipeline issue, when the sample is present.
#[test]
fn load_real_asx_sample_twice() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/asx-sample");
    if !sample.is_dir() {
        eprintln!("SKIPPED: {} is absent", sample.display());
        return;
    }
    let s = sample.to_str().unwrap();
    let out = k2(&["load", "--json", s, s]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["accepted_trades"].as_u64(), v["accepted_quotes"].as_u64()), (Some(200_545), Some(169_629)));
    assert_eq!(v["duplicates_dropped"], 370_174, "the second load accepts nothing");
    assert_eq!(v["rejected"], 0);
}

#[test]
fn demo_runs_offline_and_stops_by_itself() {
    let out = k2_env(&["demo", "--seconds", "6", "--rate", "3000"], &[("K2__HTTP__BIND", "127.0.0.1:0")]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("/health"), "{text}");
    let last = text.lines().last().unwrap();
    let trades: u64 = last.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(trades > 1000, "{last}");
}

/// `--log-format json`: every log line is one JSON object with a level and
/// the message, so a shipper can parse it; the default stays text.
#[test]
fn log_lines_are_json_objects_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    asx_fixture(dir.path());
    let p = dir.path().to_str().unwrap();
    let out = k2_env(&["--log-format", "json", "load", "--json", p], &[("K2_LOG", "info")]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "k2 load logged nothing at info");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    let text = k2_env(&["load", "--json", p], &[("K2_LOG", "info")]);
    let first = String::from_utf8_lossy(&text.stderr).lines().next().unwrap_or_default().to_owned();
    assert!(serde_json::from_str::<serde_json::Value>(&first).is_err(), "text is the default: {first}");
}

#[test]
fn cost_model_figures_add_up_and_repeat() {
    let out = k2(&["cost-model", "--rate", "1000000", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let again = k2(&["cost-model", "--rate", "1000000", "--json"]);
    assert_eq!(out.stdout, again.stdout, "the same inputs give the same output");
    let text = stdout(&out);
    assert_eq!(text.trim().lines().count(), 1, "one JSON object: {text}");

    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    assert!(v["pricing_file"].as_str().unwrap().contains("config/pricing/aws-us-east-1.toml"));
    assert_eq!(v["workload"]["rate_msgs_per_s"], 1_000_000.0);
    assert_eq!(
        (v["workload"]["retention_days"].as_f64(), v["workload"]["replication"].as_u64()),
        (Some(30.0), Some(3))
    );
    // A 730-hour month.
    let messages = num(&v["messages_per_month"]);
    assert_eq!(messages, 1e6 * 730.0 * 3600.0);

    let items = v["items"].as_array().unwrap();
    assert!(items.len() >= 7, "{items:?}");
    let sum: f64 = items.iter().map(|i| num(&i["usd_per_month"])).sum();
    let total = num(&v["total_usd_per_month"]);
    assert!(total > 0.0 && close(sum, total), "items add to {sum}, total says {total}");
    let per_million = num(&v["usd_per_million_messages"]);
    assert!(close(per_million * messages / 1e6, total), "{per_million} per million × {messages} vs {total}");
    for item in items {
        let formula = item["formula"].as_str().unwrap();
        assert!(formula.contains('$'), "every line shows its price: {formula}");
    }
    let s3 = items.iter().find(|i| i["name"] == "S3 storage (Iceberg)").unwrap();
    assert!(s3["formula"].as_str().unwrap().starts_with("1,000,000 msg/s × 86,400 s × 30 d × "), "{s3}");

    // The table shows the same total.
    let table = k2(&["cost-model", "--rate", "1000000"]);
    assert_eq!(table.status.code(), Some(0));
    let table = stdout(&table);
    let total_line = table.lines().find(|l| l.trim_start().starts_with("Total")).unwrap();
    let shown: f64 = total_line.split_whitespace().last().unwrap().replace(',', "").parse().unwrap();
    assert!((shown - total).abs() < 0.01, "{total_line} vs {total}");
    assert!(table.contains("Per million messages"), "{table}");
}

#[test]
fn cost_model_refuses_nonsense_inputs_with_exit_2() {
    for rate in ["0", "-5", "nan"] {
        let out = k2(&["cost-model", "--rate", rate]);
        assert_eq!(out.status.code(), Some(2), "--rate {rate}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(k2(&["cost-model"]).status.code(), Some(2), "--rate is required");
    assert_eq!(k2(&["cost-model", "--rate", "1000", "--replication", "0"]).status.code(), Some(2));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pricing.toml");
    let shipped =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/pricing/aws-us-east-1.toml")).unwrap();
    fs::write(&file, shipped.replace("[s3]", "[s3]\nstorage_gb_month_usd_typo = 1.0")).unwrap();
    let out = k2(&["cost-model", "--rate", "1000", "--pricing", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage_gb_month_usd_typo"));
}

/// A write past the file-size limit (`ulimit -f`) raises SIGXFSZ, whose
/// default action kills the process mid-write. K2 catches it: the write
/// fails with EFBIG, and the load ends with an error and the cause logged,
/// not by the signal.
#[test]
fn a_file_size_limit_fails_a_write_instead_of_killing_k2() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    asx_fixture(dir.path());
    let (p, data) = (dir.path().to_str().unwrap(), dir.path().join("data"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -f 8 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_k2"))
        .args(["load", "--json", "--data-dir", data.to_str().unwrap(), p])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), None, "k2 was killed by a signal:\n{stderr}");
    assert_ne!(out.status.code(), Some(0), "a write past 8 KiB must fail:\n{stderr}");
    assert!(stderr.contains("file-size limit (SIGXFSZ)"), "the cause is named:\n{stderr}");
}
