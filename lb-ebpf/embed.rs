// How the crates that embed the XDP program build it: `include!`d by the
// build scripts of lb-ctl (the program) and of the tests (its variant).
//
// aya-build builds lb-ebpf with the nightly toolchain in a cargo target
// directory under its OUT_DIR. Both builds are pointed at one shared
// directory instead (`<target>/bpf`, through a symbolic link), so the
// eBPF toolchain's own crates (`core` built from source, aya-ebpf) are
// built once for both, and once for debug and release builds alike.

/// Build lb-ebpf with `features` and copy its programs (`lb`, `lb-pass`)
/// into this build script's OUT_DIR. `flavour` names the build among
/// those sharing the target directory.
fn build_lb_ebpf(features: &[&str], flavour: &str) -> anyhow::Result<()> {
    use anyhow::{anyhow, Context as _};
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("{manifest_dir} has no parent directory"))?
        .join("lb-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {root:?}"))?
        .to_string();
    println!("cargo:rerun-if-changed={root}/src");
    println!("cargo:rerun-if-changed={root}/embed.rs");
    println!("cargo:rerun-if-changed={root}/../lb-common/src");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    let target = out
        .ancestors()
        .nth(4)
        .ok_or_else(|| anyhow!("unexpected OUT_DIR {}", out.display()))?;
    let shared = target.join("bpf");
    let stage = shared.join(flavour);
    std::fs::create_dir_all(shared.join("aya-build"))?;
    std::fs::create_dir_all(&stage)?;
    let link = stage.join("aya-build");
    if !link.exists() {
        match std::os::unix::fs::symlink("../aya-build", &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("linking {}", link.display())),
        }
    }
    // aya-build takes its directories from OUT_DIR.
    std::env::set_var("OUT_DIR", &stage);
    let built = aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: &root,
            features,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    );
    std::env::set_var("OUT_DIR", &out);
    built?;
    for program in ["lb", "lb-pass"] {
        std::fs::copy(stage.join(program), out.join(program))
            .with_context(|| format!("copying {program} from {}", stage.display()))?;
    }
    Ok(())
}
