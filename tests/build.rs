//! Builds a variant of the XDP program (`lb-ebpf` with its `build-variant`
//! feature: other instructions, same behaviour and maps) for the upgrade
//! test, which replaces a running program with it through the pinned link.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("tests has no parent directory"))?
        .join("lb-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {root:?}"))?;
    println!("cargo:rerun-if-changed={root}/src");
    println!("cargo:rerun-if-changed=../lb-common/src");
    let package = aya_build::Package {
        name: "lb-ebpf",
        root_dir: root,
        features: &["build-variant"],
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
}
