//! `lb-ctl attach`: load, configure, attach, then serve the control socket
//! and sweep the tables until SIGINT/SIGTERM, and detach cleanly.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config::Config,
    control::{self, BackendRow, ErrorKind, Request, Response},
    dataplane::{Dataplane, LoadOptions},
    services::{Endpoint, ServiceError, Services, VipId},
    sysctl,
};

pub struct AttachOptions {
    pub ifaces: Vec<String>,
    pub config: Option<PathBuf>,
    pub xdp_mode: crate::xdpmode::Requested,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    pub keep_state: bool,
    /// Serve Prometheus metrics over HTTP here.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Load this eBPF object instead of the built-in program.
    pub program: Option<PathBuf>,
    /// This host's name in the cluster (overrides `cluster.node`).
    pub node: Option<String>,
}

/// The controller's state: the model and the kernel tables it describes.
pub struct Controller {
    pub services: Services,
    pub dataplane: Dataplane,
    /// The interfaces the program is attached to.
    pub ifaces: Vec<String>,
    /// Health-check records, written by the checker tasks.
    pub health: Arc<Mutex<HealthBook>>,
    /// The backends to check, republished after every change.
    pub targets: tokio::sync::watch::Sender<Vec<Target>>,
    /// Draining backends already reported as safe to remove.
    drained_reported: std::collections::HashSet<(VipId, Endpoint)>,
    /// Table sizes and unconfirmed-flow evictions, as of the last sweep.
    tables: TableAccount,
    /// How the program is attached, and why.
    pub mode: (String, String),
    started: std::time::Instant,
    /// When the last sweep ended, how long it took, what it deleted.
    last_sweep: Option<(std::time::Instant, std::time::Duration, [u64; 4])>,
    /// What the sweeps deleted so far, per table.
    swept_total: [u64; 4],
    /// The layer-7 proxy, once a `mode: http` VIP exists.
    http: Option<HttpPart>,
    /// Where the cookie key is (`http.cookie_key_file`).
    pub cookie_key_file: PathBuf,
    /// Sessions shared with the other hosts (`cluster:`).
    pub cluster: Option<Arc<crate::cluster::store::Cluster>>,
}

/// The proxy and what the controller keeps of it.
struct HttpPart {
    view: tokio::sync::watch::Sender<Arc<crate::proxy::View>>,
    listeners: crate::proxy::Listeners,
    stats: crate::proxy::HttpStats,
}

/// The four state tables, in the order of the sweeps' figures.
const TABLES: [&str; 4] = ["connections", "half_open", "sessions", "pending"];

/// What the sweeps tell about the tables.
#[derive(Clone, Copy, Debug, Default)]
struct TableAccount {
    /// Entries left in each table after the last sweep.
    connections: u64,
    half_open: u64,
    sessions: u64,
    pending: u64,
    /// Counters at the last sweep: new flows, confirmed flows, drops.
    new_flows: u64,
    confirmed: u64,
    dropped_full: u64,
    /// Unconfirmed flows evicted by the LRU so far (estimated).
    evicted: u64,
}

impl TableAccount {
    /// Account one sweep: an unconfirmed flow that was created since the
    /// last one and was neither confirmed, nor dropped, nor swept as
    /// expired, nor is still in the table, was evicted to make room.
    fn sweep(
        &mut self,
        r: &crate::dataplane::SweepReport,
        new_flows: u64,
        confirmed: u64,
        dropped_full: u64,
    ) {
        let before = self.half_open / 2;
        let after = r.half_open.left() / 2;
        let gone = new_flows
            .saturating_sub(self.new_flows)
            .saturating_sub(confirmed.saturating_sub(self.confirmed))
            .saturating_sub(dropped_full.saturating_sub(self.dropped_full))
            .saturating_sub(r.half_open.deleted / 2);
        self.evicted += gone.saturating_sub(after.saturating_sub(before));
        self.connections = r.connections.left();
        self.half_open = r.half_open.left();
        self.sessions = r.sessions.left();
        self.pending = r.pending.left();
        self.new_flows = new_flows;
        self.confirmed = confirmed;
        self.dropped_full = dropped_full;
    }
}

/// Health-check records per (VIP, backend).
pub type HealthBook = std::collections::BTreeMap<(VipId, Endpoint), crate::health::Record>;

