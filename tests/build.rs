//! Builds a variant of the XDP program (`lb-ebpf` with its `build-variant`
//! feature: other instructions, same behaviour and maps) for the upgrade
//! test, which replaces a running program with it through the pinned link.
//! It shares lb-ctl's build directory (see `lb-ebpf/embed.rs`).

include!("../lb-ebpf/embed.rs");

fn main() -> anyhow::Result<()> {
    build_lb_ebpf(&["build-variant"], "variant")
}
