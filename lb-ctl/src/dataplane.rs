//! The kernel side as seen from user space: loading the XDP program, its
//! maps, attaching it, and turning the [`Services`] model into map contents.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{
    conn::conn_flags, is_expired, map_names as names, maps::backend_flags, BackendInfo, Conn,
    ConnState, Counters, FlowKey, Reason, Session, SessionKey, Settings, VipInfo, VipKey,
    PROGRAM_NAME, RING_SIZE,
};
use serde::{Deserialize, Serialize};

use crate::services::{Endpoint, Protocol, Services, Vip};

/// The compiled XDP program, built by `build.rs`.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));

/// An XDP program that passes everything (`lb_pass`), for the far ends of
/// veth pairs: a veth device accepts XDP_TX'd or redirected frames only when
/// it runs an XDP program itself.
pub static PASS_PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-pass"));

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the XDP program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the XDP program")]
    MissingMap(&'static str),
    #[error("the XDP program has no program named {PROGRAM_NAME}")]
    MissingProgram,
    #[error("interface {name:?} does not exist")]
    UnknownInterface { name: String },
    #[error("attaching to interface {name:?} in {mode} mode: {source}")]
    Attach {
        name: String,
        mode: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("pinning map {name} at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("adding interface {name:?} to the redirect map: {source}")]
    Ports {
        name: String,
        source: aya::maps::xdp::XdpMapError,
    },
    #[error(
        "the table pinned at {path} (kept by --keep-state) holds {have}, but {field} is {wanted}; \
         set {field} back to {have}, or remove {path} and lose the kept state"
    )]
    PinnedSize {
        path: PathBuf,
        have: u32,
        field: &'static str,
        wanted: u32,
    },
    #[error("batched access to map {name}: {source}")]
    Batch {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("counting possible CPUs: {0}")]
    Cpus(String),
    #[error("reading the monotonic clock: {0}")]
    Clock(nix::Error),
}

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// How to load the program.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub max_connections: u32,
    pub max_sessions: u32,
    /// Pin every map at `<dir>/<MAP>`, reusing maps already pinned there.
    pub pin_dir: Option<PathBuf>,
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    pub tables: Tables,
    links: Vec<(String, XdpLinkId)>,
    pin_dir: Option<PathBuf>,
}

