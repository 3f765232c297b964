//! The operations files against the code and against each other: the
//! compose stack (checked by docker-compose), config/production.toml (by
//! `k2 run --check-config`), the Dockerfile and the systemd unit, the alert
//! rules (promtool, with their unit tests), the Grafana dashboards (every
//! query parsed by promtool), and every metric and label those name,
//! against K2's /metrics after a real run in Kafka mode. Also `k2
//! healthcheck`, which the image's HEALTHCHECK runs.
//!
//! docker-compose, promtool and systemd-analyze come from
//! `tests/services.sh`, as does the Kafka-protocol broker the real run
//! produces to (`K2_TEST_KAFKA` names another).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Run, get, start_sim_with};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs a checker that tests/services.sh installs; a missing one fails the
/// test with what to do, rather than skipping the check.
fn tool(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (tests/services.sh installs it)"))
}

fn succeeded(program: &str, args: &[&str]) -> String {
    succeeded_with(program, args, &[])
}

/// As [`succeeded`], with `env` set.
fn succeeded_with(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tool(program, args, env);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {}:\n{text}", args.join(" "));
    text
}

/// A YAML document as JSON (through tests/python/yaml_to_json.py).
fn yaml(text: &str) -> Value {
    let script = repo().join("tests/python/yaml_to_json.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The compose file as docker-compose resolves it (defaults filled in,
/// paths absolute); docker-compose fails on an invalid file.
fn compose() -> Value {
    yaml(&succeeded("docker-compose", &["-f", "docker/compose.yml", "config"]))
}

fn production() -> Value {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::file_exact(repo().join("config/production.toml"))).extract().unwrap()
}

/// A scalar as text (compose writes some environment values as numbers).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `scheme://host:port/...` → (host, port).
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority.rsplit_once(':').unwrap_or_else(|| panic!("{url} names no port"));
    (host.to_owned(), port.parse().unwrap())
}

/// Container ports a service publishes.
fn published(service: &Value) -> Vec<u16> {
    service["ports"]
        .as_array()
        .map_or(Vec::new(), |ports| ports.iter().filter_map(|p| p["target"].as_u64()).map(|p| p as u16).collect())
}

/// The container path a volume or bind mount whose source ends in `source` is mounted at.
fn mount<'a>(service: &'a Value, source: &str) -> Option<&'a str> {
    service["volumes"].as_array()?.iter().filter_map(Value::as_str).find_map(|v| {
        let mut parts = v.split(':');
        let (from, to) = (parts.next()?, parts.next()?);
        from.ends_with(source).then_some(to)
    })
}