/// One backend to check, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub vip: VipId,
    pub backend: Endpoint,
    pub check: crate::health::HealthCheck,
}

/// The backends of `services` that have a health check.
fn targets(services: &Services) -> Vec<Target> {
    services
        .vips()
        .filter_map(|v| v.spec.health_check.as_ref().map(|c| (v, c)))
        .flat_map(|(v, check)| {
            v.backends.iter().map(move |b| Target {
                vip: v.spec.id,
                backend: b.endpoint,
                check: check.clone(),
            })
        })
        .collect()
}

impl Controller {
    /// A controller over `services` and `dataplane`.
    #[must_use]
    pub fn new(services: Services, dataplane: Dataplane, ifaces: Vec<String>) -> Self {
        let (targets, _) = tokio::sync::watch::channel(targets(&services));
        Self {
            services,
            dataplane,
            ifaces,
            health: Arc::default(),
            targets,
            drained_reported: std::collections::HashSet::new(),
            tables: TableAccount::default(),
            mode: (String::new(), String::new()),
            started: std::time::Instant::now(),
            last_sweep: None,
            swept_total: [0; 4],
            http: None,
            cookie_key_file: crate::config::Http::default().cookie_key_file,
            cluster: None,
        }
    }

    /// Serve the `mode: http` VIPs of `next` that are not served yet: bind
    /// their sockets (and start the proxy, with its key, at the first).
    /// Nothing is started when any of them cannot be.
    ///
    /// # Errors
    /// Naming the VIP and the address, or the key file.
    fn bind_new_http(
        &mut self,
        next: &Services,
    ) -> Result<Vec<(VipId, std::net::TcpListener)>, String> {
        let wanted: Vec<VipId> = next
            .vips()
            .filter(|v| v.spec.mode == crate::services::Mode::Http)
            .map(|v| v.spec.id)
            .filter(|id| !self.http.as_ref().is_some_and(|h| h.listeners.serves(id)))
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        self.ensure_proxy()?;
        wanted
            .into_iter()
            .map(|id| crate::proxy::bind(id).map(|l| (id, l)))
            .collect()
    }

    /// Start the proxy (with its cookie key) unless it runs.
    fn ensure_proxy(&mut self) -> Result<(), String> {
        if self.http.is_none() {
            let keys = crate::cookie::Keys::load_or_create(&self.cookie_key_file)?;
            let (view, rx) =
                tokio::sync::watch::channel(Arc::new(crate::proxy::view(&self.services)));
            let stats = crate::proxy::HttpStats::default();
            let proxy = crate::proxy::Proxy::new(keys, rx, Arc::clone(&stats));
            self.http = Some(HttpPart {
                view,
                listeners: crate::proxy::Listeners::new(proxy),
                stats,
            });
        }
        Ok(())
    }

    /// Serve the `mode: http` VIPs whose sockets were bound before the
    /// attach.
    ///
    /// # Errors
    /// When the cookie key cannot be had.
    pub fn start_http(&mut self, bound: Vec<(VipId, std::net::TcpListener)>) -> Result<(), String> {
        if !bound.is_empty() {
            self.ensure_proxy()?;
            self.publish_http(bound);
        }
        Ok(())
    }

    /// Publish the model to the proxy, start the listeners just bound, stop
    /// those of VIPs gone.
    fn publish_http(&mut self, bound: Vec<(VipId, std::net::TcpListener)>) {
        if let Some(h) = &mut self.http {
            let view = crate::proxy::view(&self.services);
            h.listeners.retain(&view);
            h.view.send_replace(Arc::new(view));
            for (id, listener) in bound {
                log::info!("VIP {id}: serving HTTP (layer-7 proxy) on {}", id.endpoint);
                h.listeners.start(id, listener);
            }
        }
    }

    /// Keep the neighbour entries of direct-server-return backends
    /// resolved: a datagram to each (port 9, discard) makes the kernel
    /// resolve its MAC address, which the data path needs and cannot ask
    /// for itself (a DSR packet keeps the VIP as destination, so the
    /// kernel cannot forward it).
    pub fn resolve_dsr_backends(&self) {
        let Ok(socket) = std::net::UdpSocket::bind("0.0.0.0:0") else {
            return;
        };
        for v in self
            .services
            .vips()
            .filter(|v| v.spec.forwarding == crate::services::Forwarding::Dsr)
        {
            for b in &v.backends {
                let _ = socket.send_to(b"", (b.endpoint.addr, 9));
            }
        }
    }

