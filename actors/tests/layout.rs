//! The layout of `actors/src` holds: no two modules import each other
//! (directly or around a circle), and the folders depend on each other only
//! in the direction `lib.rs` and docs/architecture.md describe.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

type Module = Vec<String>;

/// Every library module's file, by module path (`lake::flusher`).
fn sources(root: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Module = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            // The binary (main.rs, cli.rs, commands/) is not the library.
            if matches!(parts.first().map(String::as_str), Some("main" | "cli" | "commands" | "lib")) {
                continue;
            }
            out.insert(parts, fs::read_to_string(&path).unwrap());
        }
    }
    out
}

/// Code without comments and without the unit tests at the end of a file.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Module → the modules its code names (`crate::…` and `super::…` paths),
/// its own ancestors left out.
fn imports(files: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let resolve = |parts: &[String]| -> Option<Module> {
        (1..=parts.len()).rev().map(|n| parts[..n].to_vec()).find(|m| files.contains_key(m))
    };
    let mut edges = BTreeMap::new();
    for (me, text) in files {
        let code = code(text);
        let mut to = BTreeSet::new();
        for (prefix, relative) in [("crate::", false), ("super::", true)] {
            for (at, _) in code.match_indices(prefix) {
                if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let path: Vec<String> = code[at + prefix.len()..]
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .take_while(|s| s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
                    .map(str::to_owned)
                    .collect();
                let full = if relative {
                    me[..me.len().saturating_sub(1)].iter().cloned().chain(path).collect::<Vec<_>>()
                } else {
                    path
                };
                if let Some(target) = resolve(&full)
                    && &target != me
                    && !me.starts_with(&target)
                {
                    to.insert(target);
                }
            }
        }
        edges.insert(me.clone(), to);
    }
    edges
}

/// The circles among modules: each strongly connected set of two or more.
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<BTreeSet<Module>> {
    let reach = |from: &Module| -> BTreeSet<Module> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&Module, BTreeSet<Module>> = edges.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<BTreeSet<Module>> = Vec::new();
    for (m, r) in &reachable {
        if !r.contains(*m) || out.iter().any(|c| c.contains(*m)) {
            continue;
        }
        out.push(r.iter().filter(|o| reachable.get(o).is_some_and(|back| back.contains(*m))).cloned().collect());
    }
    out
}

fn show(m: &Module) -> String {
    m.join("::")
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let files = sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(files.len() > 40, "found only {} modules: is the scan looking in the right place?", files.len());
    let edges = imports(&files);
    let found: Vec<Vec<String>> = circles(&edges).iter().map(|c| c.iter().map(show).collect()).collect();
    assert!(found.is_empty(), "import circles: {found:?}");
}

#[test]
fn folders_depend_on_each_other_in_one_direction() {
    let files = sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let edges = imports(&files);
    // What each folder may use besides itself; a folder not named here may
    // use anything but `service`.
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("runtime", &[][..]),
        ("state", &["runtime"][..]),
        ("lake", &["runtime", "state"][..]),
        ("registry", &["runtime"][..]),
        // Hybrid queries in Kafka mode read the log past the snapshot.
        ("query", &["runtime", "state", "lake", "registry", "kafka"][..]),
        ("kafka", &["runtime", "state", "lake", "registry"][..]),
        ("sinks", &["runtime", "state", "lake", "kafka", "registry"][..]),
        ("transforms", &["runtime", "state", "sinks::actor"][..]),
        ("sources", &["runtime", "state", "transforms"][..]),
    ]);
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        let folder = from[0].as_str();
        for to in tos {
            if to[0] == folder {
                continue;
            }
            let ok = match allowed.get(folder) {
                Some(list) => list.iter().any(|a| show(to).starts_with(a)),
                None => to[0] != "service" || folder == "service",
            };
            if !ok {
                wrong.push(format!("{} uses {}", show(from), show(to)));
            }
        }
    }
    assert!(wrong.is_empty(), "dependencies against the layout: {wrong:#?}");
}

#[test]
fn the_checks_see_a_circle_and_a_dependency_against_the_layout() {
    let files: BTreeMap<Module, String> = BTreeMap::from([
        (vec!["runtime".into(), "health".into()], "use crate::runtime::breaker::X;".into()),
        (vec!["runtime".into(), "breaker".into()], "use super::health::Y; fn f() { crate::lake::Z }".into()),
        (vec!["lake".into()], "// crate::runtime::health is only mentioned\n".into()),
    ]);
    let edges = imports(&files);
    assert_eq!(circles(&edges).len(), 1, "{edges:?}");
    let breaker = vec!["runtime".to_owned(), "breaker".to_owned()];
    assert!(edges[&breaker].contains(&vec!["lake".to_owned()]));
    assert!(edges[&vec!["lake".to_owned()]].is_empty(), "comments are not imports");
}