#[test]
fn the_stack_runs_every_service_k2_needs_where_production_toml_looks_for_it() {
    let compose = compose();
    let services = &compose["services"];
    let config = production();
    let env = |service: &str, key: &str| text(&services[service]["environment"][key]);
    let k2 = &services["k2"];

    // K2 in Kafka mode, built from the Dockerfile, its configuration mounted
    // where the image's command reads it.
    assert_eq!(config["mode"], "kafka");
    assert_eq!(k2["build"]["dockerfile"], "docker/Dockerfile");
    assert_eq!(Path::new(k2["build"]["context"].as_str().unwrap()), repo().as_path());
    assert_eq!(mount(k2, "config/production.toml"), Some("/etc/k2/production.toml"));
    assert_eq!(mount(k2, "k2-data"), config["storage"]["data_dir"].as_str(), "the data directory is a volume");
    let bind: std::net::SocketAddr = config["http"]["bind"].as_str().unwrap().parse().unwrap();
    assert!(bind.ip().is_unspecified(), "other containers reach K2: {bind}");
    assert!(published(k2).contains(&bind.port()), "K2's port is published: {k2}");

    // Kafka: K2's bootstrap address is a listener the broker advertises
    // (clients are sent to the advertised address, not the one they dialled).
    let bootstrap = config["kafka"]["bootstrap_servers"].as_str().unwrap();
    let (host, _) = host_port(&format!("kafka://{bootstrap}"));
    assert!(services[&host].is_object(), "no service {host} for kafka.bootstrap_servers");
    assert!(services[&host]["image"].as_str().unwrap().starts_with("apache/kafka:"));
    assert!(env(&host, "KAFKA_PROCESS_ROLES").contains("controller"), "KRaft, no ZooKeeper");
    let advertised = env(&host, "KAFKA_ADVERTISED_LISTENERS");
    assert!(
        advertised.split(',').any(|l| l.ends_with(&format!("://{bootstrap}"))),
        "{bootstrap} is not among the advertised listeners {advertised}"
    );
    // K2's own schema registry, on its HTTP port: no registry container.
    assert_eq!(config["kafka"]["registry_url"], "");

    // Redis, on its default port (no --port in its command).
    let (host, port) = host_port(config["redis"]["url"].as_str().unwrap());
    assert!(services[&host]["image"].as_str().unwrap().starts_with("redis:"), "{host}");
    assert_eq!(port, 6379);
    assert!(!services[&host]["command"].to_string().contains("--port"));

    // MinIO holds the warehouse bucket, made by the init container; the
    // REST catalog points at the same endpoint and warehouse as K2, with the
    // same credentials.
    let storage = &config["storage"];
    assert_eq!(storage["catalog"], "rest");
    let (minio, minio_port) = host_port(storage["s3_endpoint"].as_str().unwrap());
    assert!(services[&minio]["image"].as_str().unwrap().contains("minio/minio:"), "{minio}");
    assert_eq!(minio_port, 9000, "MinIO's S3 port (its command sets no --address)");
    assert!(!services[&minio]["command"].to_string().contains("--address"));
    let warehouse = storage["warehouse"].as_str().unwrap();
    let bucket = warehouse.strip_prefix("s3://").unwrap().trim_end_matches('/');
    let init = services["minio-init"]["command"].to_string();
    assert!(init.contains(&format!("mc mb --ignore-existing k2/{bucket}")), "{init}");
    assert!(init.contains(&format!("http://{minio}:{minio_port}")), "{init}");
    assert_eq!(services["iceberg-rest"]["depends_on"]["minio-init"]["condition"], "service_completed_successfully");
    let (catalog, catalog_port) = host_port(storage["catalog_uri"].as_str().unwrap());
    assert!(services[&catalog]["image"].as_str().unwrap().starts_with("apache/iceberg-rest-fixture:"));
    assert_eq!(catalog_port, 8181, "the fixture's REST_PORT");
    assert_eq!(env(&catalog, "CATALOG_WAREHOUSE"), warehouse);
    assert_eq!(env(&catalog, "CATALOG_S3_ENDPOINT"), storage["s3_endpoint"].as_str().unwrap());
    assert_eq!(env(&catalog, "CATALOG_S3_PATH__STYLE__ACCESS"), storage["s3_path_style"].to_string());
    assert_eq!(env(&catalog, "AWS_REGION"), storage["s3_region"].as_str().unwrap());
    let (user, secret) = (env(&minio, "MINIO_ROOT_USER"), env(&minio, "MINIO_ROOT_PASSWORD"));
    assert!(!user.is_empty() && !secret.is_empty());
    assert_eq!(
        (env(&catalog, "AWS_ACCESS_KEY_ID"), env(&catalog, "AWS_SECRET_ACCESS_KEY")),
        (user.clone(), secret.clone())
    );
    assert_eq!(
        (env("k2", "K2__STORAGE__S3_ACCESS_KEY_ID"), env("k2", "K2__STORAGE__S3_SECRET_ACCESS_KEY")),
        (user, secret),
        "K2 signs S3 requests with MinIO's credentials"
    );

    // K2 starts after what it needs is healthy.
    for (dependency, condition) in
        [("kafka", "service_healthy"), ("redis", "service_healthy"), (catalog.as_str(), "service_healthy")]
    {
        assert_eq!(k2["depends_on"][dependency]["condition"], condition, "k2 waits for {dependency}");
    }
    for service in ["kafka", "redis", "minio"] {
        assert!(services[service]["healthcheck"]["test"].is_array(), "{service} has a healthcheck");
    }

    // The ladder's memory budget is the container's limit.
    let limit = k2["mem_limit"].as_str().unwrap();
    let mib = match limit.strip_suffix('g') {
        Some(g) => g.parse::<u64>().unwrap() * 1024,
        None => limit.strip_suffix('m').unwrap().parse().unwrap(),
    };
    assert_eq!(config["degradation"]["memory_budget_mb"].as_u64(), Some(mib));

    // Prometheus scrapes K2 where it listens and loads the alerts; Grafana
    // reads Prometheus and the dashboards where they are mounted.
    let prometheus = &services["prometheus"];
    let prom_config = yaml(&read("docker/prometheus/prometheus.yml"));
    let targets: Vec<&str> = prom_config["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["static_configs"].as_array())
        .flatten()
        .flat_map(|s| s["targets"].as_array().unwrap().iter().filter_map(Value::as_str))
        .collect();
    assert!(targets.contains(&format!("k2:{}", bind.port()).as_str()), "{targets:?}");
    assert_eq!(mount(prometheus, "docker/prometheus/prometheus.yml"), Some("/etc/prometheus/prometheus.yml"));
    for rules in prom_config["rule_files"].as_array().unwrap() {
        let rules = rules.as_str().unwrap();
        assert_eq!(
            mount(prometheus, &format!("docker/prometheus/{rules}")),
            Some(format!("/etc/prometheus/{rules}").as_str()),
            "rule file {rules} is mounted beside prometheus.yml"
        );
    }
    let grafana = &services["grafana"];
    assert_eq!(mount(grafana, "docker/grafana/provisioning"), Some("/etc/grafana/provisioning"));
    let provider = yaml(&read("docker/grafana/provisioning/dashboards/k2.yml"));
    assert_eq!(mount(grafana, "docker/grafana/dashboards"), provider["providers"][0]["options"]["path"].as_str());
    let datasources = yaml(&read("docker/grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(datasources["datasources"][0]["url"], "http://prometheus:9090", "Prometheus listens on 9090 by default");
    assert!(published(prometheus).contains(&9090));
}

/// The scale-out profile: two producers, three flushers in one group and a
/// query node, each with its own data directory (so each flusher's static
/// member id is its own), all on the `k2` service's schema registry (a
/// process on its own registry would give the same schema other ids), and
/// every one scraped by Prometheus.
#[test]
fn the_scale_out_profile_shares_one_registry_and_gives_each_process_its_own_directory() {
    let compose = yaml(&succeeded("docker-compose", &["-f", "docker/compose.yml", "--profile", "scale-out", "config"]));
    let services = &compose["services"];
    let config = production();
    let env = |service: &str, key: &str| text(&services[service]["environment"][key]);
    let k2_port = published(&services["k2"])[0];
    let (producers, flushers, queries): (Vec<&str>, Vec<&str>, Vec<&str>) =
        (vec!["k2", "k2-producer-2"], vec!["k2-flusher-1", "k2-flusher-2", "k2-flusher-3"], vec!["k2-query"]);
    let mut directories = BTreeSet::new();
    for name in producers.iter().chain(&flushers).chain(&queries) {
        let service = &services[*name];
        assert!(service.is_object(), "no service {name}");
        assert_eq!(mount(service, "config/production.toml"), Some("/etc/k2/production.toml"), "{name}");
        let data_dir = config["storage"]["data_dir"].as_str().unwrap();
        let volume = service["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .find_map(|v| {
                let mut parts = v.split(':');
                let (from, to) = (parts.next()?, parts.next()?);
                (to == data_dir).then(|| from.to_owned())
            })
            .unwrap_or_else(|| panic!("{name} keeps its data directory on a volume"));
        assert!(!volume.starts_with('/'), "{name}: a named volume, not a host path: {volume}");
        assert!(directories.insert(volume.clone()), "{name} shares a data directory: {volume}");
        if *name != "k2" {
            assert_eq!(env(name, "K2__KAFKA__REGISTRY_URL"), format!("http://k2:{k2_port}"), "{name}");
        }
    }
    // The `k2` service is a producer when the profile's instructions say so.
    assert_eq!(env("k2", "K2__ROLE"), "all");
    let first = yaml(&succeeded_with(
        "docker-compose",
        &["-f", "docker/compose.yml", "--profile", "scale-out", "config"],
        &[("K2_ROLE", "producer")],
    ));
    assert_eq!(text(&first["services"]["k2"]["environment"]["K2__ROLE"]), "producer");
    assert_eq!(env("k2-producer-2", "K2__ROLE"), "producer");
    for name in &flushers {
        assert_eq!(env(name, "K2__ROLE"), "flusher", "{name}");
        assert_eq!(env(name, "K2__KAFKA__INSTANCE_ID"), "auto", "{name}: an id kept in its own volume");
    }
    assert_eq!(env("k2-query", "K2__ROLE"), "query");
    for name in producers.iter().chain(&flushers).chain(&queries) {
        for key in ["K2__BINANCE__ENABLED", "K2__KAFKA__CONSUME"] {
            assert!(services[*name]["environment"][key].is_null(), "{name}: the role decides {key}");
        }
    }
    assert!(
        config["kafka"]["partitions"].as_u64().unwrap() >= flushers.len() as u64,
        "a flusher past the partition count would own none"
    );

    let prom_config = yaml(&read("docker/prometheus/prometheus.yml"));
    let scraped: BTreeSet<String> = prom_config["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let fixed =
                s["static_configs"].as_array().into_iter().flatten().flat_map(|c| c["targets"].as_array().unwrap());
            let named =
                s["dns_sd_configs"].as_array().into_iter().flatten().flat_map(|c| c["names"].as_array().unwrap());
            fixed.chain(named).filter_map(Value::as_str).map(|t| t.split(':').next().unwrap().to_owned())
        })
        .collect();
    for name in producers.iter().chain(&flushers).chain(&queries) {
        assert!(scraped.contains(*name), "Prometheus does not scrape {name}: {scraped:?}");
    }
}

/// K2's embedded profile lists every key (K2 refuses unknown ones); the
/// storage keys of the REST catalog and S3 warehouse arrive with that
/// support, and until then the rest of production.toml is checked alone.
const PENDING_STORAGE_KEYS: [&str; 8] = [
    "catalog",
    "catalog_uri",
    "warehouse",
    "s3_endpoint",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_path_style",
];

#[test]
fn production_toml_is_accepted_by_k2() {
    let defaults: Value = {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(k2::runtime::config::DEFAULT_TOML)).extract().unwrap()
    };
    let known: BTreeSet<&str> = defaults["storage"].as_object().unwrap().keys().map(String::as_str).collect();
    let supported = known.iter().any(|k| !["data_dir", "catalog_name", "namespace"].contains(k));
    let dir = tempfile::tempdir().unwrap();
    let path = if supported {
        repo().join("config/production.toml")
    } else {
        eprintln!(
            "NOTE: K2 has no REST/S3 storage keys yet; checking config/production.toml without {PENDING_STORAGE_KEYS:?}"
        );
        let text: String = read("config/production.toml")
            .lines()
            .filter(|l| !PENDING_STORAGE_KEYS.iter().any(|k| l.starts_with(&format!("{k} ="))))
            .map(|l| format!("{l}\n"))
            .collect();
        let path = dir.path().join("production.toml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut check = Command::new(env!("CARGO_BIN_EXE_k2"));
    check.args(["run", "--check-config", "--config"]).arg(&path);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("K2__")) {
        check.env_remove(key);
    }
    let out = check.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.starts_with("configuration is valid"), "{shown}");
    // And the check is not vacuous: the same file with one key misspelt is
    // refused, naming it.
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("bootstrap_servers ="));
    std::fs::write(&bad, text.replace("bootstrap_servers =", "bootstrap_server =")).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_k2")).args(["run", "--check-config", "--config"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bootstrap_server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_image_and_the_systemd_unit_run_k2_as_production_toml_says() {
    let docker = read("docker/Dockerfile");
    let lines: Vec<&str> = docker.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    let stages: Vec<&str> = lines.iter().filter(|l| l.starts_with("FROM ")).copied().collect();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage: {stages:?}");
    assert!(stages[0].contains("rust:") && stages[0].contains("bookworm"), "{}", stages[0]);
    assert!(stages[1].starts_with("FROM debian:bookworm-slim"), "same Debian as the builder: {}", stages[1]);
    assert!(docker.contains("cargo build --release --locked -p k2 --bin k2"));
    assert!(docker.contains("COPY --from=builder /usr/local/bin/k2 /usr/local/bin/k2"));
    let user = lines.iter().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER");
    assert!(!user.starts_with("root") && !user.starts_with('0'), "runs as {user}");
    let port = host_port(&format!("http://{}", production()["http"]["bind"].as_str().unwrap())).1;
    assert!(lines.contains(&format!("EXPOSE {port}").as_str()), "EXPOSE {port}");
    let healthcheck = lines.iter().position(|l| l.starts_with("HEALTHCHECK ")).expect("a HEALTHCHECK");
    assert_eq!(lines[healthcheck + 1], r#"CMD ["k2", "healthcheck", "--config", "/etc/k2/production.toml"]"#);
    assert!(lines.contains(&r#"CMD ["run", "--config", "/etc/k2/production.toml"]"#));
    assert!(lines.contains(&r#"ENTRYPOINT ["k2"]"#));
    assert!(lines.contains(&"COPY config/production.toml /etc/k2/production.toml"));

    // The build context must hold what the build reads.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "schemas",
        "benches",
        "actors/src",
        "actors/benches",
        "actors/Cargo.toml",
        "config",
    ] {
        assert!(
            !ignored.iter().any(|i| needed == i || needed.starts_with(&format!("{i}/"))),
            "{needed} is excluded by .dockerignore"
        );
        assert!(repo().join(needed).exists(), "{needed}");
    }

    // The unit: systemd accepts it (with this build's k2 in place of the
    // installed one), and it runs the brief's command as a dedicated user.
    let unit = read("config/k2.service");
    let settings = unit.lines().filter(|l| !l.trim_start().starts_with('#')).filter_map(|l| l.split_once('='));
    let keys: BTreeMap<&str, Vec<&str>> = settings.fold(BTreeMap::new(), |mut m, (k, v)| {
        m.entry(k.trim()).or_default().push(v.trim());
        m
    });
    assert_eq!(keys["ExecStart"], ["/usr/local/bin/k2 run --config /etc/k2/production.toml"]);
    assert_eq!(keys["Type"], ["simple"], "K2 sends no sd_notify");
    assert_eq!(keys["Restart"], ["on-failure"]);
    assert_eq!(keys["User"], ["k2"]);
    assert_eq!(keys["StateDirectory"], ["k2"]);
    assert_eq!(
        Path::new("/var/lib").join(keys["StateDirectory"][0]).to_str(),
        production()["storage"]["data_dir"].as_str()
    );
    for hardening in ["NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"] {
        assert!(keys.contains_key(hardening), "{hardening}");
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("k2.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/k2", env!("CARGO_BIN_EXE_k2"))).unwrap();
    let out = tool("systemd-analyze", &["verify", copy.to_str().unwrap()], &[]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
}

/// Every alert rule in alerts.yml.
fn alert_rules() -> Vec<Value> {
    let rules = yaml(&read("docker/prometheus/alerts.yml"));
    rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap().clone()).collect()
}

#[test]
fn alert_rules_are_valid_and_pass_their_unit_tests() {
    succeeded("promtool", &["check", "config", "docker/prometheus/prometheus.yml"]);
    let report = succeeded("promtool", &["test", "rules", "docker/prometheus/alerts.test.yml"]);
    assert!(report.contains("SUCCESS"), "{report}");

    // Each alert is shaped for the operations guide and has a unit test
    // that sees it fire.
    let tests = yaml(&read("docker/prometheus/alerts.test.yml"));
    let fired: BTreeSet<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap().iter())
        .filter(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|c| c["alertname"].as_str())
        .collect();
    let rules = alert_rules();
    assert!(rules.len() >= 10, "{} alerts", rules.len());
    // A job an alert selects is one Prometheus scrapes.
    let jobs: BTreeSet<String> = yaml(&read("docker/prometheus/prometheus.yml"))["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| text(&s["job_name"]))
        .collect();
    for rule in &rules {
        let expr = text(&rule["expr"]);
        for (at, _) in expr.match_indices("job=\"") {
            let job = &expr[at + 5..];
            let job = &job[..job.find('"').unwrap()];
            assert!(jobs.contains(job), "{}: job {job} is not scraped ({jobs:?})", rule["alert"]);
        }
    }
    let mut names = BTreeSet::new();
    for rule in &rules {
        let name = rule["alert"].as_str().expect("alerting rules only");
        assert!(names.insert(name), "{name} twice");
        assert!(
            ["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: severity"
        );
        for annotation in ["summary", "description"] {
            assert!(rule["annotations"][annotation].as_str().is_some_and(|s| !s.is_empty()), "{name}: {annotation}");
        }
        assert!(fired.contains(name), "{name} has no unit test in alerts.test.yml that sees it fire");
    }
}

/// The dashboards, by file name.
fn dashboards() -> BTreeMap<String, Value> {
    let dir = repo().join("docker/grafana/dashboards");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap(),
            )
        })
        .collect()
}

/// One PromQL expression and the Grafana legend or alert annotations that
/// name its labels.
struct Query {
    at: String,
    expr: String,
    shown: String,
}

fn dashboard_queries() -> Vec<Query> {
    let mut out = Vec::new();
    for (file, board) in dashboards() {
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(Query {
                    at: format!("{file}: {}", panel["title"]),
                    expr: target["expr"].as_str().unwrap().to_owned(),
                    shown: text(&target["legendFormat"]),
                });
            }
        }
        for var in board["templating"]["list"].as_array().into_iter().flatten() {
            out.push(Query {
                at: format!("{file}: ${}", var["name"]),
                expr: text(&var["definition"]),
                shown: String::new(),
            });
        }
    }
    out
}