    /// `lb-ctl status`.
    fn status(&self) -> control::Status {
        let t = &self.tables;
        let d = &self.dataplane.tables;
        let table = |name: &str, capacity: u32, entries: u64| control::TableStatus {
            name: name.into(),
            capacity: u64::from(capacity),
            entries,
        };
        control::Status {
            interfaces: self.ifaces.clone(),
            mode: self.mode.0.clone(),
            mode_reason: self.mode.1.clone(),
            program_id: self.dataplane.program_id(),
            link_ids: self.dataplane.link_ids(),
            tables: vec![
                table("connections", d.max_connections, t.connections / 2),
                table("half_open", d.max_half_open, t.half_open / 2),
                table("sessions", d.max_sessions, t.sessions),
                table("pending", d.max_half_open, t.pending),
            ],
            last_sweep: self
                .last_sweep
                .map(|(at, took, deleted)| control::SweepStatus {
                    seconds_ago: at.elapsed().as_secs_f64(),
                    duration_seconds: took.as_secs_f64(),
                    deleted: TABLES
                        .iter()
                        .zip(deleted)
                        .map(|(n, v)| ((*n).to_string(), v))
                        .collect(),
                }),
            uptime_seconds: self.started.elapsed().as_secs(),
            vips: self.services.vips().count(),
            backends: self.services.vips().map(|v| v.backends.len()).sum(),
            cluster: self.cluster.as_ref().map(|c| c.snapshot()),
        }
    }

    /// Apply the config file again (SIGHUP): its VIPs and backends become
    /// the model, on the ids in use (kept sessions and connections stay
    /// valid), and its timeouts are written; a change of `limits:` needs a
    /// restart. A bad file changes nothing.
    ///
    /// # Errors
    /// Naming what is wrong; nothing is applied then.
    pub fn reload(&mut self, path: &std::path::Path, running: &Config) -> Result<String> {
        let (config, services) = Config::load(path)?;
        if config.limits != running.limits {
            anyhow::bail!(
                "{}: limits: cannot change while running (the tables are sized at attach); \
                 restart lb-ctl to resize them",
                path.display()
            );
        }
        if config.cluster != running.cluster {
            anyhow::bail!(
                "{}: cluster: cannot change while running; restart lb-ctl to join, leave or \
                 move the cluster",
                path.display()
            );
        }
        let next = services.on_current_ids(&self.services)?;
        let message = format!(
            "reloaded {}: {} VIP(s), {} backend(s)",
            path.display(),
            next.vips().count(),
            next.vips().map(|v| v.backends.len()).sum::<usize>()
        );
        let old_settings = self.dataplane.tables.settings()?;
        self.dataplane
            .tables
            .set_settings(&config.timeouts.to_settings())?;
        match self.replace(next, message) {
            Response::Done { message } => Ok(message),
            Response::Error { message, .. } => {
                let _ = self.dataplane.tables.set_settings(&old_settings);
                anyhow::bail!("{message}")
            }
            _ => unreachable!("replace answers Done or Error"),
        }
    }

