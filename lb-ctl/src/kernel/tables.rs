//! The maps, typed, and the model written into them: VIPs, backends and
//! selection tables in a safe order, the timeouts, what kept tables hold.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use aya::maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray, PerCpuValues};
use lb_common::{
    conn6::{ClientKey6, Conn6, FlowKey6, HalfOpen6, SessionKey6},
    handshake::HandshakeSet,
    map_names as names,
    maps::backend_flags,
    pending::PendingSet,
    BackendInfo, Conn, Counters, FlowKey, Session, SessionKey, Settings, VipInfo, VipKey,
    RING_SIZE,
};

pub use super::tables6::Tables6;
use super::{
    batch::{delete_where, dup_fd},
    error::{map_err, DataplaneError, Result},
    tables6::{addr6, filter_word, prefix_len, raw_addr6, v6, vip_info6, vip_key6},
};
use crate::model::{
    endpoint::{Endpoint, Protocol},
    kept::{Kept, KeptBackend, KeptVip},
    services::{Mode, Services, Vip},
};

/// The maps, typed.
pub struct Tables {
    pub vips: HashMap<MapData, VipKey, VipInfo>,
    pub backends: Array<MapData, BackendInfo>,
    pub ring: Array<MapData, u32>,
    pub maglev: Array<MapData, u32>,
    pub conns: HashMap<MapData, FlowKey, Conn>,
    /// Unconfirmed flows: fixed sets (see [`super::fixed`]).
    pub half_open: Array<MapData, HandshakeSet>,
    pub sessions: HashMap<MapData, SessionKey, Session>,
    pub pending: Array<MapData, PendingSet>,
    pub settings: Array<MapData, Settings>,
    pub tx_ports: DevMapHash<MapData>,
    pub vip_stats: PerCpuArray<MapData, Counters>,
    pub backend_stats: PerCpuArray<MapData, Counters>,
    pub reasons: PerCpuArray<MapData, u64>,
    /// The address filter (`lb_common::addr_filter`).
    pub addr_filter: Array<MapData, u64>,
    /// What became of ICMP errors, per [`lb_common::IcmpReason`].
    pub icmp_stats: PerCpuArray<MapData, u64>,
    /// The IPv6 tables.
    pub v6: Tables6,
    pub max_connections: u32,
    pub max_sessions: u32,
    pub max_half_open: u32,
    /// `cluster:` is configured: VIPs with persistence announce their new
    /// sessions on the `SESSION_EVENTS` ring.
    pub shared: bool,
}

/// Every backend (slot, generation) of `s`.
fn backends_of(s: &Services) -> HashSet<(u32, u32)> {
    s.vips()
        .flat_map(|v| v.backends.iter().map(|b| (b.slot, b.gen)))
        .collect()
}

pub(crate) fn vip_key(v: &Vip) -> VipKey {
    VipKey {
        addr: u32::from_ne_bytes(v.spec.id.endpoint.v4().octets()),
        port: v.spec.id.endpoint.port.to_be(),
        proto: v.spec.id.protocol.number(),
        _pad: 0,
    }
}