fn alert_queries() -> Vec<Query> {
    alert_rules()
        .iter()
        .map(|r| Query {
            at: format!("alerts.yml: {}", r["alert"]),
            expr: text(&r["expr"]),
            shown: r["annotations"].to_string(),
        })
        .collect()
}

/// Grafana's variables, as a query would run.
fn substituted(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$__interval", "1m")
        .replace("$instance", ".*")
}

#[test]
fn dashboards_are_well_formed_and_every_query_parses() {
    let boards = dashboards();
    let names: BTreeSet<&str> = boards.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["actors.json", "kafka.json", "pipeline.json", "queries.json", "resilience.json"])
    );
    let datasources = yaml(&read("docker/grafana/provisioning/datasources/prometheus.yml"));
    let datasource = &datasources["datasources"][0];
    let mut uids = BTreeSet::new();
    for (file, board) in &boards {
        assert!(uids.insert(board["uid"].as_str().unwrap().to_owned()), "{file}: uid repeated");
        assert!(board["title"].as_str().is_some_and(|t| t.starts_with("K2 / ")), "{file}");
        let mut ids = BTreeSet::new();
        for panel in board["panels"].as_array().unwrap() {
            let title = &panel["title"];
            assert!(ids.insert(panel["id"].as_u64().unwrap()), "{file}: panel id repeated at {title}");
            let pos = &panel["gridPos"];
            assert!(
                pos["x"].as_u64().unwrap() + pos["w"].as_u64().unwrap() <= 24,
                "{file}: {title} is wider than the grid"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(panel["datasource"]["uid"], datasource["uid"], "{file}: {title}");
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: {title} has no query");
            assert!(panel["description"].as_str().is_some_and(|d| !d.is_empty()), "{file}: {title} has no description");
            let refs: BTreeSet<&str> = targets.iter().map(|t| t["refId"].as_str().unwrap()).collect();
            assert_eq!(refs.len(), targets.len(), "{file}: {title}: refIds repeat");
        }
    }
    // promtool parses PromQL when it checks recording rules: every panel's
    // query becomes one (JSON is YAML).
    let rules: Vec<Value> = dashboard_queries()
        .iter()
        .filter(|q| !q.expr.starts_with("label_values("))
        .enumerate()
        .map(|(i, q)| serde_json::json!({"record": format!("k2:dashboard_query:{i}"), "expr": substituted(&q.expr)}))
        .collect();
    assert!(rules.len() > 40, "{} queries", rules.len());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, serde_json::json!({"groups": [{"name": "dashboards", "rules": rules}]}).to_string()).unwrap();
    succeeded("promtool", &["check", "rules", file.to_str().unwrap()]);
}

