//! The controller: the model (`model::services`) and the kernel tables it
//! describes, kept in step. Every change (API, SIGHUP, health verdict) is
//! made on a copy of the model, validated, written to the maps, and only
//! then becomes the model; the layer-7 proxy, the health checks and the
//! cluster follow it.
//!
//! - [`state`]: what the controller holds;
//! - [`account`]: what the sweeps tell about the tables;
//! - [`commands`]: the requests it serves and their answers;
//! - [`report`]: `status`, `stats` and `backend list`, composed here from
//!   the kernel's counters and the features' own;
//! - [`sweep`]: the sweep tick, run off the controller's lock.

pub mod account;
pub mod commands;
pub mod report;
pub mod state;
pub mod sweep;

use std::{collections::HashMap, sync::Arc};

use anyhow::Result;

use crate::model::{
    config::Config,
    endpoint::{Endpoint, VipId},
    services::{ServiceError, Services},
};
use commands::{ErrorKind, Request, Response};
use state::{Controller, HttpPart};

/// The listening sockets just bound and the TLS servers of a change to
/// the `mode: http` VIPs.
type HttpChange = (
    Vec<(VipId, std::net::TcpListener)>,
    HashMap<VipId, crate::l7::tls::Server>,
);

/// Whether a change reads the VIPs' certificate files again (a reload) or
/// only those of VIPs whose `tls:` is new or changed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Certificates {
    Keep,
    Reread,
}

impl Controller {
    /// Prepare the `mode: http` VIPs of `next`: bind the sockets of those
    /// not served yet (and start the proxy, with its key, at the first) and
    /// load the TLS servers. Nothing is started when anything fails.
    ///
    /// # Errors
    /// Naming the VIP and the address, the file, or the key file.
    fn prepare_http(&mut self, next: &Services, certs: Certificates) -> Result<HttpChange, String> {
        let http: Vec<&crate::model::services::Vip> = next
            .vips()
            .filter(|v| v.spec.mode == crate::model::services::Mode::Http)
            .collect();
        if http.is_empty() {
            return Ok((Vec::new(), HashMap::new()));
        }
        self.ensure_proxy()?;
        let tls = self.load_tls(next, certs)?;
        let bound = http
            .iter()
            .map(|v| v.spec.id)
            .filter(|id| !self.http.as_ref().is_some_and(|h| h.listeners.serves(id)))
            .map(|id| crate::l7::listen::bind(id).map(|l| (id, l)))
            .collect::<Result<_, _>>()?;
        Ok((bound, tls))
    }

    /// The TLS servers of `next`'s VIPs with `tls:`: those running kept
    /// (unless `certs` says to reread), the others loaded from their files.
    fn load_tls(
        &self,
        next: &Services,
        certs: Certificates,
    ) -> Result<HashMap<VipId, crate::l7::tls::Server>, String> {
        let part = self.http.as_ref().ok_or("the proxy did not start")?;
        let now = std::time::SystemTime::now();
        let mut tls = HashMap::new();
        for v in next.vips() {
            let Some(spec) = &v.spec.tls else { continue };
            let id = v.spec.id;
            let kept = part
                .tls
                .get(&id)
                .filter(|t| certs == Certificates::Keep && t.spec == *spec);
            let server = match kept {
                Some(t) => t.clone(),
                None => {
                    let loaded = spec.load(now).map_err(|e| format!("VIP {id}: {e}"))?;
                    for w in crate::model::tls::warnings(&loaded, now) {
                        log::warn!("VIP {id}: {w}");
                    }
                    crate::l7::tls::Server::new(spec, loaded, &part.tls_shared)
                        .map_err(|e| format!("VIP {id}: {e}"))?
                }
            };
            tls.insert(id, server);
        }
        Ok(tls)
    }

    /// Start the proxy (with its cookie key) unless it runs.
    fn ensure_proxy(&mut self) -> Result<(), String> {
        if self.http.is_none() {
            let keys = crate::l7::cookie::Keys::load_or_create(&self.cookie_key_file)?;
            let tls = HashMap::new();
            let (view, rx) =
                tokio::sync::watch::channel(Arc::new(crate::l7::proxy::view(&self.services, &tls)));
            let stats = crate::l7::proxy::HttpStats::default();
            let proxy = crate::l7::proxy::Proxy::new(keys, rx, Arc::clone(&stats));
            self.http = Some(HttpPart {
                view,
                listeners: crate::l7::listen::Listeners::new(proxy),
                stats,
                tls,
                tls_shared: crate::l7::tls::Shared::new()?,
            });
        }
        Ok(())
    }

    /// Serve the `mode: http` VIPs whose sockets were bound before the
    /// attach.
    ///
    /// # Errors
    /// When the cookie key cannot be had, or a VIP's certificates.
    pub fn start_http(&mut self, bound: Vec<(VipId, std::net::TcpListener)>) -> Result<(), String> {
        if !bound.is_empty() {
            self.ensure_proxy()?;
            let tls = self.load_tls(&self.services, Certificates::Reread)?;
            self.publish_http((bound, tls));
        }
        Ok(())
    }

    /// Publish the model and the TLS servers to the proxy, start the
    /// listeners just bound, stop those of VIPs gone.
    fn publish_http(&mut self, (bound, tls): HttpChange) {
        if let Some(h) = &mut self.http {
            let view = crate::l7::proxy::view(&self.services, &tls);
            h.tls = tls;
            h.listeners.retain(&view);
            h.view.send_replace(Arc::new(view));
            for (id, listener) in bound {
                log::info!("VIP {id}: serving HTTP (layer-7 proxy) on {}", id.endpoint);
                h.listeners.start(id, listener);
            }
        }
    }

