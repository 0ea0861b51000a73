//! The house rules `ARCHITECTURE.md` states, checked against the tree: which crate may
//! depend on SQLite, the store, AWS-LC, hyper and anyhow, which may contain `unsafe`,
//! that every crate is in the code map and inherits the workspace lints, and that no
//! crate's modules import each other in a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn architecture() -> String {
    fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md")
}

/// Every workspace crate: package name and directory.
fn crates() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root().join("crates")).expect("crates/") {
        let dir = entry.expect("entry").path();
        let Ok(manifest) = fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let name = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|rest| rest.strip_suffix('"'))
            .expect("package name")
            .to_owned();
        out.push((name, dir));
    }
    out.sort();
    out
}

/// The names of a manifest's normal dependencies (`[dependencies]` only: tests may
/// use what they like).
fn dependencies(dir: &Path) -> BTreeSet<String> {
    let manifest = fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
    let mut section = "";
    let mut out = BTreeSet::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]" {
            if let Some((name, _)) = line.split_once('=') {
                out.insert(name.trim().to_owned());
            }
        }
    }
    out
}

/// The "Boundaries" table of ARCHITECTURE.md: what (a dependency, a pattern ending in
/// `*`, or `unsafe`) → the crates allowed it.
fn boundaries() -> BTreeMap<String, BTreeSet<String>> {
    let doc = architecture();
    let section = doc
        .split("\n## Boundaries\n")
        .nth(1)
        .expect("ARCHITECTURE.md has a Boundaries section");
    let mut out = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let what = ticked(cells[1]).remove(0);
        out.insert(what, ticked(cells[2]).into_iter().collect());
    }
    assert!(!out.is_empty(), "the Boundaries table lists nothing");
    out
}

fn matches(pattern: &str, dependency: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => dependency.starts_with(prefix),
        None => pattern == dependency,
    }
}

#[test]
fn guarded_dependencies_only_where_documented() {
    let rules = boundaries();
    for guarded in ["rusqlite", "atrest-store", "aws-lc-*", "hyper", "anyhow"] {
        assert!(
            rules.contains_key(guarded),
            "Boundaries names no owner of {guarded}"
        );
    }
    for (what, allowed) in rules.iter().filter(|(w, _)| *w != "unsafe") {
        let users: BTreeSet<String> = crates()
            .into_iter()
            .filter(|(_, dir)| dependencies(dir).iter().any(|d| matches(what, d)))
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            &users, allowed,
            "the crates depending on {what} differ from ARCHITECTURE.md's Boundaries"
        );
    }
}

/// Whether Rust source uses the `unsafe` keyword outside comments and string literals
/// (close enough for this tree: no raw strings contain it).
fn uses_unsafe(source: &str) -> bool {
    source.lines().any(|line| {
        let code = line.split("//").next().unwrap_or("");
        let mut in_string = false;
        let mut escaped = false;
        let mut outside = String::new();
        for c in code.chars() {
            if in_string {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
            } else if c == '"' {
                in_string = true;
            } else {
                outside.push(c);
            }
        }
        outside
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|word| word == "unsafe")
            && !outside.contains("unsafe_code")
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn unsafe_only_where_documented() {
    let allowed = boundaries()
        .remove("unsafe")
        .expect("Boundaries names where unsafe code may be");
    let mut users = BTreeSet::new();
    for (name, dir) in crates() {
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        if files
            .iter()
            .any(|f| uses_unsafe(&fs::read_to_string(f).expect("source")))
        {
            users.insert(name);
        }
    }
    assert_eq!(
        users, allowed,
        "unsafe code outside the crates ARCHITECTURE.md names"
    );
}

#[test]
fn unsafe_detection() {
    assert!(uses_unsafe("let p = unsafe { f() };"));
    assert!(uses_unsafe("unsafe impl Send for X {}"));
    assert!(!uses_unsafe("// unsafe here is prose"));
    assert!(!uses_unsafe("#![forbid(unsafe_code)]"));
    assert!(!uses_unsafe("let s = \"unsafe\";"));
}

#[test]
fn every_crate_is_mapped_and_linted() {
    let doc = architecture();
    for (name, dir) in crates() {
        let folder = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            doc.contains(&format!("### `crates/{folder}`")),
            "{name} has no entry in ARCHITECTURE.md's code map"
        );
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{name} does not inherit the workspace lints"
        );
    }
}

/// The top-level module a source file belongs to: `src/a.rs` and `src/a/…` are `a`.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let name = first.as_os_str().to_string_lossy();
    let name = name.strip_suffix(".rs").unwrap_or(&name).to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// The top-level modules a source text names through `crate::`, including the groups of
/// `use crate::{a, b::c}`.
fn crate_references(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in source.match_indices("crate::") {
        let rest = &source[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group's items at the top level: `{a::{b, c}, d}` names `a` and `d`.
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match (c, depth) {
                    ('}', 0) => break,
                    (',', 0) => out.insert(ident(std::mem::take(&mut item).trim())),
                    _ => {
                        depth += usize::from(c == '{');
                        depth -= usize::from(c == '}');
                        item.push(c);
                        true
                    }
                };
            }
            out.insert(ident(item.trim()));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty() && m.chars().next().is_some_and(|c| c.is_lowercase()));
    out
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn module_graphs_have_no_cycle() {
    for (name, dir) in crates() {
        let src = dir.join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let Some(module) = top_module(&src, file) else {
                continue;
            };
            let source = fs::read_to_string(file).expect("source");
            // Tests may reach anything; the rule is for the code they test.
            let source = source.split("#[cfg(test)]").next().unwrap_or("");
            let edges = graph.entry(module.clone()).or_default();
            edges.extend(
                crate_references(source)
                    .into_iter()
                    .filter(|m| *m != module),
            );
        }
        assert_eq!(
            find_cycle(&graph),
            None,
            "{name}: modules that import each other"
        );
    }
}

#[test]
fn cycle_detection() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry((*a).to_owned())
                .or_default()
                .insert((*b).to_owned());
        }
        g
    };
    assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c")])), None);
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        crate_references("use crate::{http::{json, Resp}, error};\nlet x = crate::time::now();"),
        ["error", "http", "time"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}
