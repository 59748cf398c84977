//! Network namespaces made by the tests and the lab, and running commands in
//! them.

use std::{
    fs::File,
    process::{Command, Output},
};

use anyhow::{bail, Context as _, Result};

/// Run a command, failing with its output when it fails.
///
/// # Errors
/// When it cannot start or exits non-zero.
pub fn sh(args: &[&str]) -> Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(out)
}

/// Run `ip` with these arguments.
///
/// # Errors
/// When `ip` fails.
pub fn ip(args: &str) -> Result<()> {
    let mut v = vec!["ip"];
    v.extend(args.split_whitespace());
    sh(&v).map(|_| ())
}

/// Run a command inside namespace `ns`.
///
/// # Errors
/// When it fails.
pub fn in_ns(ns: &str, args: &[&str]) -> Result<Output> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    sh(&v)
}

/// All namespaces whose name starts with `prefix`.
#[must_use]
pub fn list(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(std::result::Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Delete every namespace whose name starts with `prefix` (left over by an
/// interrupted run).
pub fn delete_all(prefix: &str) {
    for ns in list(prefix) {
        let _ = Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    if !is_own(pid) {
                        let _ = Command::new("kill")
                            .args(["-9", pid])
                            .stderr(std::process::Stdio::null())
                            .status();
                    }
                }
            });
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
}

/// Whether `pid` is this process or one of its threads.
fn is_own(pid: &str) -> bool {
    let me = std::process::id().to_string();
    pid == me
        || std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
            s.lines()
                .any(|l| l.split_whitespace().eq(["Tgid:", me.as_str()]))
        })
}

/// Move the calling thread into namespace `ns`.
///
/// # Errors
/// When the namespace does not exist.
pub fn enter(ns: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{ns}")).with_context(|| format!("namespace {ns}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {ns}"))?;
    Ok(())
}

/// A namespace deleted on drop.
pub struct Netns(pub String);

impl Netns {
    /// # Errors
    /// When it cannot be created.
    pub fn new(name: &str) -> Result<Self> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&format!("netns add {name}"))?;
        ip(&format!("-n {name} link set lo up"))?;
        Ok(Self(name.to_string()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // This namespace only: another test's may share its name as a
        // prefix.
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}