/// A metric nobody charts or alerts on is one nobody watches: every
/// catalogued metric is on a dashboard or in an alert.
#[test]
fn every_metric_k2_exports_is_on_a_dashboard_or_in_an_alert() {
    let shown: BTreeSet<String> = dashboard_queries()
        .iter()
        .chain(alert_queries().iter())
        .flat_map(|q| k2_names(&q.expr))
        .map(|n| ["_bucket", "_sum", "_count"].iter().find_map(|s| n.strip_suffix(s)).unwrap_or(&n).to_owned())
        .collect();
    let unshown: Vec<&str> =
        k2::runtime::telemetry::CATALOGUE.iter().map(|m| m.name).filter(|n| !shown.contains(*n)).collect();
    assert!(unshown.is_empty(), "on no dashboard and in no alert: {unshown:?}");
}

/// Identifiers starting with `k2_` in a PromQL expression.
fn k2_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in expr.match_indices("k2_") {
        if expr[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let name: String = expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        names.insert(name);
    }
    names
}

/// `name{a="..", b=~".."}` in an expression: each selector's label keys.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for name in k2_names(expr) {
        for (at, _) in expr.match_indices(&format!("{name}{{")) {
            let body = &expr[at + name.len() + 1..];
            let body = &body[..body.find('}').unwrap()];
            let keys = body
                .split(',')
                .filter_map(|m| m.split(['=', '!']).next())
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .collect();
            out.push((name.clone(), keys));
        }
    }
    out
}