    /// After a sweep: the tables' sizes and the evictions since the last.
    fn account(&mut self, r: &crate::dataplane::SweepReport) {
        use lb_common::Reason;
        let t = &self.dataplane.tables;
        match (
            t.reason_total(Reason::NEW_CONN),
            t.reason_total(Reason::CONFIRMED),
            t.reason_total(Reason::DROP_CONN_TABLE_FULL),
        ) {
            (Ok(new), Ok(confirmed), Ok(full)) => self.tables.sweep(r, new, confirmed, full),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                log::warn!("reading the counters after a sweep: {e}");
            }
        }
    }

    /// The rows of `backend list` for `vips`.
    fn backend_rows(&self, vips: &[&crate::services::Vip]) -> Result<Vec<BackendRow>> {
        let live = self.dataplane.tables.live(&self.services)?;
        let book = lock(&self.health);
        Ok(vips
            .iter()
            .flat_map(|v| {
                let book = &book;
                let live = &live;
                v.backends.iter().map(move |b| {
                    let l = live.get(&(b.slot, b.gen)).copied().unwrap_or_default();
                    let record = book.get(&(v.spec.id, b.endpoint));
                    let share = v.table.iter().filter(|&&s| s == b.slot).count();
                    BackendRow {
                        vip: v.spec.id,
                        backend: b.endpoint,
                        weight: b.weight,
                        share: (share * 100 / v.table.len().max(1)) as u32,
                        state: b.state().to_string(),
                        connections: l.connections,
                        sessions: l.sessions,
                        checks: record.map(|r| (r.checks_ok, r.checks_failed)),
                        last_error: record.and_then(|r| r.last_error.clone()),
                    }
                })
            })
            .collect())
    }

    /// After a sweep: report draining backends that have no live
    /// connection or session left, once each.
    fn report_drained(
        &mut self,
        live: &std::collections::HashMap<(u32, u32), crate::dataplane::Live>,
    ) {
        let mut draining = std::collections::HashSet::new();
        for v in self.services.vips() {
            for b in v.backends.iter().filter(|b| b.drain.is_some()) {
                let key = (v.spec.id, b.endpoint);
                draining.insert(key);
                let l = live.get(&(b.slot, b.gen)).copied().unwrap_or_default();
                if l.connections == 0 && l.sessions == 0 && self.drained_reported.insert(key) {
                    log::info!(
                        "VIP {}: draining backend {} has no live connection or session left; \
                         it can be removed safely (lb-ctl backend remove {} {} --protocol {})",
                        v.spec.id,
                        b.endpoint,
                        v.spec.id.endpoint,
                        b.endpoint,
                        v.spec.id.protocol.as_str()
                    );
                }
            }
        }
        self.drained_reported.retain(|k| draining.contains(k));
    }

    /// The data path's counters and the devices' XDP error counters.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn stats(&self) -> Result<crate::dataplane::Stats> {
        let mut stats = self.dataplane.tables.stats(&self.services)?;
        stats.device_xdp_errors = crate::ethtool::xdp_errors(&self.ifaces);
        let t = &self.tables;
        stats.table_entries = vec![
            ("connections".into(), t.connections),
            ("half_open".into(), t.half_open),
            ("sessions".into(), t.sessions),
            ("pending".into(), t.pending),
        ];
        stats.half_open_evictions = t.evicted;
        stats.cluster = self.cluster.as_ref().map(|c| c.snapshot());
        if let Some(h) = &self.http {
            stats.http = lock(&h.stats)
                .iter()
                .map(|((vip, b), c)| (*vip, *b, *c))
                .collect();
        }
        stats.last_sweep_seconds = self.last_sweep.map(|(_, took, _)| took.as_secs_f64());
        stats.sweep_deleted = TABLES
            .iter()
            .zip(self.swept_total)
            .map(|(t, v)| ((*t).to_string(), v))
            .collect();
        let book = lock(&self.health);
        stats.backend_states = self
            .services
            .vips()
            .flat_map(|v| {
                let book = &book;
                v.backends
                    .iter()
                    .map(move |b| crate::dataplane::BackendState {
                        vip: v.spec.id,
                        backend: b.endpoint,
                        state: b.state().to_string(),
                        up: !b.down,
                        checks: book
                            .get(&(v.spec.id, b.endpoint))
                            .map(|r| (r.checks_ok, r.checks_failed)),
                    })
            })
            .collect();
        Ok(stats)
    }

    /// Apply a change to a copy of the model, then to the maps; on any error
    /// neither changes.
    fn change(
        &mut self,
        edit: impl FnOnce(&mut Services) -> Result<String, ServiceError>,
    ) -> Response {
        let mut next = self.services.clone();
        let message = match edit(&mut next) {
            Ok(m) => m,
            Err(e) => {
                return Response::Error {
                    message: e.to_string(),
                    kind: ErrorKind::of(&e),
                }
            }
        };
        self.replace(next, message)
    }

    /// Move the tables from the current model to `next`; on failure both
    /// stay as they were.
    fn replace(&mut self, next: Services, message: String) -> Response {
        let bound = match self.bind_new_http(&next) {
            Ok(b) => b,
            Err(message) => {
                return Response::Error {
                    message,
                    kind: ErrorKind::Conflict,
                }
            }
        };
        if let Err(e) = self.dataplane.tables.apply(&self.services, &next) {
            if let Err(back) = self.dataplane.tables.apply(&next, &self.services) {
                log::error!("restoring the tables after a failed change: {back}");
            }
            return Response::Error {
                message: format!("the kernel refused the change: {e}"),
                kind: ErrorKind::Kernel,
            };
        }
        log_rotation_changes(&self.services, &next);
        self.services = next;
        self.publish_http(bound);
        self.resolve_dsr_backends();
        log::info!("{message}");
        if let Some(cluster) = &self.cluster {
            cluster.update(crate::cluster::Directory::new(&self.services));
        }
        self.targets.send_if_modified(|t| {
            let new = targets(&self.services);
            let changed = *t != new;
            *t = new;
            changed
        });
        Response::Done { message }
    }

    /// Apply a health-check verdict.
    pub fn set_down(&mut self, vip: VipId, backend: Endpoint, down: bool, reason: &str) {
        let state = if down { "down" } else { "up" };
        let response = self.change(|s| {
            s.set_down(&vip, backend, down)
                .map(|()| format!("VIP {vip}: backend {backend} is {state}: {reason}"))
        });
        if let Response::Error { message, .. } = response {
            log::warn!("VIP {vip}: backend {backend} would be {state} ({reason}), but: {message}");
        }
    }

    /// Serve one control request.
    pub fn handle(&mut self, request: Request) -> Response {
        let err = |e: &dyn std::fmt::Display| Response::Error {
            message: e.to_string(),
            kind: ErrorKind::Kernel,
        };
        match request {
            Request::VipAdd { spec } => {
                let id = spec.id;
                self.change(|s| s.add_vip(*spec).map(|()| format!("added VIP {id}")))
            }
            Request::VipRemove { vip } => {
                self.change(|s| s.remove_vip(&vip).map(|_| format!("removed VIP {vip}")))
            }
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
            }),
            Request::BackendRemove { vip, backend } => self.change(|s| {
                s.remove_backend(&vip, backend)
                    .map(|_| format!("removed backend {backend} from VIP {vip}"))
            }),
            Request::BackendDrain {
                vip,
                backend,
                repin,
            } => self.change(|s| {
                s.drain(&vip, backend, repin).map(|()| {
                    format!(
                        "VIP {vip}: backend {backend} is draining: no new client; {}",
                        if repin {
                            "its pinned clients move at their next connection"
                        } else {
                            "its pinned clients stay until their session ends"
                        }
                    )
                })
            }),
            Request::BackendEnable { vip, backend } => self.change(|s| {
                s.enable(&vip, backend)
                    .map(|()| format!("VIP {vip}: backend {backend} is enabled: back in rotation"))
            }),
            Request::BackendList { vip, protocol } => {
                let vips: Vec<_> = self
                    .services
                    .vips()
                    .filter(|v| vip.is_none_or(|e| v.spec.id.endpoint == e))
                    .filter(|v| protocol.is_none_or(|p| v.spec.id.protocol == p))
                    .collect();
                if vips.is_empty() {
                    if let Some(e) = vip {
                        return Response::Error {
                            message: format!("no VIP on {e} (see `lb-ctl vip list`)"),
                            kind: ErrorKind::NotFound,
                        };
                    }
                }
                match self.backend_rows(&vips) {
                    Ok(backends) => Response::Backends { backends },
                    Err(e) => err(&e),
                }
            }
            Request::BackendWeight {
                vip,
                backend,
                weight,
            } => self.change(|s| {
                s.set_weight(&vip, backend, weight)
                    .map(|()| format!("VIP {vip}: backend {backend} has weight {weight}"))
            }),
            Request::Status => Response::Status {
                status: self.status(),
            },
            Request::Stats => match self.stats() {
                Ok(stats) => Response::Stats { stats },
                Err(e) => err(&e),
            },
        }
    }
}