/// The maps, typed.
pub struct Tables {
    pub vips: HashMap<MapData, VipKey, VipInfo>,
    pub backends: Array<MapData, BackendInfo>,
    pub ring: Array<MapData, u32>,
    pub conns: HashMap<MapData, FlowKey, Conn>,
    pub sessions: HashMap<MapData, SessionKey, Session>,
    pub settings: Array<MapData, Settings>,
    pub tx_ports: DevMapHash<MapData>,
    pub vip_stats: PerCpuArray<MapData, Counters>,
    pub backend_stats: PerCpuArray<MapData, Counters>,
    pub reasons: PerCpuArray<MapData, u64>,
    pub max_connections: u32,
    pub max_sessions: u32,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::MissingMap(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// Monotonic time as the data path reads it (`bpf_ktime_get_coarse_ns`).
///
/// # Errors
/// When the clock cannot be read.
pub fn now_ns() -> Result<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map_err(DataplaneError::Clock)?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

impl Dataplane {
    /// Load (verify) the program and create or reuse its maps. Nothing is
    /// attached yet.
    ///
    /// # Errors
    /// When the kernel refuses the program or a map.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(names::CONNS, opts.max_connections.saturating_mul(2))
            .map_max_entries(names::SESSIONS, opts.max_sessions);
        if let Some(dir) = &opts.pin_dir {
            check_pinned_size(
                dir,
                names::CONNS,
                opts.max_connections.saturating_mul(2),
                "limits.max_connections",
                2,
            )?;
            check_pinned_size(
                dir,
                names::SESSIONS,
                opts.max_sessions,
                "limits.max_sessions",
                1,
            )?;
        }
        let paths: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => names::ALL.iter().map(|n| (*n, dir.join(n))).collect(),
            None => Vec::new(),
        };
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(PROGRAM)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram)?
            .try_into()?;
        program.load()?;
        let tables = Tables {
            vips: take(&mut ebpf, names::VIPS)?,
            backends: take(&mut ebpf, names::BACKENDS)?,
            ring: take(&mut ebpf, names::RING)?,
            conns: take(&mut ebpf, names::CONNS)?,
            sessions: take(&mut ebpf, names::SESSIONS)?,
            settings: take(&mut ebpf, names::SETTINGS)?,
            tx_ports: take(&mut ebpf, names::TX_PORTS)?,
            vip_stats: take(&mut ebpf, names::VIP_STATS)?,
            backend_stats: take(&mut ebpf, names::BACKEND_STATS)?,
            reasons: take(&mut ebpf, names::REASONS)?,
            max_connections: opts.max_connections,
            max_sessions: opts.max_sessions,
        };
        Ok(Self {
            ebpf,
            tables,
            links: Vec::new(),
            pin_dir: opts.pin_dir.clone(),
        })
    }

    /// The XDP program, for `test_run`.
    ///
    /// # Errors
    /// When the object has no such program.
    pub fn program(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram)?
            .try_into()?)
    }

    /// Attach to every interface, or to none: on failure the interfaces
    /// attached so far are detached again.
    ///
    /// # Errors
    /// Naming the interface that could not be used.
    pub fn attach(&mut self, ifaces: &[String], generic: bool) -> Result<()> {
        let (mode, mode_name) = if generic {
            (XdpMode::Skb, "generic")
        } else {
            (XdpMode::Driver, "native")
        };
        let mut indexes = Vec::new();
        for name in ifaces {
            let index = nix::net::if_::if_nametoindex(name.as_str())
                .map_err(|_| DataplaneError::UnknownInterface { name: name.clone() })?;
            indexes.push(index);
        }
        let result = self.attach_all(ifaces, &indexes, mode, mode_name);
        if result.is_err() {
            self.detach();
        }
        result
    }

    fn attach_all(
        &mut self,
        ifaces: &[String],
        indexes: &[u32],
        mode: XdpMode,
        mode_name: &'static str,
    ) -> Result<()> {
        for (name, &index) in ifaces.iter().zip(indexes) {
            self.tables
                .tx_ports
                .insert(index, index, None, 0)
                .map_err(|e| DataplaneError::Ports {
                    name: name.clone(),
                    source: e,
                })?;
            let program: &mut Xdp = self
                .ebpf
                .program_mut(PROGRAM_NAME)
                .ok_or(DataplaneError::MissingProgram)?
                .try_into()?;
            let link = program
                .attach(name, mode)
                .map_err(|source| DataplaneError::Attach {
                    name: name.clone(),
                    mode: mode_name,
                    source,
                })?;
            self.links.push((name.clone(), link));
        }
        Ok(())
    }

    /// Detach from every interface.
    pub fn detach(&mut self) {
        let Some(program) = self.ebpf.program_mut(PROGRAM_NAME) else {
            return;
        };
        let Ok(program): Result<&mut Xdp, _> = program.try_into() else {
            return;
        };
        for (name, link) in self.links.drain(..) {
            if let Err(e) = program.detach(link) {
                log::warn!("detaching from {name}: {e}");
            }
        }
    }

    /// Remove the pinned maps (the state is gone once the program exits).
    pub fn unpin(&self) {
        if let Some(dir) = &self.pin_dir {
            for name in names::ALL {
                let _ = std::fs::remove_file(dir.join(name));
            }
            let _ = std::fs::remove_dir(dir);
        }
    }

    #[must_use]
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.detach();
    }
}

/// A table pinned by an earlier run is reused as it is; refuse when its size
/// no longer matches the configured limit rather than silently keeping it.
fn check_pinned_size(
    dir: &Path,
    name: &'static str,
    wanted: u32,
    field: &'static str,
    per: u32,
) -> Result<()> {
    let path = dir.join(name);
    if !path.exists() {
        return Ok(());
    }
    let have = aya::maps::MapInfo::from_pin(&path)
        .map_err(map_err(name))?
        .max_entries();
    if have != wanted {
        return Err(DataplaneError::PinnedSize {
            path,
            have: have / per,
            field,
            wanted: wanted / per,
        });
    }
    Ok(())
}

fn vip_key(v: &Vip) -> VipKey {
    VipKey {
        addr: u32::from_ne_bytes(v.spec.id.endpoint.addr.octets()),
        port: v.spec.id.endpoint.port.to_be(),
        proto: v.spec.id.protocol.number(),
        _pad: 0,
    }
}

