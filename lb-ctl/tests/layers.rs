//! lb-ctl's layers, checked on its own source: every module imports only
//! modules of its own layer or of the layers below, the features (health,
//! l7, cluster) never import each other, and no files import each other
//! in a loop. The layers, from the bottom up, are described in `lib.rs`
//! and in the README's architecture section.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// The layer of a top-level module; modules of one layer number are peers.
fn layer(top: &str) -> Option<u32> {
    Some(match top {
        "sync" | "error_text" => 0,
        "model" => 1,
        "kernel" => 2,
        "health" | "l7" | "cluster" | "announce" => 3,
        "controller" => 4,
        "api" => 5,
        "daemon" => 6,
        "cli" => 7,
        _ => return None,
    })
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The module path of a source file (`kernel/tables.rs` -> kernel::tables,
/// `kernel/mod.rs` -> kernel).
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The file that holds module `path` (its longest prefix that is one).
fn file_of(path: &[String]) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|n| {
        let base = src().join(path[..n].join("/"));
        [base.with_extension("rs"), base.join("mod.rs")]
            .into_iter()
            .find(|p| p.is_file())
    })
}

/// Every `crate::…` and `super::…` path a file names, in `use` trees and
/// in code, made absolute.
struct Paths {
    here: Vec<String>,
    found: Vec<Vec<String>>,
}

impl Paths {
    fn absolute(&self, segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?.as_str();
        let mut base = match first {
            "crate" => Vec::new(),
            "super" => self.here[..self.here.len().saturating_sub(1)].to_vec(),
            "self" => self.here.clone(),
            // A child module named without `self::` (`use report::X;`).
            _ => {
                let mut child = self.here.clone();
                child.push(first.to_string());
                let base = src().join(child.join("/"));
                if !(base.with_extension("rs").is_file() || base.join("mod.rs").is_file()) {
                    return None;
                }
                let mut all = self.here.clone();
                all.extend(segments.iter().cloned());
                return Some(all);
            }
        };
        let mut rest = &segments[1..];
        while rest.first().is_some_and(|s| s == "super") {
            base.pop();
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    fn add(&mut self, segments: &[String]) {
        if let Some(p) = self.absolute(segments) {
            self.found.push(p);
        }
    }

    fn tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.add(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.add(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.add(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.tree(prefix, t);
                }
            }
        }
    }
}

impl<'a> Visit<'a> for Paths {
    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        self.tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'a syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.add(&segments);
        syn::visit::visit_path(self, p);
    }

    // `pub(super)` names a module to share with, not one to use.
    fn visit_visibility(&mut self, _: &'a syn::Visibility) {}

    // Unit tests may reach anywhere in their own layer's way; they are
    // not part of the structure.
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        let is_test = m.attrs.iter().any(|a| {
            a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
        });
        if !is_test {
            syn::visit::visit_item_mod(self, m);
        }
    }
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs")
            // Unit tests kept in files of their own.
            && !p.file_name().is_some_and(|n| n.to_string_lossy().ends_with("tests.rs"))
        {
            out.push(p);
        }
    }
}

/// file -> the files it imports.
fn imports() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    rs_files(&src(), &mut files);
    let mut graph = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let mut paths = Paths {
            here: module_of(&f),
            found: Vec::new(),
        };
        paths.visit_file(&ast);
        let targets: BTreeSet<PathBuf> = paths
            .found
            .iter()
            .filter_map(|p| file_of(p))
            .filter(|t| *t != f)
            .collect();
        graph.insert(f, targets);
    }
    graph
}

fn name(p: &Path) -> String {
    p.strip_prefix(src()).unwrap().display().to_string()
}

fn top(p: &Path) -> String {
    module_of(p).first().cloned().unwrap_or_default()
}

#[test]
fn every_import_runs_down_the_layers() {
    let mut wrong = Vec::new();
    for (from, targets) in imports() {
        let (Some(a), ta) = (layer(&top(&from)), top(&from)) else {
            continue;
        };
        for to in targets {
            let tb = top(&to);
            let Some(b) = layer(&tb) else { continue };
            let ok = if ta == tb { true } else { b < a };
            if !ok {
                wrong.push(format!(
                    "{} (layer {ta}) imports {} (layer {tb})",
                    name(&from),
                    name(&to)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that do not run down the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_files_import_each_other_in_a_loop() {
    let graph = imports();
    // Depth-first search; a back edge closes a loop.
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
        loops: &mut Vec<String>,
    ) {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                0 => visit(next, graph, state, stack, loops),
                1 => {
                    let at = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle: Vec<String> = stack[at..].iter().map(|p| name(p)).collect();
                    cycle.push(name(next));
                    loops.push(cycle.join(" -> "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
    }
    let mut state = BTreeMap::new();
    let mut loops = Vec::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            visit(node, &graph, &mut state, &mut Vec::new(), &mut loops);
        }
    }
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

/// The check itself sees imports: a file that names a module of a higher
/// layer is caught (guards against a parser that finds nothing).
#[test]
fn the_check_sees_imports() {
    let graph = imports();
    let daemon = src().join("daemon/boot.rs");
    assert!(
        graph[&daemon].contains(&src().join("controller/state.rs")),
        "{:?}",
        graph[&daemon]
    );
    let mut paths = Paths {
        here: vec!["model".into(), "config".into()],
        found: Vec::new(),
    };
    paths.visit_file(
        &syn::parse_file("use crate::{kernel::tables::{Tables, nanos}, sync::lock};").unwrap(),
    );
    paths.here = vec!["controller".into()];
    paths.visit_file(&syn::parse_file("use report::TableAccount;").unwrap());
    let files: BTreeSet<PathBuf> = paths.found.iter().filter_map(|p| file_of(p)).collect();
    assert!(files.contains(&src().join("kernel/tables.rs")), "{files:?}");
    assert!(files.contains(&src().join("sync.rs")), "{files:?}");
    assert!(
        files.contains(&src().join("controller/report.rs")),
        "{files:?}"
    );
}
