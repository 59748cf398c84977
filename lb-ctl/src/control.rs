//! The control socket: one JSON request per line, one JSON response per line,
//! over a root-only Unix socket. `lb-ctl` subcommands are its clients.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::{ConnView, SessionView, Stats},
    services::{Endpoint, Protocol, Vip, VipId, VipSpec},
};

/// Where `lb-ctl attach` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lb/lb.sock";
/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    VipAdd {
        spec: VipSpec,
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
    /// No new client for the backend; with `repin`, its pinned clients move
    /// at their next connection, else they stay until their session ends.
    BackendDrain {
        vip: VipId,
        backend: Endpoint,
        #[serde(default)]
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
    Conns,
    Sessions,
    Stats,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    Done { message: String },
    Vips { vips: Vec<Vip> },
    Backends { backends: Vec<BackendRow> },
    Conns { conns: Vec<ConnView> },
    Sessions { sessions: Vec<SessionView> },
    Stats { stats: Stats },
    Error { message: String },
}

/// One backend in `backend list`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendRow {
    pub vip: VipId,
    pub backend: Endpoint,
    pub weight: u32,
    /// Its share of new clients, in percent.
    pub share: u32,
    /// `up`, `down`, `draining` or `down, draining`.
    pub state: String,
    /// Live connections (client to backend).
    pub connections: u64,
    /// Live persistence sessions pinned to it.
    pub sessions: u64,
    /// Health checks passed and failed (none without a `health_check`).
    pub checks: Option<(u64, u64)>,
    /// Why its last failed check failed.
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "cannot reach the controller at {path}: {source} (is `lb-ctl attach` running with this --socket?)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the controller at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the controller at {path} answered something unreadable: {source}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("another controller is already listening on {0}; stop it or choose another --socket")]
    InUse(PathBuf),
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Send one request and wait for its response.
///
/// # Errors
/// When the controller cannot be reached or answers nonsense.
pub fn call(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_owned(),
        source,
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|source| ControlError::Decode {
        path: path.to_owned(),
        source,
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|source| ControlError::Decode {
        path: path.to_owned(),
        source,
    })
}

/// Create the listening socket: parent directory 0700, socket 0600. A stale
/// socket file is replaced; a live controller on it is an error.
///
/// # Errors
/// When the path is in use or cannot be created.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, ControlError> {
    let bind_err = |source| ControlError::Bind {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(bind_err)?;
        }
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Decode one request line, with an error that says what was wrong.
///
/// # Errors
/// A message for the client.
pub fn decode(line: &str) -> Result<Request, String> {
    serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))
}
