//! Test support for lb: packet building ([`packet`]), network namespaces
//! ([`netns`]) and the veth lab ([`lab`]) used by the end-to-end tests and
//! by `cargo xtask demo`.
pub mod bench;
pub mod fib;
pub mod lab;
pub mod netns;
pub mod packet;