    /// Bring the announced VIPs in line with the model (and, after the
    /// start's `announce.delay`, announce what waited for it).
    pub fn announce(&mut self) {
        if let Some(a) = &mut self.announcer {
            a.apply(&self.services);
        }
    }

    /// Withdraw every announced VIP (a stop without `--keep-state`);
    /// returns how long to keep forwarding before stopping.
    pub fn withdraw(&mut self) -> Option<std::time::Duration> {
        let a = self.announcer.as_mut()?;
        a.withdraw_all(&self.services);
        Some(a.config().drain)
    }

    /// Take a changed `announce:` block after a reload.
    fn reannounce(&mut self, next: Option<crate::model::announce::Announce>) {
        let result = match (self.announcer.take(), next) {
            (Some(a), None) => {
                a.retire(&self.services);
                Ok(())
            }
            (Some(mut a), Some(config)) => {
                let r = a.reconfigure(config, &self.services);
                self.announcer = Some(a);
                r
            }
            (None, Some(config)) => {
                crate::announce::Announcer::start(config, self.announce_state_file.clone()).map(
                    |mut a| {
                        a.apply(&self.services);
                        self.announcer = Some(a);
                    },
                )
            }
            (None, None) => Ok(()),
        };
        if let Err(e) = result {
            log::error!("announce: {e}");
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
            .filter(|v| v.spec.forwarding == crate::model::services::Forwarding::Dsr)
        {
            for b in &v.backends {
                let _ = socket.send_to(b"", (b.endpoint.addr, 9));
            }
        }
    }

    /// Apply the config file again (`lb-ctl reload`, SIGHUP): its VIPs and
    /// backends become the model, on the ids in use (kept sessions and
    /// connections stay valid), and its timeouts are written. A change of
    /// `limits:` or `cluster:` needs a restart and is refused; one of
    /// `http:` takes effect at the next restart (said in the
    /// answer). A refused file changes nothing, and the refusal is logged.
    ///
    /// # Errors
    /// Naming what is wrong; nothing is applied then.
    pub fn reload(&mut self) -> Result<String> {
        let done = self.reload_file();
        if let Err(e) = &done {
            log::error!(
                "reload refused, nothing changed: {}",
                crate::error_text::text(e.as_ref())
            );
        }
        done
    }

    fn reload_file(&mut self) -> Result<String> {
        let Some(path) = self.config_file.clone() else {
            anyhow::bail!("no config file to reload: lb-ctl attach was started without --config");
        };
        let running = &self.running;
        let (config, services) = Config::load(&path)?;
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
        // A new announce interface must be had before anything changes.
        if let Some(a) = &config.announce {
            if running.announce.as_ref().map(|r| &r.interface) != Some(&a.interface) {
                crate::kernel::vipaddr::ensure(&a.interface)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            }
        }
        let mut later = Vec::new();
        if config.http != running.http {
            later.push("http");
        }
        let next = services.on_current_ids(&self.services)?;
        let mut message = format!(
            "reloaded {}: {} VIP(s), {} backend(s)",
            path.display(),
            next.vips().count(),
            next.vips().map(|v| v.backends.len()).sum::<usize>()
        );
        if !later.is_empty() {
            message.push_str(&format!(
                "; the changes to {} take effect at the next restart",
                later.join(" and ")
            ));
        }
        let old_settings = self.dataplane.tables.settings()?;
        self.dataplane
            .tables
            .set_settings(&config.timeouts.to_settings())?;
        match self.replace_with(next, message, Certificates::Reread) {
            Response::Done { message } => {
                self.running.timeouts = config.timeouts;
                // The daemon's sweep timer follows it.
                self.running.sweeper = config.sweeper;
                if config.announce != self.running.announce {
                    self.reannounce(config.announce.clone());
                    self.running.announce = config.announce;
                }
                Ok(message)
            }
            Response::Error { message, .. } => {
                let _ = self.dataplane.tables.set_settings(&old_settings);
                anyhow::bail!("{message}")
            }
            _ => unreachable!("replace answers Done or Error"),
        }
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
        self.replace_with(next, message, Certificates::Keep)
    }

    fn replace_with(&mut self, next: Services, message: String, certs: Certificates) -> Response {
        let http = match self.prepare_http(&next, certs) {
            Ok(h) => h,
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
        self.announce();
        self.publish_http(http);
        self.resolve_dsr_backends();
        log::info!("{message}");
        if let Some(cluster) = &self.cluster {
            cluster.update(crate::cluster::Directory::new(&self.services));
        }
        self.targets.send_if_modified(|t| {
            let new = crate::health::targets(&self.services);
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
                vips: self.vip_rows(),
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
            Request::Reload => match self.reload() {
                Ok(message) => Response::Done { message },
                Err(e) => Response::Error {
                    message: crate::error_text::text(e.as_ref()),
                    kind: ErrorKind::Invalid,
                },
            },
            Request::Config => Response::Config {
                config: Box::new(Config::of_running(&self.services, &self.running)),
            },
            Request::Stats => match self.stats() {
                Ok(stats) => Response::Stats { stats },
                Err(e) => err(&e),
            },
        }
    }
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
