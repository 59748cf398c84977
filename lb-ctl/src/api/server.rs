//! The control API: HTTP/1.1 with JSON bodies, served on the control socket
//! (and `/metrics` also on `--metrics-address`). `lb-ctl`'s own commands are
//! its clients; `curl --unix-socket /run/lb/lb.sock http://lb/v1/vips`
//! works as well.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/status` | interfaces, mode, program, tables, last sweep, uptime |
//! | `POST /v1/reload` | re-read the config file: `{"message": …}`, or 400 with the reason (nothing applied) |
//! | `GET /v1/config` | the running configuration (what `lb-ctl config dump` prints as YAML) |
//! | `GET /v1/vips` · `POST /v1/vips` | list · add (a `VipSpec`) |
//! | `DELETE /v1/vips/{vip}?protocol=` | remove, with its connections and sessions |
//! | `GET /v1/backends?vip=&protocol=` | backends with state, share, live counts |
//! | `POST /v1/vips/{vip}/backends` | add `{"backend": "…", "weight": 1}` |
//! | `PUT /v1/vips/{vip}/backends/{backend}` | set `{"weight": 2}` |
//! | `DELETE /v1/vips/{vip}/backends/{backend}` | remove |
//! | `POST /v1/vips/{vip}/backends/{backend}/drain` | drain `{"repin": false}` |
//! | `POST /v1/vips/{vip}/backends/{backend}/enable` | back in rotation |
//! | `GET /v1/connections` · `GET /v1/sessions` | NDJSON streams, one object a line |
//! | `GET /metrics` | Prometheus text |
//!
//! Errors carry a status by kind (400 invalid input, 404 unknown VIP or
//! backend, 409 duplicate, 500 kernel failure) and `{"error": "…"}`.

// A refused request is answered with an axum `Response`, built once per
// failure: its size does not matter.
#![allow(clippy::result_large_err)]

use std::{
    convert::Infallible,
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use axum::{
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};

use super::{ApiError, Done};
use crate::{
    controller::{
        commands::{ErrorKind, Request, Response as Answer},
        state::Controller,
    },
    kernel::lister::Lister,
    model::{
        endpoint::{Endpoint, Protocol, VipId},
        services::VipSpec,
    },
    sync::lock,
};

type Shared = Arc<Mutex<Controller>>;

/// The API's routes over `controller`.
pub fn router(controller: Shared) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/reload", post(reload))
        .route("/v1/config", get(config))
        .route("/v1/vips", get(vips).post(vip_add))
        .route("/v1/vips/{vip}", axum::routing::delete(vip_remove))
        .route("/v1/backends", get(backends))
        .route("/v1/vips/{vip}/backends", post(backend_add))
        .route(
            "/v1/vips/{vip}/backends/{backend}",
            axum::routing::put(backend_weight).delete(backend_remove),
        )
        .route(
            "/v1/vips/{vip}/backends/{backend}/drain",
            post(backend_drain),
        )
        .route(
            "/v1/vips/{vip}/backends/{backend}/enable",
            post(backend_enable),
        )
        .route("/v1/connections", get(connections))
        .route("/v1/sessions", get(sessions))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such resource (see the API in `lb-ctl --help` or the README)".into(),
            )
        })
        .with_state(controller)
}

/// Only `/metrics`, for `--metrics-address`.
pub fn metrics_router(controller: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "try /metrics".into()) })
        .with_state(controller)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ApiError { error: message })).into_response()
}

