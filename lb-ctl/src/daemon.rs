//! `lb-ctl attach`: load, configure, attach, then serve the control socket
//! and sweep the tables until SIGINT/SIGTERM, and detach cleanly.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
    signal::unix::{signal, SignalKind},
};

use crate::{
    config::Config,
    control::{self, Request, Response, MAX_REQUEST},
    dataplane::{Dataplane, LoadOptions},
    services::Services,
    sysctl,
};

pub struct AttachOptions {
    pub ifaces: Vec<String>,
    pub config: Option<PathBuf>,
    pub generic: bool,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    pub keep_state: bool,
    /// Serve Prometheus metrics over HTTP here.
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// The controller's state: the model and the kernel tables it describes.
pub struct Controller {
    pub services: Services,
    pub dataplane: Dataplane,
}

impl Controller {
    /// Apply a change to a copy of the model, then to the maps; on any error
    /// neither changes.
    fn change(&mut self, edit: impl FnOnce(&mut Services) -> Result<String, String>) -> Response {
        let mut next = self.services.clone();
        let message = match edit(&mut next) {
            Ok(m) => m,
            Err(message) => return Response::Error { message },
        };
        if let Err(e) = self.dataplane.tables.apply(&self.services, &next) {
            if let Err(back) = self.dataplane.tables.apply(&next, &self.services) {
                log::error!("restoring the tables after a failed change: {back}");
            }
            return Response::Error {
                message: format!("the kernel refused the change: {e}"),
            };
        }
        self.services = next;
        log::info!("{message}");
        Response::Done { message }
    }

    /// Serve one control request.
    pub fn handle(&mut self, request: Request) -> Response {
        let err = |e: &dyn std::fmt::Display| Response::Error {
            message: e.to_string(),
        };
        match request {
            Request::VipAdd { spec } => {
                let id = spec.id;
                self.change(|s| {
                    s.add_vip(spec)
                        .map(|()| format!("added VIP {id}"))
                        .map_err(|e| e.to_string())
                })
            }
            Request::VipRemove { vip } => self.change(|s| {
                s.remove_vip(&vip)
                    .map(|_| format!("removed VIP {vip}"))
                    .map_err(|e| e.to_string())
            }),
            Request::VipList => Response::Vips {
                vips: self.services.vips().cloned().collect(),
            },
            Request::BackendAdd {
                vip,
                backend,
                weight,
            } => self.change(|s| {
                s.add_backend(&vip, backend, weight)
                    .map(|()| format!("added backend {backend} (weight {weight}) to VIP {vip}"))
                    .map_err(|e| e.to_string())
            }),
            Request::BackendRemove { vip, backend } => self.change(|s| {
                s.remove_backend(&vip, backend)
                    .map(|_| format!("removed backend {backend} from VIP {vip}"))
                    .map_err(|e| e.to_string())
            }),
            Request::BackendList { vip, protocol } => {
                let vips: Vec<_> = self
                    .services
                    .vips()
                    .filter(|v| vip.is_none_or(|e| v.spec.id.endpoint == e))
                    .filter(|v| protocol.is_none_or(|p| v.spec.id.protocol == p))
                    .cloned()
                    .collect();
                if vips.is_empty() {
                    if let Some(e) = vip {
                        return Response::Error {
                            message: format!("no VIP on {e} (see `lb-ctl vip list`)"),
                        };
                    }
                }
                Response::Vips { vips }
            }
            Request::Conns => match self.dataplane.tables.connections(&self.services) {
                Ok(conns) => Response::Conns { conns },
                Err(e) => err(&e),
            },
            Request::Sessions => match self.dataplane.tables.sessions(&self.services) {
                Ok(sessions) => Response::Sessions { sessions },
                Err(e) => err(&e),
            },
            Request::Stats => match self.dataplane.tables.stats(&self.services) {
                Ok(stats) => Response::Stats { stats },
                Err(e) => err(&e),
            },
        }
    }