pub(crate) fn vip_info(v: &Vip, shared: bool) -> VipInfo {
    VipInfo {
        id: v.slot,
        ring_len: v.table.len() as u32,
        persist_timeout_ns: nanos(v.spec.persistence_timeout),
        client_mask: lb_common::netmask(v.spec.persistence_netmask),
        maglev: v.maglev_slot.map_or(0, |m| m + 1),
        max_lifetime_ns: nanos(v.spec.max_lifetime),
        flags: if v.spec.forwarding == crate::model::services::Forwarding::Dsr {
            lb_common::maps::vip_flags::DSR
        } else {
            0
        } | if shared && !v.spec.persistence_timeout.is_zero() {
            lb_common::maps::vip_flags::SHARED
        } else {
            0
        } | if v.spec.scheduler == crate::model::sched::Scheduler::Wrr {
            lb_common::maps::vip_flags::HASH_FIRST
        } else {
            0
        },
        _pad: 0,
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn raw_addr(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

pub(crate) fn addr(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

impl Tables {
    pub(crate) fn fd<K: aya::Pod, V: aya::Pod>(map: &HashMap<MapData, K, V>) -> std::os::fd::RawFd {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        aya::maps::IterableMap::map(map).fd().as_fd().as_raw_fd()
    }

    /// Every entry of a hash map, read in batches.
    pub(crate) fn entries<K: aya::Pod + Default, V: aya::Pod + Default>(
        map: &HashMap<MapData, K, V>,
        name: &'static str,
    ) -> Result<Vec<(K, V)>> {
        let mut all = Vec::new();
        crate::kernel::batch::for_each::<K, V>(Self::fd(map), |k, v| {
            all.extend(k.iter().copied().zip(v.iter().copied()));
        })
        .map_err(|source| DataplaneError::Batch { name, source })?;
        Ok(all)
    }

    /// Every entry of the connection table.
    ///
    /// # Errors
    /// When the kernel refuses the read.
    pub fn conn_entries(&self) -> Result<Vec<(FlowKey, Conn)>> {
        Self::entries(&self.conns, names::CONNS)
    }

    /// Every entry of the persistence table.
    ///
    /// # Errors
    /// When the kernel refuses the read.
    pub fn session_entries(&self) -> Result<Vec<(SessionKey, Session)>> {
        Self::entries(&self.sessions, names::SESSIONS)
    }

    /// The timeouts in force.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn settings(&self) -> Result<Settings> {
        self.settings.get(&0, 0).map_err(map_err(names::SETTINGS))
    }

    /// Write the timeouts (the fixed tables' geometry and seed are the
    /// tables' own, whatever `settings` says).
    ///
    /// # Errors
    /// When the kernel refuses the write.
    pub fn set_settings(&mut self, settings: &Settings) -> Result<()> {
        let settings = self.with_geometry(settings);
        self.settings
            .set(0, settings, 0)
            .map_err(map_err(names::SETTINGS))
    }

    /// What kept (reused pinned) tables say about VIP and backend ids.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn kept(&self) -> Result<Kept> {
        let mut kept = Kept::default();
        for entry in self.vips.iter() {
            let (k, info) = entry.map_err(map_err(names::VIPS))?;
            let Some(protocol) = Protocol::from_number(k.proto) else {
                continue;
            };
            kept.vips.push(KeptVip {
                id: crate::model::endpoint::VipId {
                    endpoint: Endpoint {
                        addr: addr(k.addr).into(),
                        port: u16::from_be(k.port),
                    },
                    protocol,
                },
                slot: info.id,
                persistence_timeout: Duration::from_nanos(info.persist_timeout_ns),
                persistence_netmask: info.client_mask.count_ones() as u8,
                max_lifetime: Duration::from_nanos(info.max_lifetime_ns),
                forwarding: if info.flags & lb_common::maps::vip_flags::DSR != 0 {
                    crate::model::services::Forwarding::Dsr
                } else {
                    crate::model::services::Forwarding::Nat
                },
                persistence_netmask6: 64,
            });
        }
        for entry in self.v6.vips.iter() {
            let (k, info) = entry.map_err(map_err(names::VIPS6))?;
            let Some(protocol) = Protocol::from_number(k.proto) else {
                continue;
            };
            let i = info.info;
            kept.vips.push(KeptVip {
                id: crate::model::endpoint::VipId {
                    endpoint: Endpoint {
                        addr: addr6(k.addr).into(),
                        port: u16::from_be(k.port),
                    },
                    protocol,
                },
                slot: i.id,
                persistence_timeout: Duration::from_nanos(i.persist_timeout_ns),
                persistence_netmask: 32,
                persistence_netmask6: prefix_len(info.client_mask),
                max_lifetime: Duration::from_nanos(i.max_lifetime_ns),
                forwarding: if i.flags & lb_common::maps::vip_flags::DSR != 0 {
                    crate::model::services::Forwarding::Dsr
                } else {
                    crate::model::services::Forwarding::Nat
                },
            });
        }
        for slot in 0..lb_common::MAX_BACKENDS {
            let b = self
                .backends
                .get(&slot, 0)
                .map_err(map_err(names::BACKENDS))?;
            if b.gen == 0 {
                continue;
            }
            // An IPv6 backend's entry has no IPv4 address; its own is in
            // `BACKEND_ADDRS6`.
            let a6 = self
                .v6
                .backend_addrs
                .get(&slot, 0)
                .map_err(map_err(names::BACKEND_ADDRS6))?;
            let address: IpAddr = if b.addr == 0 && a6 != [0; 4] {
                addr6(a6).into()
            } else {
                addr(b.addr).into()
            };
            kept.backends.push(KeptBackend {
                slot,
                vip_slot: b.vip_id,
                endpoint: Endpoint {
                    addr: address,
                    port: u16::from_be(b.port),
                },
                gen: b.gen,
                active: b.flags & backend_flags::CONFIGURED != 0,
            });
        }
        Ok(kept)
    }

    /// Bring the maps from `old` to `new`. The order keeps every moment
    /// consistent for the data path: new backends first, then selection
    /// tables, then VIP entries, and only then are removed backends retired
    /// and removed VIPs deleted (with their connections and sessions).
    ///
    /// # Errors
    /// When the kernel refuses a write; the caller then applies `old` again.
    pub fn apply(&mut self, old: &Services, new: &Services) -> Result<()> {
        // First, so that no packet of a new VIP or backend is filtered out;
        // the old ones too (kept tables at a takeover), and none is ever
        // taken out: a removed backend's connections go on.
        self.filter_in(old)?;
        self.filter_in(new)?;
        let old_backends = backends_of(old);
        for v in new.vips() {
            // The XDP program leaves a `mode: http` VIP's traffic to the
            // kernel (and so to the proxy): it is not in its maps.
            if old.vip(&v.spec.id) == Some(v) || v.spec.mode == Mode::Http {
                continue;
            }
            self.write_vip(v, old.vip(&v.spec.id), &old_backends)?;
        }
        self.retire(&old_backends, new)?;
        // Gone from the data path: removed, or now served by the proxy.
        let removed: Vec<&Vip> = old
            .vips()
            .filter(|v| {
                v.spec.mode == Mode::Tcp
                    && new
                        .vip(&v.spec.id)
                        .is_none_or(|n| n.spec.mode == Mode::Http)
            })
            .collect();
        for v in &removed {
            let gone = if v.spec.id.endpoint.is_ipv6() {
                self.v6.vips.remove(&vip_key6(v))
            } else {
                self.vips.remove(&vip_key(v))
            };
            match gone {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(names::VIPS)(e)),
            }
        }
        if !removed.is_empty() {
            let slots: HashSet<u32> = removed.iter().map(|v| v.slot).collect();
            self.purge(|vip_id| slots.contains(&vip_id))?;
        }
        Ok(())
    }

    /// Set the filter's bits of `services`' VIP and backend addresses.
    fn filter_in(&mut self, services: &Services) -> Result<()> {
        let vips: Vec<IpAddr> = services.vips().map(|v| v.spec.id.endpoint.addr).collect();
        let backends: Vec<IpAddr> = services
            .vips()
            .flat_map(|v| v.backends.iter().map(|b| b.endpoint.addr))
            .collect();
        self.filter_in_addresses(&vips, &backends)
    }

    /// Set the filter's bits of these VIP and backend addresses (also the
    /// retired backends of kept tables, whose connections go on).
    ///
    /// # Errors
    /// When the kernel refuses a read or a write.
    pub fn filter_in_addresses(&mut self, vips: &[IpAddr], backends: &[IpAddr]) -> Result<()> {
        use lb_common::addr_filter::{bit, BACKENDS};
        let mut words: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
        for a in vips {
            let (word, mask) = bit(filter_word(*a));
            *words.entry(word).or_default() |= mask;
        }
        for a in backends {
            let (word, mask) = bit(filter_word(*a));
            *words.entry(BACKENDS + word).or_default() |= mask;
        }
        for (index, mask) in words {
            let now = self
                .addr_filter
                .get(&index, 0)
                .map_err(map_err(names::ADDR_FILTER))?;
            if now & mask != mask {
                self.addr_filter
                    .set(index, now | mask, 0)
                    .map_err(map_err(names::ADDR_FILTER))?;
            }
        }
        Ok(())
    }

    /// One VIP, new or changed (`before`): its backends, then its selection
    /// table, then its entry.
    fn write_vip(
        &mut self,
        v: &Vip,
        before: Option<&Vip>,
        old_backends: &HashSet<(u32, u32)>,
    ) -> Result<()> {
        let ipv6 = v.spec.id.endpoint.is_ipv6();
        for b in &v.backends {
            if ipv6 {
                // The address first: the entry makes the slot usable.
                self.v6
                    .backend_addrs
                    .set(b.slot, raw_addr6(v6(b.endpoint.addr)), 0)
                    .map_err(map_err(names::BACKEND_ADDRS6))?;
            }
            let info = BackendInfo {
                addr: raw_addr(b.endpoint.v4()),
                port: b.endpoint.port.to_be(),
                _pad: 0,
                vip_id: v.slot,
                gen: b.gen,
                flags: if b.keeps_sessions() {
                    backend_flags::CONFIGURED | backend_flags::ACTIVE
                } else {
                    backend_flags::CONFIGURED
                },
                _pad2: 0,
            };
            if !old_backends.contains(&(b.slot, b.gen)) {
                self.reset_counters(b.slot, false)?;
            }
            self.backends
                .set(b.slot, info, 0)
                .map_err(map_err(names::BACKENDS))?;
        }
        if let Some(m) = v.maglev_slot {
            // Only the slots that change: a table swap under traffic
            // sends every packet to the old or the new backend.
            let table_before = before
                .filter(|o| o.maglev_slot == Some(m))
                .map(|o| o.table.as_slice())
                .unwrap_or_default();
            for (i, slot) in crate::model::sched::changed_slots(table_before, &v.table) {
                self.maglev
                    .set(m * lb_common::MAGLEV_SIZE + i as u32, slot, 0)
                    .map_err(map_err(names::MAGLEV))?;
            }
        } else {
            for (i, slot) in v.table.iter().enumerate() {
                self.ring
                    .set(v.slot * RING_SIZE + i as u32, slot, 0)
                    .map_err(map_err(names::RING))?;
            }
        }
        if before.is_none() {
            self.reset_counters(v.slot, true)?;
        }
        self.insert_vip(v)
    }

    /// Write the entry of `v` in its family's table.
    fn insert_vip(&mut self, v: &Vip) -> Result<()> {
        if v.spec.id.endpoint.is_ipv6() {
            self.v6
                .vips
                .insert(vip_key6(v), vip_info6(v, vip_info(v, self.shared)), 0)
                .map_err(map_err(names::VIPS6))
        } else {
            self.vips
                .insert(vip_key(v), vip_info(v, self.shared), 0)
                .map_err(map_err(names::VIPS))
        }
    }

    /// Retire the backends of `old_backends` that `new` no longer has: no
    /// new connection or session uses them; established connections keep
    /// their own copy of the address.
    fn retire(&mut self, old_backends: &HashSet<(u32, u32)>, new: &Services) -> Result<()> {
        for &(slot, gen) in old_backends.difference(&backends_of(new)) {
            let still_used = new
                .vips()
                .any(|v| v.backends.iter().any(|b| b.slot == slot));
            if !still_used {
                let mut info = self
                    .backends
                    .get(&slot, 0)
                    .map_err(map_err(names::BACKENDS))?;
                if info.gen == gen {
                    info.flags = 0;
                    self.backends
                        .set(slot, info, 0)
                        .map_err(map_err(names::BACKENDS))?;
                }
            }
        }
        Ok(())
    }

    /// Write every VIP entry of `services` again (after tables were taken
    /// over: their flags follow this controller's `cluster:`).
    ///
    /// # Errors
    /// When the kernel refuses a write.
    pub fn rewrite_vips(&mut self, services: &Services) -> Result<()> {
        for v in services
            .vips()
            .filter(|v| v.spec.mode == crate::model::services::Mode::Tcp)
        {
            self.insert_vip(v)?;
        }
        Ok(())
    }

    /// A second handle on the persistence table, for work off the
    /// controller (installing other hosts' sessions).
    ///
    /// # Errors
    /// When the map cannot be opened again.
    pub fn sessions_handle(&self) -> Result<HashMap<MapData, SessionKey, Session>> {
        let fd = dup_fd(Self::fd(&self.sessions), names::SESSIONS)?;
        let data = MapData::from_fd(fd).map_err(map_err(names::SESSIONS))?;
        HashMap::try_from(aya::maps::Map::HashMap(data)).map_err(map_err(names::SESSIONS))
    }

    /// Zero the counters of a reused VIP or backend slot.
    fn reset_counters(&mut self, slot: u32, vip: bool) -> Result<()> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| DataplaneError::Cpus(format!("{what}: {e}")))?;
        let zeros = PerCpuValues::try_from(vec![Counters::default(); cpus])
            .map_err(|e| DataplaneError::Cpus(e.to_string()))?;
        let (map, name) = if vip {
            (&mut self.vip_stats, names::VIP_STATS)
        } else {
            (&mut self.backend_stats, names::BACKEND_STATS)
        };
        map.set(slot, zeros, 0).map_err(map_err(name))
    }

    /// Delete the connections and sessions of the VIPs `gone` selects, in
    /// every table.
    fn purge(&mut self, gone: impl Fn(u32) -> bool) -> Result<()> {
        delete_where::<FlowKey, Conn>(Self::fd(&self.conns), names::CONNS, |_, c| gone(c.vip_id))?;
        delete_where::<SessionKey, Session>(Self::fd(&self.sessions), names::SESSIONS, |k, _| {
            gone(k.vip_id)
        })?;
        let t = &self.v6;
        delete_where::<FlowKey6, Conn6>(Self::fd(&t.conns), names::CONNS6, |_, c| gone(c.vip_id))?;
        delete_where::<SessionKey6, Session>(Self::fd(&t.sessions), names::SESSIONS6, |k, _| {
            gone(k.vip_id)
        })?;
        delete_where::<ClientKey6, HalfOpen6>(
            Self::fd(&t.half_open),
            names::HALF_OPEN6,
            |_, h| gone(h.fwd.vip_id),
        )?;
        delete_where::<SessionKey6, Session>(Self::fd(&t.pending), names::PENDING6, |k, _| {
            gone(k.vip_id)
        })?;
        self.clear_ways(&gone)?;
        Ok(())
    }
}
