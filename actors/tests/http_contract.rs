//! The HTTP contract, checked by an outsider: schemathesis (PyPI) reads
//! `/openapi.json` and sends what the document allows and what it does not
//! (every check: no 5xx, status codes, content types, headers and bodies as
//! documented, invalid input refused, valid input accepted, unsupported
//! methods 405, auth not ignored) to a running service with committed rows
//! and rows still in flight. And the configuration's secrets: given in a
//! file, never shown by `--check-config`.

mod common;

use std::path::Path;
use std::process::Command;

use figment::providers::Env;
use k2::runtime::config::Config;
use k2::service::Service;
use k2::transforms::dedup::MemoryStore;

const KEY: &str = "contract-k3y-from-a-file";

fn write_config(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("api-key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    let file = dir.join("k2.toml");
    std::fs::write(
        &file,
        format!(
            "[http]\nbind = \"127.0.0.1:0\"\napi_keys = [{{ file = \"{}\" }}]\n[binance]\nenabled = false\n[gap_recovery]\nenabled = false\n[flush]\nmax_age = \"1h\"\n[storage]\ndata_dir = \"{}\"\n",
            key.display(),
            dir.join("data").display()
        ),
    )
    .unwrap();
    file
}

#[test]
fn schemathesis_finds_the_server_true_to_its_document() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path());
    let config = Config::load_from(Some(&file), Env::prefixed("K2_TEST_UNSET__")).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned();
    // schemathesis keeps a cache in its working directory: not the clone.
    let work = dir.path().to_owned();
    k2::runtime::run(|| async move {
        let store = MemoryStore::new(config.dedup.window, config.dedup.capacity);
        let k2 = Service::builder(&config).dedup(Box::new(store)).start().await.unwrap();
        // Committed rows and rows in flight, so answers have bodies to check.
        k2.pipeline.send(common::trades("BTCUSDT", 1..=300)).await.unwrap();
        k2.flush().await.unwrap();
        k2.pipeline.send(common::trades("BTCUSDT", 301..=400)).await.unwrap();
        k2.pipeline.drain().await.unwrap();
        let http = k2.serve().unwrap();
        let url = format!("http://{}/openapi.json", http.addr);
        let out = tokio::task::spawn_blocking(move || {
            Command::new("schemathesis")
                .current_dir(&work)
                .env("SCHEMATHESIS_HOOKS", repo.join("tests/python/contract_hooks.py"))
                .arg("--config-file")
                .arg(repo.join("tests/schemathesis.toml"))
                .args(["run", &url, "--checks", "all"])
                .args(["--header", &format!("X-API-Key: {KEY}")])
                .args(["--workers", "1", "--max-examples", "40", "--request-timeout", "20"])
                // `--checks all` holds answers to 10 s; timing is the
                // benchmarks' business, and beside the rest of the suite a
                // registry write has taken 14 s. The bound is the request's.
                .args(["--max-response-time", "20"])
                .output()
                .expect("schemathesis is installed (tests/services.sh)")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "schemathesis found the server and its document apart (above)");
        // The run reached every operation the document describes.
        assert!(!stdout.contains("No operations"), "{stdout}");
        http.handle.stop(true).await;
    })
    .unwrap();
}

#[test]
fn check_config_masks_secrets_given_in_files_text_or_urls() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["run", "--check-config", "--config", file.to_str().unwrap()])
        .env("K2__STORAGE__S3_ACCESS_KEY_ID", "AKIAEXAMPLE")
        .env("K2__STORAGE__S3_SECRET_ACCESS_KEY", "s3-s3cret-text")
        .env("K2__REDIS__URL", "redis://:redis-pa55@127.0.0.1:6379/0")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("configuration is valid") && stdout.contains("api_keys"), "{stdout}");
    for secret in [KEY, "s3-s3cret-text", "redis-pa55"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} shown:\n{stdout}\n{stderr}");
    }
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(stdout.contains("max_connections: 2048"), "the HTTP limits are shown: {stdout}");

    // A secret file that is missing is named; nothing starts.
    std::fs::remove_file(dir.path().join("api-key")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_k2"))
        .args(["run", "--check-config", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api-key"));
}
