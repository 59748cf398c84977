//! The control API: HTTP/1.1 with JSON on the control socket. The server
//! ([`server`], with the metrics text of [`metrics`]) and the client
//! `lb-ctl`'s commands use ([`client`]) share the wire types here.

pub mod client;
pub mod metrics;
pub mod server;

use serde::{Deserialize, Serialize};

/// Where `lb-ctl attach` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lb/lb.sock";

/// The body of every error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// The answer to a change that was made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Done {
    pub message: String,
}
