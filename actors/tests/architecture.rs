//! The shape of the crate, checked: the files of `actors/src/` import each other without a
//! cycle, and every `mod.rs` is wiring only.
//!
//! A cycle between two files means neither can be read, tested or moved without the other
//! (the driver naming the receiver supervisor while the receiver supervisor named the
//! driver's whole protocol was one). The check reads the sources: every `crate::a::b::…` path
//! (and `super::x`) outside a file's test module is an edge to the longest prefix that is a
//! file of the crate; an edge from a module to one of its own submodules is wiring, not a
//! dependency. Test modules may import anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, as (module path, file path); test files are left out.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("the source tree is readable") {
            let path = entry.expect("the source tree is readable").path();
            let rel = path
                .strip_prefix(src)
                .expect("a file under the source tree")
                .to_string_lossy()
                .replace('\\', "/");
            if path.is_dir() {
                if !rel.ends_with("tests") && !rel.contains("/tests") {
                    stack.push(path);
                }
                continue;
            }
            let Some(stem) = rel.strip_suffix(".rs") else {
                continue;
            };
            if stem.ends_with("tests") {
                continue;
            }
            let module = match stem {
                "lib" => String::new(),
                _ => stem.trim_end_matches("/mod").replace('/', "::"),
            };
            out.insert(module, path);
        }
    }
    out
}

/// The source without comments and without its `#[cfg(test)]` module at the end.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("a source file is readable");
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths named after `prefix` in `code` (`crate::a::b::C` → `a::b::C`).
fn paths_after<'a>(code: &'a str, prefix: &'a str) -> impl Iterator<Item = Vec<&'a str>> + 'a {
    code.match_indices(prefix).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(is_ident) {
            return None;
        }
        let rest = &code[at + prefix.len()..];
        let mut parts = Vec::new();
        let mut rest = rest;
        loop {
            let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            parts.push(&rest[..end]);
            rest = &rest[end..];
            match rest.strip_prefix("::") {
                Some(more) => rest = more,
                None => break,
            }
        }
        (!parts.is_empty()).then_some(parts)
    })
}

/// The file-level import graph: module → the modules it names.
fn graph(files: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (module, path) in files {
        let code = code(path);
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut deps = BTreeSet::new();
        let mut add = |parts: Vec<&str>, base: &str| {
            for k in (1..=parts.len()).rev() {
                let joined = parts[..k].join("::");
                let candidate = if base.is_empty() {
                    joined
                } else {
                    format!("{base}::{joined}")
                };
                if files.contains_key(&candidate) {
                    let own_child =
                        candidate.starts_with(&format!("{module}::")) || module.is_empty();
                    if &candidate != module && !own_child {
                        deps.insert(candidate);
                    }
                    return;
                }
            }
        };
        for parts in paths_after(&code, "crate::") {
            add(parts, "");
        }
        for parts in paths_after(&code, "super::") {
            add(parts, parent);
        }
        edges.insert(module.clone(), deps);
    }
    edges
}

/// A cycle in `edges`, if there is one (as the list of modules around it).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|p| p == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, edges, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn the_files_of_the_crate_import_each_other_without_a_cycle() {
    let files = modules(&src());
    assert!(files.len() > 20, "the sources were not found: {files:?}");
    let edges = graph(&files);
    // The check sees real edges (so an empty graph cannot pass it).
    assert!(
        edges["tree::driver"].contains("ingest::receiver_tracker"),
        "{:?}",
        edges["tree::driver"]
    );
    if let Some(cycle) = find_cycle(&edges) {
        panic!("an import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let edge = |a: &str, b: &str| (a.to_owned(), BTreeSet::from([b.to_owned()]));
    let cyclic = BTreeMap::from([edge("a", "b"), edge("b", "c"), edge("c", "a")]);
    assert_eq!(
        find_cycle(&cyclic),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let acyclic = BTreeMap::from([edge("a", "b"), edge("b", "c")]);
    assert_eq!(find_cycle(&acyclic), None);
}

#[test]
fn every_mod_rs_is_wiring_only() {
    let mut offenders = Vec::new();
    for (module, path) in modules(&src()) {
        if !path.ends_with("mod.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("//!"), "{module}/mod.rs has no //! docs");
        for line in text.lines().map(str::trim) {
            let wiring = line.is_empty()
                || line.starts_with("//")
                || line.starts_with("#[cfg(")
                || line.starts_with("mod ")
                || line.starts_with("pub mod ")
                || line.starts_with("pub(crate) mod ")
                || line.starts_with("pub use ")
                || line.starts_with("pub(crate) use ")
                || line.starts_with("use ")
                // the tail of a multi-line `use`
                || line.ends_with(',')
                || line.ends_with("};")
                || line.ends_with('{');
            if !wiring {
                offenders.push(format!("{module}/mod.rs: {line}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "mod.rs files hold more than wiring:\n{}",
        offenders.join("\n")
    );
}