    fn sweep(&mut self) {
        match self.dataplane.tables.sweep(&self.services) {
            Ok(r) => log::info!(
                "sweep: deleted {} of {} connection entries and {} of {} sessions in {:.1?}",
                r.connections_deleted,
                r.connections_scanned,
                r.sessions_deleted,
                r.sessions_scanned,
                r.elapsed
            ),
            Err(e) => log::error!("sweep failed: {e}"),
        }
    }
}

/// Run `lb-ctl attach` to completion.
///
/// # Errors
/// When anything is refused before the controller runs; nothing stays
/// attached then.
pub async fn run(opts: AttachOptions) -> Result<()> {
    let (config, services) = match &opts.config {
        Some(path) => Config::load(path)?,
        None => (Config::default(), Services::default()),
    };
    for name in &opts.ifaces {
        nix::net::if_::if_nametoindex(name.as_str())
            .map_err(|_| anyhow::anyhow!("interface {name:?} does not exist"))?;
    }
    let sysctl_changes = sysctl::prepare_forwarding(&opts.ifaces)?;
    sysctl::ensure_bpffs(&opts.bpffs)?;
    let pin_dir = opts.bpffs.join("lb");
    std::fs::create_dir_all(&pin_dir).with_context(|| format!("creating {}", pin_dir.display()))?;
    let metrics = match opts.metrics_address {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics on {addr}"))?,
        ),
        None => None,
    };
    let listener = control::bind(&opts.socket)?;
    let socket_guard = SocketGuard(opts.socket.clone());

    let mut dataplane = Dataplane::load(&LoadOptions {
        max_connections: config.limits.max_connections,
        max_sessions: config.limits.max_sessions,
        pin_dir: Some(pin_dir.clone()),
    })
    .context("loading the XDP program")?;
    let setup = (|| -> Result<()> {
        dataplane
            .tables
            .set_settings(&config.timeouts.to_settings())?;
        dataplane.tables.clear_vips()?;
        dataplane.tables.apply(&Services::default(), &services)?;
        dataplane.attach(&opts.ifaces, opts.generic)?;
        Ok(())
    })();
    if let Err(e) = setup {
        dataplane.detach();
        if !opts.keep_state {
            dataplane.unpin();
        }
        return Err(e);
    }
    log::info!(
        "attached to {} ({} mode); {} VIP(s); maps pinned in {}; control socket {}",
        opts.ifaces.join(", "),
        if opts.generic { "generic" } else { "native" },
        services.vips().count(),
        pin_dir.display(),
        opts.socket.display()
    );

    let controller = Arc::new(Mutex::new(Controller {
        services,
        dataplane,
    }));
    if let Some(metrics) = metrics {
        log::info!(
            "serving metrics on http://{}/metrics",
            metrics.local_addr()?
        );
        tokio::spawn(serve_metrics(metrics, Arc::clone(&controller)));
    }
    let mut sweep = tokio::time::interval(config.sweeper.interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.tick().await;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = sweep.tick() => {
                let c = Arc::clone(&controller);
                tokio::task::spawn_blocking(move || lock(&c).sweep()).await?;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let c = Arc::clone(&controller);
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, c).await {
                            log::warn!("control connection: {e}");
                        }
                    });
                }
                Err(e) => log::warn!("accepting a control connection: {e}"),
            },
        }
    }
    log::info!("stopping: detaching from {}", opts.ifaces.join(", "));
    let mut c = lock(&controller);
    c.dataplane.detach();
    if opts.keep_state {
        log::info!(
            "keeping the pinned tables in {} for the next attach",
            pin_dir.display()
        );
    } else {
        c.dataplane.unpin();
        sysctl::restore(&sysctl_changes);
    }
    drop(socket_guard);
    Ok(())
}

fn lock(c: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve(stream: UnixStream, controller: Arc<Mutex<Controller>>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let response = if !line.ends_with('\n') && line.len() >= MAX_REQUEST {
        Response::Error {
            message: format!("request longer than {MAX_REQUEST} bytes"),
        }
    } else {
        match control::decode(&line) {
            Ok(request) => {
                tokio::task::spawn_blocking(move || lock(&controller).handle(request)).await?
            }
            Err(message) => Response::Error { message },
        }
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

/// A minimal HTTP/1.1 endpoint: `GET /metrics` answers the Prometheus text
/// format, anything else 404.
async fn serve_metrics(listener: tokio::net::TcpListener, controller: Arc<Mutex<Controller>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let c = Arc::clone(&controller);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read.take(8192));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).await.is_err() {
                return;
            }
            // Drain the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).await.is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if path == "/metrics" || path.starts_with("/metrics?") {
                match tokio::task::spawn_blocking(move || {
                    let c = lock(&c);
                    c.dataplane
                        .tables
                        .stats(&c.services)
                        .map(|s| crate::metrics::render(&s))
                })
                .await
                {
                    Ok(Ok(text)) => ("200 OK", text),
                    Ok(Err(e)) => ("500 Internal Server Error", format!("{e}\n")),
                    Err(e) => ("500 Internal Server Error", format!("{e}\n")),
                }
            } else {
                ("404 Not Found", "try /metrics\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = write.write_all(response.as_bytes()).await;
        });
    }
}

struct SocketGuard(PathBuf);
impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
