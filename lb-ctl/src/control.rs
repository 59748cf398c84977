//! The control socket: the requests the controller serves, their answers,
//! the socket itself (root only) and the HTTP client `lb-ctl`'s commands
//! use. The HTTP routes are in [`crate::api`].

use std::{
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    dataplane::Stats,
    services::{Endpoint, Protocol, ServiceError, Vip, VipId, VipSpec},
};

/// Where `lb-ctl attach` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lb/lb.sock";

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
    Done { message: String },
    Vips { vips: Vec<Vip> },
    Backends { backends: Vec<BackendRow> },
    Stats { stats: Stats },
    Status { status: Status },
    Error { message: String, kind: ErrorKind },
}

/// `lb-ctl status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The interfaces the program is attached to.
    pub interfaces: Vec<String>,
    /// `native` or `generic`, and why.
    pub mode: String,
    pub mode_reason: String,
    /// The XDP program's id (`bpftool prog show id N`).
    pub program_id: Option<u32>,
    /// The pinned links' ids, by interface.
    pub link_ids: Vec<(String, u32)>,
    pub tables: Vec<TableStatus>,
    /// The last sweep: when it ended (seconds ago), how long it took and
    /// what it deleted per table.
    pub last_sweep: Option<SweepStatus>,
    pub uptime_seconds: u64,
    pub vips: usize,
    pub backends: usize,
    /// Sessions shared with the other hosts (`cluster:` only).
    #[serde(default)]
    pub cluster: Option<crate::cluster::store::Snapshot>,
}

/// One table in [`Status`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TableStatus {
    pub name: String,
    pub capacity: u64,
    /// Entries after the last sweep.
    pub entries: u64,
}

/// The last sweep in [`Status`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SweepStatus {
    pub seconds_ago: f64,
    pub duration_seconds: f64,
    /// Entries deleted per table.
    pub deleted: Vec<(String, u64)>,
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
        if !dir.as_os_str().is_empty() {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(bind_err)?;
            }
            // Root's only: whoever can reach the socket controls the
            // balancer.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(bind_err)?;
        }
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// An answer of the API: its status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as `T` on success; else the API's error message.
    ///
    /// # Errors
    /// The controller's message, or an unreadable body.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        if !(200..300).contains(&self.status) {
            let message = serde_json::from_slice::<crate::api::ApiError>(&self.body).map_or_else(
                |_| String::from_utf8_lossy(&self.body).into_owned(),
                |e| e.error,
            );
            anyhow::bail!("{message}");
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| anyhow::anyhow!("the controller answered something unreadable: {e}"))
    }

    /// The body as text on success; else the API's error message.
    ///
    /// # Errors
    /// The controller's message.
    pub fn text(&self) -> anyhow::Result<String> {
        if !(200..300).contains(&self.status) {
            let message = serde_json::from_slice::<crate::api::ApiError>(&self.body).map_or_else(
                |_| String::from_utf8_lossy(&self.body).into_owned(),
                |e| e.error,
            );
            anyhow::bail!("{message}");
        }
        Ok(String::from_utf8_lossy(&self.body).into_owned())
    }

    /// NDJSON lines, each as `T`.
    ///
    /// # Errors
    /// The controller's message, or an unreadable line.
    pub fn lines<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<Vec<T>> {
        let text = self.text()?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                if let Ok(e) = serde_json::from_str::<crate::api::ApiError>(l) {
                    anyhow::bail!("{}", e.error);
                }
                serde_json::from_str(l).map_err(|e| anyhow::anyhow!("unreadable line {l:?}: {e}"))
            })
            .collect()
    }
}

/// One HTTP request to the controller on `socket`.
///
/// # Errors
/// When the controller cannot be reached.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Reply> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(call_async(socket, method, path, body))
}

async fn call_async(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Reply> {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the controller at {}: {e} (is `lb-ctl attach` running with this --socket?)",
            socket.display()
        )
    })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let bytes = body
        .map(serde_json::to_vec)
        .transpose()?
        .unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "lb")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(axum::body::Bytes::from(bytes)))?;
    let response = tokio::time::timeout(Duration::from_secs(600), sender.send_request(request))
        .await
        .map_err(|_| anyhow::anyhow!("the controller did not answer within 600 s"))??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    Ok(Reply { status, body })
}
