//! The layer-7 proxy of `mode: http` VIPs ([`proxy`]) and the value of its
//! persistence cookie ([`cookie`]). Imports `model` and `sync`.

pub mod cookie;
pub mod headers;
pub mod proxy;
