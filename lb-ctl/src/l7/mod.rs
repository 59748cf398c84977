//! The layer-7 proxy of `mode: http` VIPs ([`proxy`]), the value of its
//! persistence cookie ([`cookie`]), the headers it edits ([`headers`]) and
//! its TLS termination ([`tls`]). Imports `model` and `sync`.

pub mod cookie;
pub mod headers;
pub mod listen;
pub mod proxy;
pub mod tls;
