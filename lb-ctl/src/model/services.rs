//! The desired state of the balancer: virtual services and their backends.
//!
//! Every change (from the config file or the control socket) is made on a
//! copy of this model and validated here before anything reaches the kernel,
//! so a refused change leaves nothing applied. The model also owns the ids:
//! VIP ids index the per-VIP arrays, backend ids the `BACKENDS` array, and a
//! backend slot's generation grows each time it is reused so old sessions
//! never follow a slot to a different backend.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use lb_common::{MAX_BACKENDS, MAX_MAGLEV_VIPS, MAX_VIPS};
use serde::{Deserialize, Serialize};

use super::endpoint::{Endpoint, Protocol, VipId};
use super::sched::{build_table, SchedError, Scheduler, MAX_WEIGHT};

/// What an operator says about a virtual service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipSpec {
    pub name: Option<String>,
    pub id: VipId,
    pub scheduler: Scheduler,
    /// 0 turns persistence off.
    #[serde(with = "humantime_serde")]
    pub persistence_timeout: Duration,
    /// IPv4 clients sharing this prefix length share a session.
    pub persistence_netmask: u8,
    /// IPv6 clients sharing this prefix length share a session (default
    /// 64: a household, whose devices rotate temporary addresses in it).
    #[serde(default = "crate::model::config::default_netmask6")]
    pub persistence_netmask6: u8,
    /// A session ends this long after it began, busy or not; 0: never.
    #[serde(default, with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// Without one, every backend counts as up.
    #[serde(default)]
    pub health_check: Option<crate::model::health::HealthCheck>,
    /// `tcp`: the XDP path; `http`: the layer-7 proxy.
    #[serde(default)]
    pub mode: Mode,
    /// Cookie persistence (`mode: http` only).
    #[serde(default)]
    pub cookie: Option<crate::model::cookie::CookieSpec>,
    /// `nat` (default): the balancer translates both directions; `dsr`:
    /// the backends answer the clients directly.
    #[serde(default)]
    pub forwarding: Forwarding,
    /// TLS termination (`mode: http` only): certificates, ALPN, versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::model::tls::TlsSpec>,
}

/// How packets reach the backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Destination NAT to the backend; replies come back through the
    /// balancer and are translated back.
    #[default]
    Nat,
    /// Layer-2 direct server return: only the MAC addresses change; the
    /// backends hold the VIP and answer the clients themselves.
    Dsr,
}

/// Where a VIP is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The XDP program (layer 4, NAT).
    #[default]
    Tcp,
    /// The layer-7 proxy (HTTP/1.1, cookie persistence).
    Http,
}

/// How a draining backend treats the clients pinned to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// Move them at their next new connection (else they stay until their
    /// session ends).
    pub repin: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub endpoint: Endpoint,
    pub weight: u32,
    /// Slot in `BACKENDS`.
    pub slot: u32,
    pub gen: u32,
    /// Failed its health checks (`fall` in a row, not yet `rise` again).
    #[serde(default)]
    pub down: bool,
    /// Taken out by `backend drain` until `backend enable`.
    #[serde(default)]
    pub drain: Option<Drain>,
}

impl Backend {
    pub(super) fn new(endpoint: Endpoint, weight: u32, slot: u32, gen: u32) -> Self {
        Self {
            endpoint,
            weight,
            slot,
            gen,
            down: false,
            drain: None,
        }
    }

    /// Whether new clients may be sent to it (its place in the selection
    /// table).
    #[must_use]
    pub const fn takes_new_clients(&self) -> bool {
        !self.down && self.drain.is_none()
    }

    /// Whether clients pinned to it stay on it.
    #[must_use]
    pub const fn keeps_sessions(&self) -> bool {
        !self.down && !matches!(self.drain, Some(Drain { repin: true }))
    }