/// Sweep the tables without holding the controller: only the sweeper's
/// setup (its own map references and the timeouts) takes the lock, so the
/// control socket answers while millions of entries are scanned.
fn sweep_tables(controller: &Mutex<Controller>) {
    let (sweeper, cluster) = {
        let c = lock(controller);
        let share = match (&c.cluster, crate::dataplane::now_ns()) {
            (Some(cluster), Ok(now)) => cluster.due(now),
            _ => std::collections::HashMap::new(),
        };
        (
            c.dataplane.tables.sweeper(&c.services, share),
            c.cluster.clone(),
        )
    };
    match sweeper.and_then(crate::dataplane::Sweeper::run) {
        Ok(r) => {
            // Without the controller: a pass over a million sessions
            // takes a while.
            if let Some(cluster) = cluster {
                cluster.publish(&r.to_share);
            }
            log::debug!(
                "sweep: deleted {} of {} connection entries, {} of {} unconfirmed-flow entries, \
                 {} of {} sessions and {} of {} pending sessions in {:.3?}",
                r.connections.deleted,
                r.connections.scanned,
                r.half_open.deleted,
                r.half_open.scanned,
                r.sessions.deleted,
                r.sessions.scanned,
                r.pending.deleted,
                r.pending.scanned,
                r.elapsed
            );
            let mut c = lock(controller);
            c.resolve_dsr_backends();
            c.report_drained(&r.live);
            c.account(&r);
            let deleted = [
                r.connections.deleted,
                r.half_open.deleted,
                r.sessions.deleted,
                r.pending.deleted,
            ];
            for (total, d) in c.swept_total.iter_mut().zip(deleted) {
                *total += d;
            }
            c.last_sweep = Some((std::time::Instant::now(), r.elapsed, deleted));
        }
        Err(e) => log::error!("sweep failed: {e}"),
    }
}