/// Labels named after any of `words` (`by (..)`, `on (..)` and the like).
fn grouping_labels(expr: &str, words: &[&str]) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for word in words {
        for (at, _) in expr.match_indices(word) {
            let before = expr[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = expr[at + word.len()..].trim_start();
            if let Some(list) = rest.strip_prefix('(') {
                let list = &list[..list.find(')').unwrap()];
                labels.extend(list.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
            }
        }
    }
    labels
}

/// Labels a Grafana legend (`{{label}}`) or an alert annotation
/// (`{{ $labels.label }}`) shows.
fn shown_labels(shown: &str) -> BTreeSet<String> {
    let word = |rest: &str| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let legends = shown.match_indices("{{").map(|(at, _)| shown[at + 2..].trim_start()).filter(|r| !r.starts_with('$'));
    let annotations = shown.match_indices("$labels.").map(|(at, _)| &shown[at + "$labels.".len()..]);
    legends.chain(annotations).map(word).filter(|l| !l.is_empty()).collect()
}

/// Series names in Prometheus text, each with every label key it carries.
fn exported(metrics: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in metrics.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            let body = &line[end + 1..line.rfind('}').unwrap()];
            // Label values here are plain (no quotes or commas inside).
            labels.extend(body.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, _)| k.to_owned()));
        }
    }
    out
}

