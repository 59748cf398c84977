//! What the controller reports: `lb-ctl status`, `stats` (the metrics)
//! and `backend list`, composed from the kernel's counters, the sweeps'
//! figures, the health checks, the proxy and the cluster.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{account::TABLES, state::Controller};
use crate::{
    kernel::{fixed::capacity, stats::Traffic},
    model::endpoint::{Endpoint, VipId},
    sync::lock,
};

impl Controller {
    /// `lb-ctl status`.
    pub(super) fn status(&self) -> Status {
        let t = &self.tables;
        let d = &self.dataplane.tables;
        let table = |name: &str, capacity: u32, entries: u64| TableStatus {
            name: name.into(),
            capacity: u64::from(capacity),
            entries,
        };
        Status {
            interfaces: self.ifaces.clone(),
            mode: self.mode.0.clone(),
            mode_reason: self.mode.1.clone(),
            program_id: self.dataplane.program_id(),
            link_ids: self.dataplane.link_ids(),
            tables: vec![
                table("connections", d.max_connections, t.connections / 2),
                table("half_open", capacity(d.max_half_open), t.half_open),
                table("sessions", d.max_sessions, t.sessions),
                table("pending", capacity(d.max_half_open), t.pending),
            ],
            last_sweep: self.last_sweep.map(|(at, took, deleted)| SweepStatus {
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
            tls_certificates: self.tls_certificates(),
            announce: self.announcer.as_ref().map(|a| AnnounceStatus {
                interface: a.config().interface.clone(),
                when: a.config().when,
                delay_seconds: a.config().delay.as_secs_f64(),
                drain_seconds: a.config().drain.as_secs_f64(),
                addresses: a
                    .states()
                    .iter()
                    .map(|(address, state)| AnnouncedAddr {
                        address: *address,
                        state: state.clone(),
                    })
                    .collect(),
            }),
        }
    }

    /// The rows of `vip list`.
    /// The certificates of the VIPs with `tls:`, as loaded last: the VIP,
    /// the file and the end of its validity (Unix seconds).
    fn tls_certificates(&self) -> Vec<(VipId, String, i64)> {
        self.http.as_ref().map_or_else(Vec::new, |h| {
            let mut rows: Vec<(VipId, String, i64)> = h
                .tls
                .iter()
                .flat_map(|(id, s)| {
                    s.certificates
                        .iter()
                        .map(move |(file, end)| (*id, file.clone(), *end))
                })
                .collect();
            rows.sort();
            rows
        })
    }

    pub(super) fn vip_rows(&self) -> Vec<VipRow> {
        self.services
            .vips()
            .map(|v| VipRow {
                vip: v.clone(),
                announce: self
                    .announcer
                    .as_ref()
                    .and_then(|a| a.states().get(&v.spec.id.endpoint.addr).cloned()),
            })
            .collect()
    }
    /// After a sweep: the tables' sizes and the evictions so far.
    pub(super) fn account(&mut self, r: &crate::kernel::sweeper::SweepReport) {
        match self
            .dataplane
            .tables
            .reason_total(lb_common::Reason::HALF_OPEN_EVICTED)
        {
            Ok(evicted) => self.tables.sweep(r, evicted),
            Err(e) => log::warn!("reading the counters after a sweep: {e}"),
        }
    }

    /// The rows of `backend list` for `vips`.
    pub(super) fn backend_rows(
        &self,
        vips: &[&crate::model::services::Vip],
    ) -> Result<Vec<BackendRow>> {
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
    pub(super) fn report_drained(
        &mut self,
        live: &std::collections::HashMap<(u32, u32), crate::kernel::sweeper::Live>,
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
    pub fn stats(&self) -> Result<Stats> {
        let counted = self.dataplane.tables.stats(&self.services)?;
        let d = &self.dataplane.tables;
        let t = &self.tables;
        let book = lock(&self.health);
        let backend_states = self
            .services
            .vips()
            .flat_map(|v| {
                let book = &book;
                v.backends.iter().map(move |b| BackendState {
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
        let stats = Stats {
            vips: counted.vips,
            backends: counted.backends,
            reasons: counted.reasons,
            icmp: counted.icmp,
            max_conns: d.max_connections,
            max_sessions: d.max_sessions,
            max_half_open: capacity(d.max_half_open),
            device_xdp_errors: crate::kernel::ethtool::xdp_errors(&self.ifaces),
            backend_states,
            table_entries: vec![
                ("connections".into(), t.connections),
                ("half_open".into(), t.half_open),
                ("sessions".into(), t.sessions),
                ("pending".into(), t.pending),
            ],
            half_open_evictions: t.evicted,
            cluster: self.cluster.as_ref().map(|c| c.snapshot()),
            last_sweep_seconds: self.last_sweep.map(|(_, took, _)| took.as_secs_f64()),
            sweep_deleted: TABLES
                .iter()
                .zip(self.swept_total)
                .map(|(t, v)| ((*t).to_string(), v))
                .collect(),
            http: self.http.as_ref().map_or_else(Vec::new, |h| {
                lock(&h.stats)
                    .iter()
                    .map(|((vip, b), c)| (*vip, *b, *c))
                    .collect()
            }),
            tls_certificates: self.tls_certificates(),
            announced: self.announcer.as_ref().map_or_else(Vec::new, |a| {
                a.states()
                    .iter()
                    .map(|(addr, s)| (*addr, s.announced))
                    .collect()
            }),
        };
        Ok(stats)
    }
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
    /// The VIPs announced by BGP (`announce:` only).
    #[serde(default)]
    pub announce: Option<AnnounceStatus>,
    /// The certificates of the VIPs with `tls:`: the file and the end of
    /// its validity (Unix seconds).
    #[serde(default)]
    pub tls_certificates: Vec<(VipId, String, i64)>,
}

/// The announcements in [`Status`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AnnounceStatus {
    pub interface: String,
    pub when: crate::model::announce::When,
    pub delay_seconds: f64,
    pub drain_seconds: f64,
    pub addresses: Vec<AnnouncedAddr>,
}

/// One VIP address: announced or not, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnnouncedAddr {
    pub address: std::net::IpAddr,
    #[serde(flatten)]
    pub state: crate::model::announce::AddrState,
}

/// A row of `vip list`: the VIP, and its announcement (`announce:` only).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VipRow {
    #[serde(flatten)]
    pub vip: crate::model::services::Vip,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<crate::model::announce::AddrState>,
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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    pub vips: Vec<(VipId, Option<String>, Traffic)>,
    pub backends: Vec<(VipId, Endpoint, Traffic)>,
    pub reasons: Vec<(String, u64)>,
    /// ICMP errors translated (by direction) and passed (by reason).
    #[serde(default)]
    pub icmp: Vec<(String, u64)>,
    pub max_conns: u32,
    pub max_sessions: u32,
    /// The attached devices' own XDP error counters: `(interface,
    /// statistic, value)` (see `ethtool`).
    #[serde(default)]
    pub device_xdp_errors: Vec<(String, String, u64)>,
    /// Each backend's state and health-check counts.
    #[serde(default)]
    pub backend_states: Vec<BackendState>,
    /// Entries in each table after the last sweep.
    #[serde(default)]
    pub table_entries: Vec<(String, u64)>,
    /// Unconfirmed flows the LRU evicted to make room (estimated at each
    /// sweep from the counters and the table).
    #[serde(default)]
    pub half_open_evictions: u64,
    /// Sessions shared with the other hosts (`cluster:` only).
    #[serde(default)]
    pub cluster: Option<crate::cluster::store::Snapshot>,
    pub max_half_open: u32,
    /// How long the last sweep took.
    #[serde(default)]
    pub last_sweep_seconds: Option<f64>,
    /// Entries the sweeps deleted so far, by table.
    #[serde(default)]
    pub sweep_deleted: Vec<(String, u64)>,
    /// The layer-7 proxy's counters per VIP (backend `None`) and backend.
    #[serde(default)]
    pub http: Vec<(VipId, Option<Endpoint>, crate::l7::proxy::HttpCounters)>,
    /// Each VIP address and whether it is announced (`announce:` only).
    #[serde(default)]
    pub announced: Vec<(std::net::IpAddr, bool)>,
    /// The certificates of the VIPs with `tls:`: the file and the end of
    /// its validity (Unix seconds).
    #[serde(default)]
    pub tls_certificates: Vec<(VipId, String, i64)>,
}

/// A backend's state, for the metrics.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendState {
    pub vip: VipId,
    pub backend: Endpoint,
    /// `up`, `down`, `draining` or `down, draining`.
    pub state: String,
    /// Passes its health checks (or has none).
    pub up: bool,
    /// Checks passed and failed, with a health check.
    pub checks: Option<(u64, u64)>,
}
