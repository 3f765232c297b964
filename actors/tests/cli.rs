//! The `k2` binary as a user runs it.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn k2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_k2")).args(args).output().expect("k2 runs")
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
    for cmd in ["parse-check", "schema"] {
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