    /// `up`, `down`, `draining` (or `down, draining`).
    #[must_use]
    pub const fn state(&self) -> &'static str {
        match (self.down, self.drain.is_some()) {
            (false, false) => "up",
            (false, true) => "draining",
            (true, false) => "down",
            (true, true) => "down, draining",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vip {
    pub spec: VipSpec,
    /// Index in the per-VIP arrays.
    pub slot: u32,
    pub backends: Vec<Backend>,
    /// Selection table (backend slots), rebuilt on every backend change
    /// (not in listings: a Maglev table has 65 537 slots).
    #[serde(skip)]
    pub table: Vec<u32>,
    /// The Maglev table slot of a `maglev` VIP.
    #[serde(default)]
    pub maglev_slot: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    #[error("VIP {0}: port 0 is not a service port")]
    VipPortZero(VipId),
    #[error("VIP {0}: {1} is not a usable service address")]
    VipAddress(VipId, IpAddr),
    #[error(
        "VIP {vip}: backend {backend} is of the other address family: a VIP's backends are of its family"
    )]
    Family { vip: VipId, backend: Endpoint },
    #[error("VIP {0} already exists")]
    DuplicateVip(VipId),
    #[error("VIP {0} does not exist (see `lb-ctl vip list`)")]
    UnknownVip(VipId),
    #[error("VIP {0}: persistence netmask6 /{1} is out of range (0-128)")]
    Netmask6(VipId, u8),
    #[error("VIP {0}: persistence netmask /{1} is out of range (0-32)")]
    Netmask(VipId, u8),
    #[error("too many VIPs: at most {MAX_VIPS}")]
    TooManyVips,
    #[error("VIP {0}: too many maglev VIPs: at most {MAX_MAGLEV_VIPS}")]
    TooManyMaglev(VipId),
    #[error("VIP {vip}: backend {backend}: port 0 is not a service port")]
    BackendPortZero { vip: VipId, backend: Endpoint },
    #[error("VIP {vip}: backend {backend}: {addr} is not a usable backend address")]
    BackendAddress {
        vip: VipId,
        backend: Endpoint,
        addr: IpAddr,
    },
    #[error("VIP {vip}: backend {backend}: weight {weight} is out of range (1-{MAX_WEIGHT})")]
    Weight {
        vip: VipId,
        backend: Endpoint,
        weight: u32,
    },
    #[error("VIP {vip}: backend {backend} already exists")]
    DuplicateBackend { vip: VipId, backend: Endpoint },
    #[error(
        "VIP {vip}: backend {backend}: with forwarding: dsr the backend's port must be the VIP's ({port}): packets keep their destination"
    )]
    DsrPort {
        vip: VipId,
        backend: Endpoint,
        port: u16,
    },
    #[error("VIP {vip}: backend {backend} does not exist (see `lb-ctl backend list`)")]
    UnknownBackend { vip: VipId, backend: Endpoint },
    #[error("too many backends: at most {MAX_BACKENDS} over all VIPs")]
    TooManyBackends,
    #[error("VIP {vip}: {source}")]
    Table { vip: VipId, source: SchedError },
    #[error("VIP {0}: {1}")]
    HealthCheck(VipId, String),
    #[error("VIP {vip}: backend {backend} is not draining")]
    NotDraining { vip: VipId, backend: Endpoint },
    #[error("VIP {0}: {1}")]
    Http(VipId, String),
}

fn usable(addr: IpAddr) -> bool {
    let broadcast = matches!(addr, IpAddr::V4(a) if a.is_broadcast());
    !(addr.is_unspecified() || broadcast || addr.is_multicast() || addr.is_loopback())
}

/// All virtual services, keyed by (address, port, protocol).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    pub(super) vips: BTreeMap<VipId, Vip>,
    /// Generation of every backend slot ever used.
    pub(super) backend_gens: BTreeMap<u32, u32>,
}

impl Services {
    pub fn vips(&self) -> impl Iterator<Item = &Vip> {
        self.vips.values()
    }

    #[must_use]
    pub fn vip(&self, id: &VipId) -> Option<&Vip> {
        self.vips.get(id)
    }

    /// The VIP in slot `slot`.
    #[must_use]
    pub fn vip_by_slot(&self, slot: u32) -> Option<&Vip> {
        self.vips.values().find(|v| v.slot == slot)
    }