/// The status of an error of `kind`.
#[must_use]
pub const fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Kernel => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Run `request` on the controller, off the async threads.
async fn run(controller: Shared, request: Request) -> Response {
    match tokio::task::spawn_blocking(move || lock(&controller).handle(request)).await {
        Ok(answer) => answer_response(answer),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn answer_response(answer: Answer) -> Response {
    match answer {
        Answer::Error { message, kind } => error(status_of(kind), message),
        Answer::Done { message } => (StatusCode::OK, Json(Done { message })).into_response(),
        Answer::Vips { vips } => Json(vips).into_response(),
        Answer::Backends { backends } => Json(backends).into_response(),
        Answer::Status { status } => Json(status).into_response(),
        Answer::Config { config } => Json(config).into_response(),
        Answer::Stats { stats } => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            super::metrics::render(&stats),
        )
            .into_response(),
    }
}

/// Parse a path segment as `ADDRESS:PORT`, naming it when it is not.
fn endpoint(what: &str, s: &str) -> Result<Endpoint, Response> {
    s.parse()
        .map_err(|e: String| error(StatusCode::BAD_REQUEST, format!("{what}: {e}")))
}

#[derive(Deserialize)]
struct ProtocolQuery {
    protocol: Option<Protocol>,
}

fn vip_id(vip: &str, q: &ProtocolQuery) -> Result<VipId, Response> {
    Ok(VipId {
        endpoint: endpoint("VIP", vip)?,
        protocol: q.protocol.unwrap_or_default(),
    })
}

/// A JSON body, with a 400 that names what is wrong in it.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

async fn reload(State(c): State<Shared>) -> Response {
    run(c, Request::Reload).await
}

async fn config(State(c): State<Shared>) -> Response {
    run(c, Request::Config).await
}

async fn status(State(c): State<Shared>) -> Response {
    run(c, Request::Status).await
}

async fn vips(State(c): State<Shared>) -> Response {
    run(c, Request::VipList).await
}

async fn vip_add(State(c): State<Shared>, bytes: Bytes) -> Response {
    match body::<VipSpec>(&bytes) {
        Ok(spec) => created(
            run(
                c,
                Request::VipAdd {
                    spec: Box::new(spec),
                },
            )
            .await,
        ),
        Err(r) => r,
    }
}

/// 201 for a successful creation.
fn created(mut r: Response) -> Response {
    if r.status() == StatusCode::OK {
        *r.status_mut() = StatusCode::CREATED;
    }
    r
}

async fn vip_remove(
    State(c): State<Shared>,
    Path(vip): Path<String>,
    Query(q): Query<ProtocolQuery>,
) -> Response {
    match vip_id(&vip, &q) {
        Ok(vip) => run(c, Request::VipRemove { vip }).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct BackendsQuery {
    vip: Option<String>,
    protocol: Option<Protocol>,
}

async fn backends(State(c): State<Shared>, Query(q): Query<BackendsQuery>) -> Response {
    let vip = match q.vip.as_deref().map(|v| endpoint("vip", v)).transpose() {
        Ok(v) => v,
        Err(r) => return r,
    };
    run(
        c,
        Request::BackendList {
            vip,
            protocol: q.protocol,
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackend {
    backend: Endpoint,
    #[serde(default = "one")]
    weight: u32,
}

const fn one() -> u32 {
    1
}

async fn backend_add(
    State(c): State<Shared>,
    Path(vip): Path<String>,
    Query(q): Query<ProtocolQuery>,
    bytes: Bytes,
) -> Response {
    let (vip, b) = match (vip_id(&vip, &q), body::<NewBackend>(&bytes)) {
        (Ok(v), Ok(b)) => (v, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    created(
        run(
            c,
            Request::BackendAdd {
                vip,
                backend: b.backend,
                weight: b.weight,
            },
        )
        .await,
    )
}

/// The VIP and backend of a backend's path.
fn backend_path(
    vip: &str,
    backend: &str,
    q: &ProtocolQuery,
) -> Result<(VipId, Endpoint), Response> {
    Ok((vip_id(vip, q)?, endpoint("backend", backend)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Weight {
    weight: u32,
}

async fn backend_weight(
    State(c): State<Shared>,
    Path((vip, backend)): Path<(String, String)>,
    Query(q): Query<ProtocolQuery>,
    bytes: Bytes,
) -> Response {
    let ((vip, backend), w) = match (backend_path(&vip, &backend, &q), body::<Weight>(&bytes)) {
        (Ok(p), Ok(w)) => (p, w),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    run(
        c,
        Request::BackendWeight {
            vip,
            backend,
            weight: w.weight,
        },
    )
    .await
}

async fn backend_remove(
    State(c): State<Shared>,
    Path((vip, backend)): Path<(String, String)>,
    Query(q): Query<ProtocolQuery>,
) -> Response {
    match backend_path(&vip, &backend, &q) {
        Ok((vip, backend)) => run(c, Request::BackendRemove { vip, backend }).await,
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    #[serde(default)]
    repin: bool,
}

async fn backend_drain(
    State(c): State<Shared>,
    Path((vip, backend)): Path<(String, String)>,
    Query(q): Query<ProtocolQuery>,
    bytes: Bytes,
) -> Response {
    let d = if bytes.is_empty() {
        DrainBody::default()
    } else {
        match body::<DrainBody>(&bytes) {
            Ok(d) => d,
            Err(r) => return r,
        }
    };
    match backend_path(&vip, &backend, &q) {
        Ok((vip, backend)) => {
            run(
                c,
                Request::BackendDrain {
                    vip,
                    backend,
                    repin: d.repin,
                },
            )
            .await
        }
        Err(r) => r,
    }
}

async fn backend_enable(
    State(c): State<Shared>,
    Path((vip, backend)): Path<(String, String)>,
    Query(q): Query<ProtocolQuery>,
) -> Response {
    match backend_path(&vip, &backend, &q) {
        Ok((vip, backend)) => run(c, Request::BackendEnable { vip, backend }).await,
        Err(r) => r,
    }
}

async fn metrics(State(c): State<Shared>) -> Response {
    run(c, Request::Stats).await
}

async fn connections(State(c): State<Shared>) -> Response {
    stream(c, |l, send| {
        l.connections(&mut |rows| send_lines(rows, send))
            .map_err(Into::into)
    })
}

async fn sessions(State(c): State<Shared>) -> Response {
    stream(c, |l, send| {
        l.sessions(&mut |rows| send_lines(rows, send))
            .map_err(Into::into)
    })
}

/// How many serialized lines go into one chunk of a stream.
const LINES_PER_CHUNK: usize = 512;

/// An NDJSON stream fed from a blocking producer: it reads the tables in
/// batches and sends lines as it goes, so that a listing of millions never
/// becomes one string. The controller's lock is held only to take the
/// lister (its own map references and a copy of the model).
fn stream(
    c: Shared,
    producer: impl FnOnce(&Lister, &mut dyn FnMut(Vec<u8>) -> bool) -> anyhow::Result<()>
        + Send
        + 'static,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(8);
    tokio::task::spawn_blocking(move || {
        let lister = {
            let c = lock(&c);
            c.dataplane.tables.lister(&c.services)
        };
        let mut send = |chunk: Vec<u8>| tx.blocking_send(Ok(Bytes::from(chunk))).is_ok();
        let result = lister
            .map_err(anyhow::Error::from)
            .and_then(|l| producer(&l, &mut send));
        if let Err(e) = result {
            let line = serde_json::to_vec(&ApiError {
                error: e.to_string(),
            })
            .unwrap_or_default();
            let _ = tx.blocking_send(Ok(Bytes::from([line, b"\n".to_vec()].concat())));
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// The receiving half of a channel as a stream.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Serialize `rows` as NDJSON lines into chunks handed to `send`; false
/// from `send` (the client went away) stops.
pub fn send_lines<T: Serialize>(
    rows: impl IntoIterator<Item = T>,
    send: &mut dyn FnMut(Vec<u8>) -> bool,
) -> bool {
    let mut chunk = Vec::new();
    let mut lines = 0;
    for r in rows {
        if serde_json::to_writer(&mut chunk, &r).is_err() {
            continue;
        }
        chunk.push(b'\n');
        lines += 1;
        if lines == LINES_PER_CHUNK {
            if !send(std::mem::take(&mut chunk)) {
                return false;
            }
            lines = 0;
        }
    }
    chunk.is_empty() || send(chunk)
}

/// Why the control socket cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
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
pub fn bind(path: &std::path::Path) -> Result<tokio::net::UnixListener, SocketError> {
    let bind_err = |source| SocketError::Bind {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse(path.to_owned()));
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
