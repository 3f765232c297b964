//! A batch load larger than the degradation ladder's triggers: a file can
//! wait, so `k2 load` is paced by the flusher and loses nothing, strips
//! nothing and spills nothing; its report names each outcome with its own
//! count. pyiceberg is the judge of what landed.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::read_iceberg;

const ROWS: usize = 3_000_000;

/// One ASX trades file of `rows` lines in the sample's layout (date, time,
/// price, volume, venue, qualifiers, buyer id), one company, one day: every
/// line carries vendor_data (venue, qualifiers, buyer id, company id).
fn asx_file(root: &Path, rows: usize) {
    common::asx_layout(root);
    let file = std::fs::File::create(root.join("trades/7078.csv")).unwrap();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    for i in 0..rows {
        // A millisecond apart from 10:00: about 50 minutes of one day.
        let ms = i % 1000;
        let s = i / 1000;
        writeln!(
            out,
            "03/10/2014,{:02}:{:02}:{:02}.{ms:03},36.{:03},{},3,XT,{}",
            10 + s / 3600,
            (s / 60) % 60,
            s % 60,
            i % 1000,
            100 + i % 900,
            i % 97
        )
        .unwrap();
    }
    out.flush().unwrap();
}

#[test]
fn a_load_above_every_trigger_commits_every_row_with_its_vendor_data() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    asx_file(&input, ROWS);
    let data = dir.path().join("data");
    // Triggers far below the file: the ladder climbs to its top during the
    // load, and the load must not care.
    let config = dir.path().join("k2.toml");
    std::fs::write(
        &config,
        "[flush]\nmax_rows = 100000\n[degradation]\ninterval = \"50ms\"\nlag = [1000, 2000, 3000, 4000]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["load", "--json", "--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .arg(&input)
        .env("K2_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("degradation level raised"),
        "the ladder never rose, so the test proves nothing:\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["read"], ROWS, "{report}");
    assert_eq!(report["accepted_trades"], ROWS, "{report}");
    assert_eq!(report["duplicates_dropped"], 0, "nothing was a duplicate: {report}");
    assert_eq!(report["rejected"], 0, "{report}");
    assert!(!data.join("spill").read_dir().is_ok_and(|mut d| d.next().is_some()), "a load never spills");

    let v = read_iceberg(&data);
    assert_eq!(v["trades"]["rows"], ROWS, "{v}");
    assert_eq!(v["trades"]["distinct_message_ids"], ROWS, "{v}");
    assert_eq!(v["trades"]["without_vendor_data"], 0, "vendor_data stripped from a load: {v}");
}
