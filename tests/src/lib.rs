//! Test support for lb: packet building ([`packet`]), network namespaces
//! ([`netns`]) and the veth lab ([`lab`]) used by the end-to-end tests and
//! by `cargo xtask demo`.
pub mod apps;
pub mod bench;
pub mod ecmp;
pub mod fib;
pub mod lab;
pub mod netns;
pub mod packet;
pub mod packet6;
pub mod pki;
pub mod routed;
pub mod testbed;

/// A variant build of the XDP program (`lb-ebpf` with `build-variant`:
/// other instructions, the same behaviour and maps), built by `build.rs`
/// for the upgrade test.
pub static VARIANT_PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));