/// How often the devices' XDP error counters are read.
const XDP_ERROR_WATCH: std::time::Duration = std::time::Duration::from_secs(2);

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
    let cluster = config
        .cluster
        .as_ref()
        .map(|c| c.settings(opts.node.as_deref()))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let object = match &opts.program {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading the XDP program {}", path.display()))?,
        ),
        None => None,
    };
    // Choose the mode before touching anything: an impossible native
    // attach is refused with nothing changed.
    let mut facts = Vec::new();
    for name in &opts.ifaces {
        let index = nix::net::if_::if_nametoindex(name.as_str())
            .map_err(|_| anyhow::anyhow!("interface {name:?} does not exist"))?;
        facts.push(
            crate::netdev::facts(index).with_context(|| format!("inspecting interface {name}"))?,
        );
    }
    let choice = crate::xdpmode::choose(opts.xdp_mode, &facts).map_err(anyhow::Error::msg)?;
    // The `mode: http` VIPs' sockets and the cookie key, before anything
    // is changed: a port taken or a key file unreadable is refused here.
    let mut http_bound = Vec::new();
    for v in services
        .vips()
        .filter(|v| v.spec.mode == crate::services::Mode::Http)
    {
        if http_bound.is_empty() {
            crate::cookie::Keys::load_or_create(&config.http.cookie_key_file)
                .map_err(anyhow::Error::msg)?;
        }
        http_bound.push((
            v.spec.id,
            crate::proxy::bind(v.spec.id).map_err(anyhow::Error::msg)?,
        ));
    }
    sysctl::ensure_bpffs(&opts.bpffs)?;
    let _owner = crate::pins::lock(
        &opts.bpffs,
        &format!(
            "pid {}, control socket {}",
            std::process::id(),
            opts.socket.display()
        ),
    )?;
    let dirs = crate::pins::PinDirs::new(&opts.bpffs);
    for dir in [&dirs.root, &dirs.maps, &dirs.links] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let entries: Vec<String> = std::fs::read_dir(&dirs.root)
        .with_context(|| format!("reading {}", dirs.root.display()))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .collect();
    crate::pins::check_layout(&dirs.root, &entries)?;
    let had_links = opts.ifaces.iter().any(|i| dirs.link(i).exists());
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

    // Every refusal above leaves the host as it was; from here on the
    // settings are put back if the attach fails (unless a data path that
    // was already running keeps using them).
    let sysctl_changes = sysctl::prepare_forwarding(&opts.ifaces)?;
    let mut dataplane = match Dataplane::load(&LoadOptions {
        max_connections: config.limits.max_connections,
        max_sessions: config.limits.max_sessions,
        max_half_open: config.limits.max_half_open,
        pin_dir: Some(dirs.maps.clone()),
        object,
        shared: cluster.is_some(),
    }) {
        Ok(d) => d,
        Err(e) => {
            if !had_links {
                sysctl::restore(&sysctl_changes);
            }
            return Err(anyhow::Error::new(e).context("loading the XDP program"));
        }
    };
    let setup = (|| -> Result<(Services, Vec<crate::dataplane::Attachment>)> {
        // Tables kept by an earlier controller are moved on to this config
        // without a gap: the ids they use stay valid.
        let kept = dataplane.tables.kept()?;
        let services = services.on_kept_ids(&kept)?;
        dataplane
            .tables
            .set_settings(&config.timeouts.to_settings())?;
        dataplane
            .tables
            .apply(&Services::from_kept(&kept), &services)?;
        // Kept VIP entries carry the last controller's sharing flag.
        dataplane.tables.rewrite_vips(&services)?;
        let attached = dataplane.attach(&opts.ifaces, choice.mode, Some(&dirs.links))?;
        Ok((services, attached))
    })();
    let (services, attached) = match setup {
        Ok(x) => x,
        Err(e) => {
            if had_links {
                // The data path that ran before keeps running.
                dataplane.release();
            } else {
                dataplane.detach();
                if !opts.keep_state {
                    dataplane.unpin();
                }
                sysctl::restore(&sysctl_changes);
            }
            return Err(e);
        }
    };
    let adopted: Vec<&str> = attached
        .iter()
        .filter(|a| a.adopted)
        .map(|a| a.iface.as_str())
        .collect();
    log::info!(
        "attached to {} in {} mode ({}); {} VIP(s); maps pinned in {}; control socket {}",
        opts.ifaces.join(", "),
        choice.mode,
        choice.why,
        services.vips().count(),
        dirs.maps.display(),
        opts.socket.display()
    );
    if !adopted.is_empty() {
        log::info!(
            "took over the running data path on {} (program replaced atomically, kept connections and sessions in use)",
            adopted.join(", ")
        );
    }

    let mut c = Controller::new(services, dataplane, opts.ifaces.clone());
    c.mode = (choice.mode.to_string(), choice.why.clone());
    c.cookie_key_file = config.http.cookie_key_file.clone();
    c.start_http(http_bound).map_err(anyhow::Error::msg)?;
    if let Some(settings) = cluster {
        log::info!(
            "cluster: sharing sessions through {} (stream {:?}) as node {:?}",
            settings.store,
            settings.stream,
            settings.node
        );
        let sessions = c.dataplane.tables.sessions_handle()?;
        let ring = c.dataplane.session_events.take();
        let lost = c.dataplane.session_events_lost.take();
        c.cluster = Some(Arc::new(crate::cluster::store::Cluster::start(
            settings,
            crate::cluster::Directory::new(&c.services),
            sessions,
            ring,
            lost,
        )?));
    }
    c.resolve_dsr_backends();
    let controller = Arc::new(Mutex::new(c));
    tokio::spawn(crate::health::supervise(Arc::clone(&controller)));
    // The driver's XDP error counters: a warning while they grow.
    let mut xdp_watch = crate::ethtool::Watch::default();
    xdp_watch.observe(crate::ethtool::xdp_errors(&opts.ifaces));
    let mut watch_tick = tokio::time::interval(XDP_ERROR_WATCH);
    watch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    watch_tick.tick().await;
    if let Some(metrics) = metrics {
        log::info!(
            "serving metrics on http://{}/metrics",
            metrics.local_addr()?
        );
        let app = crate::api::metrics_router(Arc::clone(&controller));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, app).await {
                log::error!("metrics endpoint: {e}");
            }
        });
    }
    let sweeping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut sweep = tokio::time::interval(config.sweeper.interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.tick().await;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let api = crate::api::router(Arc::clone(&controller));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, api).await {
            log::error!("control socket: {e}");
        }
    });
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let Some(path) = opts.config.clone() else {
                    log::warn!("SIGHUP: no --config file to reload");
                    continue;
                };
                let c = Arc::clone(&controller);
                let running = config.clone();
                let done = tokio::task::spawn_blocking(move || lock(&c).reload(&path, &running)).await;
                match done {
                    Ok(Ok(_)) => {} // logged by the change itself
                    Ok(Err(e)) => log::error!("reload refused, nothing changed: {e:#}"),
                    Err(e) => log::error!("reload: {e}"),
                }
            }
            _ = watch_tick.tick() => {
                for (iface, lost) in xdp_watch.observe(crate::ethtool::xdp_errors(&opts.ifaces)) {
                    log::warn!("{}", crate::ethtool::warning(&iface, lost, choice.mode));
                }
            }
            _ = sweep.tick() => {
                // Off the loop, so that control requests are served
                // meanwhile; a sweep still running skips this tick.
                if !sweeping.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    let c = Arc::clone(&controller);
                    let busy = Arc::clone(&sweeping);
                    tokio::task::spawn_blocking(move || {
                        sweep_tables(&c);
                        busy.store(false, std::sync::atomic::Ordering::Release);
                    });
                }
            }
        }
    }
    let mut c = lock(&controller);
    if opts.keep_state {
        c.dataplane.release();
        log::info!(
            "stopping with --keep-state: the program stays attached to {} and keeps forwarding \
             with the tables pinned in {}; the next `lb-ctl attach` takes over, `lb-ctl detach` removes it",
            opts.ifaces.join(", "),
            dirs.root.display()
        );
    } else {
        log::info!("stopping: detaching from {}", opts.ifaces.join(", "));
        c.dataplane.detach();
        c.dataplane.unpin();
        let _ = std::fs::remove_dir(&dirs.links);
        let _ = std::fs::remove_dir(&dirs.root);
        sysctl::restore(&sysctl_changes);
    }
    drop(socket_guard);
    Ok(())
}

