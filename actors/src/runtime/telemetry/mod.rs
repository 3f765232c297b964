//! The Prometheus recorder: installed once per process, rendered at /metrics,
//! and the catalogue of every metric K2 exports.
//!
//! The `metrics` crate shows a series only once something touched it, so a
//! dashboard or an alert over a metric of a path not taken yet (a breaker
//! that never opened, Kafka in embedded mode) would find nothing, and
//! `rate()` misses a counter's first increment. The catalogue fixes both: at
//! install every metric is described (`# HELP`) and every series whose labels
//! are a fixed set is registered at 0; series whose label values are known
//! only at run time (an actor's name, a topic) are registered where those
//! values appear. A unit test holds the catalogue and the source together.

mod catalogue;

pub use catalogue::{CATALOGUE, Kind, LabelSpec, MetricSpec, spec};

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets from 100 µs to 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process's Prometheus handle, installing the recorder on first use.
/// `None` if another recorder was installed first (then metrics go there).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    register_catalogue();
                    // Histograms keep every sample until upkeep folds them into
                    // buckets; without this, memory grows with the event rate.
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new().name("k2-metrics-upkeep".into()).spawn(move || {
                        loop {
                            std::thread::sleep(std::time::Duration::from_secs(1));
                            upkeep.run_upkeep();
                        }
                    });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "metrics upkeep thread not started");
                    }
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Prometheus recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// The metrics in Prometheus text format.
pub fn render() -> String {
    match prometheus() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

/// Describes every metric and registers, at 0, every series whose labels
/// are a fixed set. Incrementing by 0 registers without changing a value
/// another thread may already have set.
fn register_catalogue() {
    for m in CATALOGUE {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
        for labels in m.fixed_series().unwrap_or_default() {
            match m.kind {
                Kind::Counter => metrics::counter!(m.name, labels).increment(0),
                Kind::Gauge => metrics::gauge!(m.name, labels).increment(0.0),
                // A histogram handle, once made, is rendered with empty
                // buckets.
                Kind::Histogram => drop(metrics::histogram!(m.name, labels)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use metrics::Label;

    use super::catalogue::{QUERIES, QUERY_STATUSES};
    use super::*;

    /// One `counter!`, `gauge!` or `histogram!` call in the source.
    #[derive(Debug)]
    struct CallSite {
        at: String,
        kind: Kind,
        /// None when the name is not a string literal.
        name: Option<String>,
        /// Label keys, with the value when it is a string literal.
        labels: Vec<(String, Option<String>)>,
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The text between the parenthesis at `open` and its match, and the
    /// arguments in it split at top-level commas (string literals and
    /// nested brackets respected).
    fn arguments(text: &str, open: usize) -> Vec<String> {
        let mut args = vec![String::new()];
        let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
        for c in text[open..].chars() {
            if in_str {
                args.last_mut().unwrap().push(c);
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '(' | '[' | '{' => {
                    depth += 1;
                    if depth == 1 {
                        continue;
                    }
                }
                ')' | ']' | '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                ',' if depth == 1 => {
                    args.push(String::new());
                    continue;
                }
                '"' => in_str = true,
                _ => {}
            }
            args.last_mut().unwrap().push(c);
        }
        args.into_iter().map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()).collect()
    }

    fn literal(token: &str) -> Option<String> {
        let t = token.trim();
        (t.len() >= 2 && t.starts_with('"') && t.ends_with('"')).then(|| t[1..t.len() - 1].to_owned())
    }

    /// Every metric macro call under actors/src except this file (whose
    /// calls take names from the catalogue).
    fn call_sites() -> Vec<CallSite> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut sites = Vec::new();
        for file in files {
            if file.ends_with("telemetry/mod.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (macro_name, kind) in
                [("counter!(", Kind::Counter), ("gauge!(", Kind::Gauge), ("histogram!(", Kind::Histogram)]
            {
                for (at, _) in text.match_indices(macro_name) {
                    // describe_counter! and the like are not uses.
                    if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    let open = at + macro_name.len() - 1;
                    let args = arguments(&text, open);
                    let line = text[..at].lines().count();
                    let labels = args
                        .iter()
                        .skip(1)
                        .filter_map(|a| {
                            let (k, v) = a.split_once("=>")?;
                            Some((literal(k).unwrap_or_else(|| k.trim().to_owned()), literal(v)))
                        })
                        .collect();
                    sites.push(CallSite {
                        at: format!("{}:{line}", file.strip_prefix(&src).unwrap().display()),
                        kind,
                        name: args.first().and_then(|a| literal(a)),
                        labels,
                    });
                }
            }
        }
        sites
    }

    #[test]
    fn every_metric_in_the_source_is_in_the_catalogue_with_its_kind_and_labels() {
        let sites = call_sites();
        // Far fewer would mean the scan is broken, not that metrics went.
        assert!(sites.len() > 60, "only {} metric calls found", sites.len());
        let mut problems = Vec::new();
        for site in &sites {
            let Some(name) = &site.name else {
                problems.push(format!("{}: the metric's name is not a string literal", site.at));
                continue;
            };
            let Some(spec) = spec(name) else {
                problems.push(format!("{}: {name} is not in telemetry::CATALOGUE", site.at));
                continue;
            };
            if spec.kind != site.kind {
                problems
                    .push(format!("{}: {name} is a {:?} here, a {:?} in the catalogue", site.at, site.kind, spec.kind));
            }
            let used: BTreeSet<&str> = site.labels.iter().map(|(k, _)| k.as_str()).collect();
            let listed: BTreeSet<&str> = spec.labels.iter().map(|(k, _)| *k).collect();
            if used != listed {
                problems.push(format!("{}: {name} has labels {used:?} here, {listed:?} in the catalogue", site.at));
            }
            for (key, value) in &site.labels {
                let fixed = spec.labels.iter().find(|(k, _)| k == key).map(|(_, v)| *v).unwrap_or_default();
                if let Some(value) = value
                    && !fixed.is_empty()
                    && !fixed.contains(&value.as_str())
                {
                    problems
                        .push(format!("{}: {name}{{{key}=\"{value}\"}} is not among the catalogue's values", site.at));
                }
            }
        }
        let used: BTreeSet<&str> = sites.iter().filter_map(|s| s.name.as_deref()).collect();
        for spec in CATALOGUE {
            if !used.contains(spec.name) {
                problems.push(format!("{} is in the catalogue but nothing records it", spec.name));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_catalogue_names_each_metric_once_with_a_prometheus_name_and_help() {
        let mut seen = BTreeMap::new();
        for m in CATALOGUE {
            assert!(seen.insert(m.name, ()).is_none(), "{} is listed twice", m.name);
            assert!(
                m.name.starts_with("k2_")
                    && m.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty(), "{} has no help text", m.name);
            if m.kind == Kind::Counter {
                assert!(m.name.ends_with("_total"), "counter {} should end in _total", m.name);
            }
        }
    }

    #[test]
    fn fixed_label_sets_expand_to_every_combination() {
        let queries = spec("k2_queries_total").unwrap().fixed_series().unwrap();
        assert_eq!(queries.len(), QUERIES.len() * QUERY_STATUSES.len());
        assert!(queries.iter().any(|l| l == &vec![Label::new("query", "bars"), Label::new("status", "timeout")]));
        assert_eq!(spec("k2_spill_rows").unwrap().fixed_series().unwrap(), vec![Vec::<Label>::new()]);
        assert!(spec("k2_actor_up").unwrap().fixed_series().is_none(), "actor names are known only at run time");
    }

    /// Rendering after install shows every fixed series at 0 with its help.
    #[test]
    fn the_recorder_shows_fixed_series_before_anything_records_them() {
        let Some(handle) = prometheus() else {
            panic!("another recorder was installed first");
        };
        let text = handle.render();
        assert!(text.contains("k2_kafka_queue_full_total 0"), "{text}");
        assert!(text.contains("k2_circuit_breaker_state{dependency=\"object-store\"} 0"), "{text}");
        assert!(text.contains("# HELP k2_degradation_level Degradation level"), "{text}");
        assert!(text.contains("k2_query_seconds_bucket{query=\"summary\",le=\"0.01\"} 0"), "{text}");
        assert!(text.contains("k2_lake_files_per_commit{table=\"trades\",quantile=\"0.5\"} 0"), "{text}");
    }
}