    /// # Errors
    /// When the spec is invalid or the VIP exists.
    pub fn add_vip(&mut self, spec: VipSpec) -> Result<(), ServiceError> {
        let id = spec.id;
        if id.endpoint.port == 0 {
            return Err(ServiceError::VipPortZero(id));
        }
        if !usable(id.endpoint.addr) {
            return Err(ServiceError::VipAddress(id, id.endpoint.addr));
        }
        if spec.persistence_netmask > 32 {
            return Err(ServiceError::Netmask(id, spec.persistence_netmask));
        }
        if spec.persistence_netmask6 > 128 {
            return Err(ServiceError::Netmask6(id, spec.persistence_netmask6));
        }
        if let Some(check) = &spec.health_check {
            check
                .validate()
                .map_err(|e| ServiceError::HealthCheck(id, e))?;
        }
        match (spec.mode, &spec.cookie) {
            (Mode::Tcp, Some(_)) => {
                return Err(ServiceError::Http(
                    id,
                    "persistence.cookie needs mode: http (a tcp VIP has no cookies)".into(),
                ))
            }
            (Mode::Http, Some(c)) => c.validate().map_err(|e| ServiceError::Http(id, e))?,
            (Mode::Http, None) | (Mode::Tcp, None) => {}
        }
        if let Some(tls) = &spec.tls {
            if spec.mode != Mode::Http {
                return Err(ServiceError::Http(
                    id,
                    "tls needs mode: http (a tcp VIP forwards TLS untouched to its backends)"
                        .into(),
                ));
            }
            tls.check().map_err(|e| ServiceError::Http(id, e))?;
        }
        if spec.mode == Mode::Http && id.protocol != Protocol::Tcp {
            return Err(ServiceError::Http(
                id,
                "mode: http needs protocol: tcp".into(),
            ));
        }
        if spec.mode == Mode::Http && spec.forwarding == Forwarding::Dsr {
            return Err(ServiceError::Http(
                id,
                "forwarding: dsr needs mode: tcp (the proxy ends the client's connection)".into(),
            ));
        }
        if self.vips.contains_key(&id) {
            return Err(ServiceError::DuplicateVip(id));
        }
        let slot = (0..MAX_VIPS)
            .find(|s| !self.vips.values().any(|v| v.slot == *s))
            .ok_or(ServiceError::TooManyVips)?;
        let maglev_slot = self.free_maglev_slot(&spec)?;
        self.vips.insert(
            id,
            Vip {
                spec,
                slot,
                backends: Vec::new(),
                table: Vec::new(),
                maglev_slot,
            },
        );
        Ok(())
    }

    /// A Maglev table slot for `spec`, when it is a maglev VIP.
    pub(super) fn free_maglev_slot(&self, spec: &VipSpec) -> Result<Option<u32>, ServiceError> {
        if spec.scheduler != Scheduler::Maglev || spec.mode == Mode::Http {
            return Ok(None);
        }
        (0..MAX_MAGLEV_VIPS)
            .find(|m| !self.vips.values().any(|v| v.maglev_slot == Some(*m)))
            .map(Some)
            .ok_or(ServiceError::TooManyMaglev(spec.id))
    }

    /// # Errors
    /// When the VIP does not exist.
    pub fn remove_vip(&mut self, id: &VipId) -> Result<Vip, ServiceError> {
        self.vips.remove(id).ok_or(ServiceError::UnknownVip(*id))
    }

    /// # Errors
    /// When the VIP does not exist, the backend is invalid or exists, or the
    /// VIP's selection table would not fit.
    pub fn add_backend(
        &mut self,
        vip: &VipId,
        backend: Endpoint,
        weight: u32,
    ) -> Result<(), ServiceError> {
        if backend.port == 0 {
            return Err(ServiceError::BackendPortZero { vip: *vip, backend });
        }
        if !usable(backend.addr) {
            return Err(ServiceError::BackendAddress {
                vip: *vip,
                backend,
                addr: backend.addr,
            });
        }
        if backend.is_ipv6() != vip.endpoint.is_ipv6() {
            return Err(ServiceError::Family { vip: *vip, backend });
        }
        if weight == 0 || weight > MAX_WEIGHT {
            return Err(ServiceError::Weight {
                vip: *vip,
                backend,
                weight,
            });
        }
        let used: Vec<u32> = self
            .vips
            .values()
            .flat_map(|v| v.backends.iter().map(|b| b.slot))
            .collect();
        let v = self.vips.get(vip).ok_or(ServiceError::UnknownVip(*vip))?;
        if v.backends.iter().any(|b| b.endpoint == backend) {
            return Err(ServiceError::DuplicateBackend { vip: *vip, backend });
        }
        if v.spec.forwarding == Forwarding::Dsr && backend.port != vip.endpoint.port {
            return Err(ServiceError::DsrPort {
                vip: *vip,
                backend,
                port: vip.endpoint.port,
            });
        }
        let slot = (0..MAX_BACKENDS)
            .find(|s| !used.contains(s))
            .ok_or(ServiceError::TooManyBackends)?;
        let gen = self
            .backend_gens
            .get(&slot)
            .map_or(1, |g| g.wrapping_add(1));
        let mut v = v.clone();
        v.backends.push(Backend::new(backend, weight, slot, gen));
        rebuild(&mut v)?;
        self.backend_gens.insert(slot, gen);
        self.vips.insert(*vip, v);
        Ok(())
    }