fn vip_info(v: &Vip) -> VipInfo {
    VipInfo {
        id: v.slot,
        ring_len: v.table.len() as u32,
        persist_timeout_ns: u64::try_from(v.spec.persistence_timeout.as_nanos())
            .unwrap_or(u64::MAX),
        client_mask: lb_common::netmask(v.spec.persistence_netmask),
        _pad: 0,
    }
}

fn raw_addr(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn addr(raw: u32) -> Ipv4Addr {
    Ipv4Addr::from(raw.to_ne_bytes())
}

impl Tables {
    fn fd<K: aya::Pod, V: aya::Pod>(map: &HashMap<MapData, K, V>) -> std::os::fd::RawFd {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        aya::maps::IterableMap::map(map).fd().as_fd().as_raw_fd()
    }

    /// Every entry of a hash map, read in batches.
    fn entries<K: aya::Pod + Default, V: aya::Pod + Default>(
        map: &HashMap<MapData, K, V>,
        name: &'static str,
    ) -> Result<Vec<(K, V)>> {
        let mut all = Vec::new();
        crate::batch::for_each::<K, V>(Self::fd(map), |k, v| {
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

    fn delete_conns(&mut self, keys: &[FlowKey]) -> Result<u64> {
        crate::batch::delete(Self::fd(&self.conns), keys).map_err(|e| DataplaneError::Batch {
            name: names::CONNS,
            source: e,
        })
    }

    fn delete_sessions(&mut self, keys: &[SessionKey]) -> Result<u64> {
        crate::batch::delete(Self::fd(&self.sessions), keys).map_err(|e| DataplaneError::Batch {
            name: names::SESSIONS,
            source: e,
        })
    }

    /// Write the timeouts.
    ///
    /// # Errors
    /// When the kernel refuses the write.
    pub fn set_settings(&mut self, settings: &Settings) -> Result<()> {
        self.settings
            .set(0, settings, 0)
            .map_err(map_err(names::SETTINGS))
    }

    /// Delete every VIP entry (reused pinned maps may hold a previous
    /// configuration's).
    ///
    /// # Errors
    /// When the map cannot be read or written.
    pub fn clear_vips(&mut self) -> Result<()> {
        let keys: Vec<VipKey> = self
            .vips
            .keys()
            .filter_map(std::result::Result::ok)
            .collect();
        for k in keys {
            self.vips.remove(&k).map_err(map_err(names::VIPS))?;
        }
        Ok(())
    }

    /// Bring the maps from `old` to `new`. The order keeps every moment
    /// consistent for the data path: new backends first, then selection
    /// tables, then VIP entries, and only then are removed backends retired
    /// and removed VIPs deleted (with their connections and sessions).
    ///
    /// # Errors
    /// When the kernel refuses a write; the caller then applies `old` again.
    pub fn apply(&mut self, old: &Services, new: &Services) -> Result<()> {
        let backends_of = |s: &Services| -> HashSet<(u32, u32)> {
            s.vips()
                .flat_map(|v| v.backends.iter().map(|b| (b.slot, b.gen)))
                .collect()
        };
        let old_backends = backends_of(old);
        for v in new.vips() {
            if old.vip(&v.spec.id) == Some(v) {
                continue;
            }
            for b in &v.backends {
                let info = BackendInfo {
                    addr: raw_addr(b.endpoint.addr),
                    port: b.endpoint.port.to_be(),
                    _pad: 0,
                    vip_id: v.slot,
                    gen: b.gen,
                    flags: backend_flags::ACTIVE,
                    _pad2: 0,
                };
                if !old_backends.contains(&(b.slot, b.gen)) {
                    self.reset_counters(b.slot, false)?;
                }
                self.backends
                    .set(b.slot, info, 0)
                    .map_err(map_err(names::BACKENDS))?;
            }
            for (i, slot) in v.table.iter().enumerate() {
                self.ring
                    .set(v.slot * RING_SIZE + i as u32, slot, 0)
                    .map_err(map_err(names::RING))?;
            }
            if old.vip(&v.spec.id).is_none() {
                self.reset_counters(v.slot, true)?;
            }
            self.vips
                .insert(vip_key(v), vip_info(v), 0)
                .map_err(map_err(names::VIPS))?;
        }
        let new_backends = backends_of(new);
        for &(slot, gen) in old_backends.difference(&new_backends) {
            // Retire: no new connection or session uses it; established
            // connections keep their own copy of its address.
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
        let removed: Vec<&Vip> = old
            .vips()
            .filter(|v| new.vip(&v.spec.id).is_none())
            .collect();
        for v in &removed {
            match self.vips.remove(&vip_key(v)) {
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

    /// Delete the connections and sessions of the VIPs `gone` selects.
    fn purge(&mut self, gone: impl Fn(u32) -> bool) -> Result<()> {
        let conns: Vec<FlowKey> = self
            .conn_entries()?
            .into_iter()
            .filter(|(_, c)| gone(c.vip_id))
            .map(|(k, _)| k)
            .collect();
        self.delete_conns(&conns)?;
        let sessions: Vec<SessionKey> = self
            .session_entries()?
            .into_iter()
            .filter(|(k, _)| gone(k.vip_id))
            .map(|(k, _)| k)
            .collect();
        self.delete_sessions(&sessions)?;
        Ok(())
    }

    /// Delete expired connections (both halves together) and sessions.
    ///
    /// # Errors
    /// When the clock or the settings cannot be read.
    pub fn sweep(&mut self, services: &Services) -> Result<SweepReport> {
        let start = Instant::now();
        let settings = self.settings.get(&0, 0).map_err(map_err(names::SETTINGS))?;
        let now = now_ns()?;
        let mut report = SweepReport::default();
        let mut expired: Vec<FlowKey> = Vec::new();
        crate::batch::for_each::<FlowKey, Conn>(Self::fd(&self.conns), |keys, values| {
            report.connections_scanned += keys.len() as u64;
            expired.extend(
                keys.iter()
                    .zip(values)
                    .filter(|(_, c)| c.is_expired(&settings, now))
                    .map(|(k, _)| *k),
            );
        })
        .map_err(|e| DataplaneError::Batch {
            name: names::CONNS,
            source: e,
        })?;
        report.connections_deleted = self.delete_conns(&expired)?;
        report.connections_elapsed = start.elapsed();
        let timeouts: StdHashMap<u32, u64> = services
            .vips()
            .map(|v| {
                (
                    v.slot,
                    u64::try_from(v.spec.persistence_timeout.as_nanos()).unwrap_or(u64::MAX),
                )
            })
            .collect();
        let mut expired: Vec<SessionKey> = Vec::new();
        crate::batch::for_each::<SessionKey, Session>(Self::fd(&self.sessions), |keys, values| {
            report.sessions_scanned += keys.len() as u64;
            expired.extend(
                keys.iter()
                    .zip(values)
                    .filter(|(k, s)| {
                        is_expired(
                            s.last_seen_ns,
                            timeouts.get(&k.vip_id).copied().unwrap_or(0),
                            now,
                        )
                    })
                    .map(|(k, _)| *k),
            );
        })
        .map_err(|e| DataplaneError::Batch {
            name: names::SESSIONS,
            source: e,
        })?;
        report.sessions_deleted = self.delete_sessions(&expired)?;
        report.elapsed = start.elapsed();
        Ok(report)
    }

    /// The live connections (forward halves), for `lb-ctl conns`.
    ///
    /// # Errors
    /// When the clock or the settings cannot be read.
    pub fn connections(&self, services: &Services) -> Result<Vec<ConnView>> {
        let settings = self.settings.get(&0, 0).map_err(map_err(names::SETTINGS))?;
        let now = now_ns()?;
        let mut rows: Vec<ConnView> = self
            .conn_entries()?
            .into_iter()
            .filter(|(_, c)| c.flags & conn_flags::REPLY == 0 && !c.is_expired(&settings, now))
            .map(|(k, c)| ConnView {
                client: Endpoint {
                    addr: addr(k.src_addr),
                    port: u16::from_be(k.src_port),
                },
                vip: Endpoint {
                    addr: addr(k.dst_addr),
                    port: u16::from_be(k.dst_port),
                },
                vip_name: services
                    .vip_by_slot(c.vip_id)
                    .and_then(|v| v.spec.name.clone()),
                backend: Endpoint {
                    addr: addr(c.nat_addr),
                    port: u16::from_be(c.nat_port),
                },
                protocol: Protocol::from_number(k.proto).unwrap_or_default(),
                state: ConnState::name(c.state).to_string(),
                idle: Duration::from_nanos(now.saturating_sub(c.last_seen_ns)),
                expires_in: Duration::from_nanos(
                    (c.last_seen_ns + settings.timeout_ns(c.state)).saturating_sub(now),
                ),
            })
            .collect();
        rows.sort_by_key(|r| (r.vip, r.client));
        Ok(rows)
    }

    /// The live sessions, for `lb-ctl sessions`.
    ///
    /// # Errors
    /// When the clock cannot be read.
    pub fn sessions(&self, services: &Services) -> Result<Vec<SessionView>> {
        let now = now_ns()?;
        let mut rows = Vec::new();
        for (k, s) in self.sessions.iter().filter_map(std::result::Result::ok) {
            let Some(v) = services.vip_by_slot(k.vip_id) else {
                continue;
            };
            let timeout = u64::try_from(v.spec.persistence_timeout.as_nanos()).unwrap_or(u64::MAX);
            if is_expired(s.last_seen_ns, timeout, now) {
                continue;
            }
            let backend = v
                .backends
                .iter()
                .find(|b| b.slot == s.backend_id && b.gen == s.backend_gen);
            rows.push(SessionView {
                client: addr(k.client),
                netmask: v.spec.persistence_netmask,
                vip: v.spec.id.endpoint,
                protocol: v.spec.id.protocol,
                backend: backend.map(|b| b.endpoint),
                time_left: Duration::from_nanos((s.last_seen_ns + timeout).saturating_sub(now)),
            });
        }
        rows.sort_by_key(|r| (r.vip, r.client));
        Ok(rows)
    }

    /// Counters summed over the CPUs.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn stats(&self, services: &Services) -> Result<Stats> {
        let sum = |values: PerCpuValues<Counters>| {
            values.iter().fold(Traffic::default(), |a, c| Traffic {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
                new_conns: a.new_conns + c.new_conns,
            })
        };
        let mut vips = Vec::new();
        let mut backends = Vec::new();
        for v in services.vips() {
            let c = sum(self
                .vip_stats
                .get(&v.slot, 0)
                .map_err(map_err(names::VIP_STATS))?);
            vips.push((v.spec.id, v.spec.name.clone(), c));
            for b in &v.backends {
                let c = sum(self
                    .backend_stats
                    .get(&b.slot, 0)
                    .map_err(map_err(names::BACKEND_STATS))?);
                backends.push((v.spec.id, b.endpoint, c));
            }
        }
        let mut reasons = Vec::new();
        for (i, name) in Reason::NAMES.iter().enumerate() {
            let values = self
                .reasons
                .get(&(i as u32), 0)
                .map_err(map_err(names::REASONS))?;
            reasons.push(((*name).to_string(), values.iter().sum()));
        }
        Ok(Stats {
            vips,
            backends,
            reasons,
            max_conns: self.max_connections,
            max_sessions: self.max_sessions,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct SweepReport {
    pub connections_scanned: u64,
    pub connections_deleted: u64,
    pub sessions_scanned: u64,
    pub sessions_deleted: u64,
    /// Time spent on the connection table.
    pub connections_elapsed: Duration,
    /// Time spent on both tables.
    pub elapsed: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnView {
    pub client: Endpoint,
    pub vip: Endpoint,
    pub vip_name: Option<String>,
    pub backend: Endpoint,
    pub protocol: Protocol,
    pub state: String,
    pub idle: Duration,
    pub expires_in: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionView {
    pub client: Ipv4Addr,
    pub netmask: u8,
    pub vip: Endpoint,
    pub protocol: Protocol,
    /// `None` when the backend was removed (the client moves on its next
    /// connection).
    pub backend: Option<Endpoint>,
    pub time_left: Duration,
}

/// Traffic counters summed over the CPUs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    pub vips: Vec<(crate::services::VipId, Option<String>, Traffic)>,
    pub backends: Vec<(crate::services::VipId, Endpoint, Traffic)>,
    pub reasons: Vec<(String, u64)>,
    pub max_conns: u32,
    pub max_sessions: u32,
}