/// What dashboards and alerts name that `metrics` (a scrape) does not have.
fn missing_from(metrics: &str, queries: &[Query]) -> Vec<String> {
    let series = exported(metrics);
    // Prometheus adds these to every scraped series.
    let target = BTreeSet::from(["instance".to_owned(), "job".to_owned()]);
    let mut missing = Vec::new();
    for q in queries {
        let names = k2_names(&q.expr);
        for name in &names {
            if !series.contains_key(name) {
                missing.push(format!("{}: {name} is not exported", q.at));
            }
        }
        for (name, keys) in selectors(&q.expr) {
            let Some(have) = series.get(&name) else { continue };
            for key in keys.iter().filter(|k| !target.contains(*k) && !have.contains(*k)) {
                missing.push(format!("{}: {name} has no label {key}", q.at));
            }
        }
        let carried: BTreeSet<String> =
            names.iter().filter_map(|n| series.get(n)).flatten().cloned().chain(target.iter().cloned()).collect();
        let grouping = grouping_labels(&q.expr, &["by", "without", "on", "ignoring", "group_left", "group_right"]);
        for label in grouping.iter().filter(|l| !carried.contains(*l)) {
            missing.push(format!("{}: groups by {label}, which none of {names:?} carries", q.at));
        }
        // After `sum by (..)` and the like only those labels remain.
        let by = grouping_labels(&q.expr, &["by"]);
        let visible: BTreeSet<String> =
            if by.is_empty() { carried.clone() } else { by.union(&target).cloned().collect() };
        for label in shown_labels(&q.shown).iter().filter(|l| !visible.contains(*l)) {
            missing.push(format!("{}: shows label {label}, which the query does not keep", q.at));
        }
        if let Some(label) = q.expr.strip_prefix("label_values(").and_then(|r| r.split(',').nth(1)) {
            let label = label.trim().trim_end_matches(')');
            if !carried.contains(label) {
                missing.push(format!("{}: label_values of {label}, which is not carried", q.at));
            }
        }
    }
    missing
}

