//! `configs/example.yaml` shows every option, and
//! `docs/configuration.md` documents every one: each option of the example
//! (its commented `cluster:` block and a VIP's commented `tls:` block
//! included) is named in the reference by
//! its full path in backticks (`vips[].persistence.timeout`), and every
//! option path the reference names is in the example. The example itself
//! must parse (a unit test of `model::config` checks it).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::{collections::BTreeSet, path::Path};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Every option path under `value`: `a.b`, `a[].c`.
fn paths(prefix: &str, value: &serde_yaml::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                let k = k.as_str().unwrap();
                let p = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(&p, v, out);
            }
        }
        serde_yaml::Value::Sequence(s) => {
            let p = format!("{prefix}[]");
            out.insert(p.clone());
            for v in s {
                paths(&p, v, out);
            }
        }
        _ => {}
    }
}

/// The example's options, with the commented-out blocks (`#cluster:` and
/// its `#  key: value` lines) read as if they were not commented.
fn example_options() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("configs/example.yaml")).unwrap();
    let mut out = BTreeSet::new();
    paths("", &serde_yaml::from_str(&text).unwrap(), &mut out);
    let block = commented_blocks(&text);
    paths("", &serde_yaml::from_str(&block).unwrap(), &mut out);
    paths(
        "",
        &serde_yaml::from_str(&nested_uncommented(&text)).unwrap(),
        &mut out,
    );
    out
}

fn is_key(s: &str) -> bool {
    s.split_once(':').is_some_and(|(k, _)| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

/// `text` with its commented-out nested blocks uncommented in place: an
/// indented `# key:` line opens one (as a VIP's `    # tls:`), the lines
/// below it at the same indentation with more spaces after the `#`
/// continue it.
fn nested_uncommented(text: &str) -> String {
    let mut out = String::new();
    let mut open: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let body = line.trim_start().strip_prefix("# ");
        match body {
            Some(b) if indent > 0 && is_key(b) => {
                open = Some(indent);
                out.push_str(&" ".repeat(indent));
                out.push_str(b);
            }
            Some(b) if open == Some(indent) && b.starts_with("  ") => {
                out.push_str(&" ".repeat(indent));
                out.push_str(b);
            }
            _ => {
                open = None;
                out.push_str(line);
            }
        }
        out.push('\n');
    }
    out
}

/// The commented-out option blocks of `text`, uncommented: a `#key:` line
/// at the start of a line opens one, `#  key: value` lines continue it.
fn commented_blocks(text: &str) -> String {
    let mut out = String::new();
    let mut open = false;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            open = false;
            continue;
        };
        if !rest.starts_with(' ') && is_key(rest) {
            open = true;
            out.push_str(rest);
            out.push('\n');
        } else if open && rest.starts_with("  ") && is_key(rest.trim_start()) {
            // Drop a trailing comment, keep quoted values whole.
            let cut = rest.find("   #").unwrap_or(rest.len());
            out.push_str(&rest[..cut]);
            out.push('\n');
        } else {
            open = false;
        }
    }
    out
}

/// Every option path the reference names in backticks.
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let tops = [
        "vips", "timeouts", "limits", "sweeper", "http", "cluster", "announce",
    ];
    text.lines()
        .filter(|l| !l.trim_start().starts_with("```"))
        .flat_map(|l| l.split('`').skip(1).step_by(2))
        .filter(|t| {
            tops.iter().any(|top| {
                t.strip_prefix(top)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with("[]"))
            }) && t
                .chars()
                .all(|c| c.is_ascii_lowercase() || "_.[]".contains(c))
        })
        .map(String::from)
        .collect()
}

#[test]
fn every_option_of_the_example_is_documented() {
    let documented = documented();
    let missing: Vec<_> = example_options()
        .into_iter()
        .filter(|p| (p.contains('.') || p.contains("[]")) && !p.ends_with("[]"))
        .filter(|p| !documented.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "options of configs/example.yaml that docs/configuration.md does not name: {missing:?}"
    );
}

#[test]
fn every_documented_option_is_in_the_example() {
    let example = example_options();
    let missing: Vec<_> = documented()
        .into_iter()
        .filter(|p| !example.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "options docs/configuration.md names that configs/example.yaml does not show: {missing:?}"
    );
}

#[test]
fn the_commented_cluster_block_is_read() {
    let options = example_options();
    for p in [
        "cluster.store",
        "cluster.node",
        "cluster.stream",
        "cluster.stream_max_len",
    ] {
        assert!(options.contains(p), "{p}: {options:?}");
    }
}
