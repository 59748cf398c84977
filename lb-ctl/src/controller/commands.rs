//! What the controller is asked to do, and its answers: the commands the
//! API's routes turn requests into.

use serde::{Deserialize, Serialize};

use super::report::{BackendRow, Stats, Status};
use crate::model::{
    endpoint::{Endpoint, Protocol, VipId},
    services::{ServiceError, VipSpec},
};

/// What the controller is asked to do.
#[derive(Clone, Debug)]
pub enum Request {
    VipAdd {
        spec: Box<VipSpec>,
    },
    VipRemove {
        vip: VipId,
    },
    VipList,
    BackendAdd {
        vip: VipId,
        backend: Endpoint,
        weight: u32,
    },
    BackendRemove {
        vip: VipId,
        backend: Endpoint,
    },
    BackendWeight {
        vip: VipId,
        backend: Endpoint,
        weight: u32,
    },
    /// No new client for the backend; with `repin`, its pinned clients move
    /// at their next connection, else they stay until their session ends.
    BackendDrain {
        vip: VipId,
        backend: Endpoint,
        repin: bool,
    },
    /// Put a draining backend back in rotation.
    BackendEnable {
        vip: VipId,
        backend: Endpoint,
    },
    /// All VIPs, or the ones on this address:port (any protocol).
    BackendList {
        vip: Option<Endpoint>,
        protocol: Option<Protocol>,
    },
    Stats,
    Status,
    /// Re-read the config file.
    Reload,
    /// The running configuration.
    Config,
}

/// Kinds of failure, each with its HTTP status (see [`crate::api`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad input: 400.
    Invalid,
    /// Unknown VIP or backend: 404.
    NotFound,
    /// Already exists, or not in the state asked for: 409.
    Conflict,
    /// The kernel refused: 500.
    Kernel,
}

impl ErrorKind {
    /// The kind of a refused change.
    #[must_use]
    pub const fn of(e: &ServiceError) -> Self {
        match e {
            ServiceError::UnknownVip(_) | ServiceError::UnknownBackend { .. } => Self::NotFound,
            ServiceError::DuplicateVip(_)
            | ServiceError::DuplicateBackend { .. }
            | ServiceError::NotDraining { .. } => Self::Conflict,
            _ => Self::Invalid,
        }
    }
}

/// The controller's answer.
#[derive(Clone, Debug)]
pub enum Response {
    Done {
        message: String,
    },
    Vips {
        vips: Vec<super::report::VipRow>,
    },
    Backends {
        backends: Vec<BackendRow>,
    },
    Stats {
        stats: Stats,
    },
    Status {
        status: Status,
    },
    Config {
        config: Box<crate::model::config::Config>,
    },
    Error {
        message: String,
        kind: ErrorKind,
    },
}
