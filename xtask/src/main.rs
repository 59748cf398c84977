//! Project tasks. `cargo xtask demo` runs the balancer on the built-in lab;
//! `cargo xtask test` runs every test. Both first install what is missing
//! (`scripts/setup.sh`): xtask itself depends on nothing that needs the eBPF
//! toolchain, so it builds on a fresh machine.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "lb project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the build and test prerequisites (Debian packages, nightly
    /// rust-src, bpf-linker).
    Setup,
    /// Build everything, run the balancer on the veth lab with real clients,
    /// print who served what and the tables, and tear the lab down.
    Demo {
        /// Arguments for `lb-lab demo` (e.g. --layout two-arm).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit, packet (BPF_PROG_TEST_RUN) and end to end.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmark (not part of the tests): per-packet cost, scale,
    /// packet and connection rates against nftables and HAProxy. Writes
    /// target/bench/. `--quick` finishes in under five minutes.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the lab and leave it running (`lb-lab up`; see --help there).
    LabUp {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Tear down a lab left by `lab-up`.
    LabDown,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn setup() -> Result<()> {
    run(Command::new("bash").arg("scripts/setup.sh"))
}

fn build() -> Result<()> {
    run(Command::new("cargo").args(["build", "--bins"]))
}

fn lab(args: &[&str], extra: &[String]) -> Result<()> {
    run(Command::new(root().join("target/debug/lb-lab"))
        .args(args)
        .args(extra))
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup(),
        Cmd::Test { args } => {
            setup()?;
            build()?;
            run(Command::new("cargo")
                .arg("test")
                .args(&args)
                .env("RUST_BACKTRACE", "1"))
        }
        Cmd::Demo { args } => {
            setup()?;
            build()?;
            lab(&["demo"], &args)
        }
        Cmd::Bench { args } => {
            run(Command::new("bash").args(["scripts/setup.sh", "bench"]))?;
            run(Command::new("cargo").args(["build", "--release", "--bins"]))?;
            run(Command::new(root().join("target/release/lb-bench")).args(&args))
        }
        Cmd::LabUp { args } => {
            setup()?;
            build()?;
            lab(&["up"], &args)
        }
        Cmd::LabDown => lab(&["down"], &[]),
    }
}