#[test]
fn the_checks_of_names_and_labels_catch_what_is_wrong() {
    let scrape = "# HELP k2_a_total x\nk2_a_total{table=\"trades\"} 1\nk2_b_seconds_bucket{le=\"0.1\"} 0\nk2_c 0\n";
    let q = |expr: &str, shown: &str| Query { at: "t".into(), expr: expr.into(), shown: shown.into() };
    let ok = [
        q("sum by (table) (rate(k2_a_total{instance=~\"$instance\"}[1m]))", "{{table}}"),
        q("histogram_quantile(0.9, sum by (le) (rate(k2_b_seconds_bucket[1m])))", "p90"),
        q("k2_c > 0 unless on(instance) k2_a_total", "{{ $labels.instance }} {{ $value }}"),
    ];
    assert_eq!(missing_from(scrape, &ok), Vec::<String>::new());
    let wrong = [
        q("rate(k2_b_seconds_count[1m])", ""),
        q("k2_a_total{tabel=\"trades\"}", ""),
        q("sum by (topic) (k2_a_total)", ""),
        q("sum by (table) (k2_a_total)", "{{topic}}"),
        q("k2_c == 1", "{{ $labels.dependency }}"),
    ];
    assert_eq!(missing_from(scrape, &wrong).len(), 5, "{:?}", missing_from(scrape, &wrong));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn kafka_bootstrap() -> String {
    std::env::var("K2_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// K2 in Kafka mode (the stack's mode) against the simulator with gaps and
/// duplicates, the degradation ladder set to rise at the first waiting row,
/// and a few queries: every metric and label the dashboards and alerts
/// name must show in /metrics. Polls until all are there (most appear at
/// start, from the telemetry catalogue; the rest with traffic).
#[test]
fn every_metric_and_label_of_the_dashboards_and_alerts_is_exported_by_k2() {
    let queries: Vec<Query> = dashboard_queries().into_iter().chain(alert_queries()).collect();
    let used: BTreeSet<String> = queries.iter().flat_map(|q| k2_names(&q.expr)).collect();
    assert!(used.len() > 50, "{} metrics used", used.len());
    // Each is a catalogued metric (or one of a histogram's or summary's
    // series), so the source knows it too.
    for name in &used {
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        let spec = k2::runtime::telemetry::spec(name).or_else(|| k2::runtime::telemetry::spec(base));
        assert!(spec.is_some(), "{name} is not in telemetry::CATALOGUE");
    }

    let (_sim, addrs) = start_sim_with("2000", &["--gap-every", "300", "--duplicate-every", "97"]);
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("ops{}.", uuid::Uuid::new_v4().simple());
    let config = dir.path().join("k2.toml");
    std::fs::write(
        &config,
        format!(
            "mode = \"kafka\"\n[http]\nbind = \"127.0.0.1:0\"\n\
             [binance]\nendpoint = \"{ws}\"\nalternate_endpoint = \"{ws}\"\nrest_endpoint = \"{rest}\"\n\
             [book]\nenabled = true\n\
             [gap_recovery]\nrequests_per_second = 50\n[flush]\nmax_age = \"500ms\"\n\
             [degradation]\nlag = [1, 100000000, 200000000, 300000000]\n\
             [kafka]\nbootstrap_servers = \"{kafka}\"\ntopic_prefix = \"{prefix}\"\npartitions = 2\n",
            ws = addrs["ws"].as_str().unwrap(),
            rest = addrs["rest"].as_str().unwrap(),
            kafka = kafka_bootstrap(),
        ),
    )
    .unwrap();
    let started = Instant::now();
    let run = Run::start(&config, &dir.path().join("data"), "warn", dir.path().join("k2.log"));
    let mut missing = Vec::new();
    while started.elapsed() < Duration::from_secs(180) {
        for path in ["/v1/trades?symbol=BTCUSDT&limit=5", "/v1/symbols", "/v1/trades?limit=0"] {
            get(&run.http, path);
        }
        missing = missing_from(&get(&run.http, "/metrics"), &queries);
        if missing.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = run.stop();
    assert!(missing.is_empty(), "after {:?}:\n{}\nK2's log:\n{log}", started.elapsed(), missing.join("\n"));
    eprintln!("all {} metrics shown after {:?}", used.len(), started.elapsed());
}

/// `k2 healthcheck` as the image runs it: the address from the
/// configuration (0.0.0.0 asked on loopback), exit 0 while K2 answers 200,
/// 1 when nothing listens or /health says 503.
#[test]
fn healthcheck_passes_on_a_running_k2_and_fails_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("k2.toml");
    std::fs::write(&config, format!("[http]\nbind = \"0.0.0.0:{port}\"\n[binance]\nenabled = false\n")).unwrap();
    let healthcheck = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_k2")).arg("healthcheck").args(args).output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let with_config = ["--config", config.to_str().unwrap(), "--timeout", "2s"];

    let (code, said) = healthcheck(&with_config);
    assert_eq!(code, Some(1), "nothing listens yet: {said}");

    let run = Run::start(&config, &dir.path().join("data"), "warn", dir.path().join("k2.log"));
    let (code, said) = healthcheck(&with_config);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains(&format!("127.0.0.1:{port} is healthy")), "{said}");
    let (code, said) = healthcheck(&["--addr", &run.http]);
    assert_eq!(code, Some(0), "{said}");
    run.stop();

    // Something that answers, but not 200: what /health says once an actor
    // has failed for good.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = s.read(&mut request).unwrap();
        s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    let (code, said) = healthcheck(&["--addr", &addr]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("503"), "{said}");
    assert!(server.join().unwrap().starts_with("GET /health HTTP/1.0\r\n"));
}
