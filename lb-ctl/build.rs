//! Builds the XDP program (`lb-ebpf`) for the BPF target and leaves it in
//! OUT_DIR, where `src/kernel/program.rs` embeds it.

include!("../lb-ebpf/embed.rs");

fn main() -> anyhow::Result<()> {
    build_lb_ebpf(&[], "program")
}