    /// # Errors
    /// When the VIP or the backend does not exist.
    pub fn remove_backend(
        &mut self,
        vip: &VipId,
        backend: Endpoint,
    ) -> Result<Backend, ServiceError> {
        let v = self
            .vips
            .get_mut(vip)
            .ok_or(ServiceError::UnknownVip(*vip))?;
        let pos = v
            .backends
            .iter()
            .position(|b| b.endpoint == backend)
            .ok_or(ServiceError::UnknownBackend { vip: *vip, backend })?;
        let removed = v.backends.remove(pos);
        rebuild(v)?;
        Ok(removed)
    }

    /// Change one backend and rebuild its VIP's selection table; returns
    /// what `edit` returns.
    fn edit_backend<T>(
        &mut self,
        vip: &VipId,
        backend: Endpoint,
        edit: impl FnOnce(&mut Backend) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let v = self
            .vips
            .get_mut(vip)
            .ok_or(ServiceError::UnknownVip(*vip))?;
        let b = v
            .backends
            .iter_mut()
            .find(|b| b.endpoint == backend)
            .ok_or(ServiceError::UnknownBackend { vip: *vip, backend })?;
        let out = edit(b)?;
        rebuild(v)?;
        Ok(out)
    }

    /// Change a backend's weight (and so its share of new clients).
    ///
    /// # Errors
    /// When the VIP or the backend does not exist, or the weight is out of
    /// range.
    pub fn set_weight(
        &mut self,
        vip: &VipId,
        backend: Endpoint,
        weight: u32,
    ) -> Result<(), ServiceError> {
        if weight == 0 || weight > MAX_WEIGHT {
            return Err(ServiceError::Weight {
                vip: *vip,
                backend,
                weight,
            });
        }
        self.edit_backend(vip, backend, |b| {
            b.weight = weight;
            Ok(())
        })
    }

    /// Record a health-check verdict.
    ///
    /// # Errors
    /// When the VIP or the backend does not exist.
    pub fn set_down(
        &mut self,
        vip: &VipId,
        backend: Endpoint,
        down: bool,
    ) -> Result<(), ServiceError> {
        self.edit_backend(vip, backend, |b| {
            b.down = down;
            Ok(())
        })
    }

    /// Take a backend out of rotation: no new client reaches it; clients
    /// pinned to it stay until their session ends, or, with `repin`, move
    /// at their next new connection.
    ///
    /// # Errors
    /// When the VIP or the backend does not exist.
    pub fn drain(
        &mut self,
        vip: &VipId,
        backend: Endpoint,
        repin: bool,
    ) -> Result<(), ServiceError> {
        self.edit_backend(vip, backend, |b| {
            b.drain = Some(Drain { repin });
            Ok(())
        })
    }

    /// Put a draining backend back in rotation.
    ///
    /// # Errors
    /// When the VIP or the backend does not exist, or it is not draining.
    pub fn enable(&mut self, vip: &VipId, backend: Endpoint) -> Result<(), ServiceError> {
        self.edit_backend(vip, backend, |b| {
            if b.drain.take().is_none() {
                return Err(ServiceError::NotDraining { vip: *vip, backend });
            }
            Ok(())
        })
    }
}

/// The selection table holds the backends that take new clients (up and
/// not draining); with none, it is empty and the data path drops new
/// connections (counted as `drop_no_backend`).
pub(super) fn rebuild(v: &mut Vip) -> Result<(), ServiceError> {
    if v.spec.scheduler == Scheduler::Maglev {
        let keyed: Vec<(u32, u32, String)> = v
            .backends
            .iter()
            .filter(|b| b.takes_new_clients())
            .map(|b| (b.slot, b.weight, b.endpoint.to_string()))
            .collect();
        v.table = super::sched::build_maglev(&keyed, lb_common::MAGLEV_SIZE);
        return Ok(());
    }
    let pairs: Vec<(u32, u32)> = v
        .backends
        .iter()
        .filter(|b| b.takes_new_clients())
        .map(|b| (b.slot, b.weight))
        .collect();
    v.table = build_table(v.spec.scheduler, &pairs).map_err(|source| ServiceError::Table {
        vip: v.spec.id,
        source,
    })?;
    Ok(())
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