/// Lock, also after a panic elsewhere (the state stays usable).
pub fn lock<T>(c: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Log the VIPs whose selection table becomes empty (no backend takes new
/// clients: new connections are dropped) or usable again, once per
/// transition.
fn log_rotation_changes(old: &Services, new: &Services) {
    for v in new.vips() {
        let Some(before) = old.vip(&v.spec.id) else {
            continue;
        };
        if v.backends.is_empty() {
            continue;
        }
        match (before.table.is_empty(), v.table.is_empty()) {
            (false, true) => log::warn!(
                "VIP {}: no backend up{}; new connections are dropped (counted as drop_no_backend)",
                v.spec.id,
                if v.backends.iter().all(|b| b.down) {
                    ""
                } else {
                    " and not draining"
                }
            ),
            (true, false) => log::info!(
                "VIP {}: a backend takes new clients again ({} of {})",
                v.spec.id,
                v.backends.iter().filter(|b| b.takes_new_clients()).count(),
                v.backends.len()
            ),
            _ => {}
        }
    }
}

struct SocketGuard(PathBuf);
impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `lb-ctl detach`: remove what a controller left running on `ifaces` (a
/// pinned attachment each), and, once no interface is attached any more,
/// every table pinned under `<bpffs>/lb` (of any layout). Returns what was
/// done, a line each.
///
/// # Errors
/// When bpffs cannot be had or a pin cannot be removed.
pub fn detach(ifaces: &[String], bpffs: &std::path::Path) -> Result<Vec<String>> {
    sysctl::ensure_bpffs(bpffs)?;
    let dirs = crate::pins::PinDirs::new(bpffs);
    let mut done = Vec::new();
    for iface in ifaces {
        sysctl::check_iface_name(iface)?;
        let path = dirs.link(iface);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            done.push(format!("detached lb from {iface}"));
        } else {
            done.push(format!(
                "{iface}: no lb attachment pinned at {}",
                path.display()
            ));
        }
    }
    let links_left = std::fs::read_dir(&dirs.links).map_or(0, Iterator::count);
    if links_left > 0 {
        done.push(format!(
            "kept the tables in {}: {links_left} other interface(s) still attached",
            dirs.root.display()
        ));
        return Ok(done);
    }
    let _ = std::fs::remove_dir(&dirs.links);
    if let Ok(entries) = std::fs::read_dir(&dirs.root) {
        for e in entries.filter_map(std::result::Result::ok) {
            let path = e.path();
            if path.is_dir() {
                crate::dataplane::remove_pins(&path);
                if path.exists() {
                    log::warn!("{} holds files lb does not know; left it", path.display());
                    continue;
                }
            } else if lb_common::map_names::ALL
                .iter()
                .any(|n| e.file_name().to_str() == Some(n))
            {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            } else {
                continue;
            }
            done.push(format!("removed the tables pinned at {}", path.display()));
        }
    }
    let _ = std::fs::remove_dir(&dirs.root);
    Ok(done)
}
