//! The desired state: what the operator asks for, validated before it
//! reaches anything else. Pure: imports nothing of lb-ctl, tested on the
//! host.

pub mod announce;
pub mod config;
pub mod cookie;
pub mod diff;
pub mod endpoint;
pub mod health;
pub mod kept;
pub mod sched;
pub mod services;
pub mod tls;
