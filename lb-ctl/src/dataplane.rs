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
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use lb_common::{
    conn::conn_flags, is_expired, map_names as names, maps::backend_flags, BackendInfo, Conn,
    ConnState, Counters, FlowKey, Reason, Session, SessionKey, Settings, VipInfo, VipKey,
    PROGRAM_NAME, RING_SIZE,
};
use serde::{Deserialize, Serialize};

use crate::{
    netdev,
    pins::{shape_difference, MapShape},
    services::{Endpoint, Kept, KeptBackend, KeptVip, Protocol, Services, Vip},
    xdpmode::Mode,
};

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
        mode: Mode,
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
    #[error(
        "the map pinned at {path} is not the {name} this build expects: {what}. It was left by \
         another build or program; remove it with `lb-ctl detach IFACE...` (this drops the kept \
         connections and sessions) and attach again"
    )]
    PinnedShape {
        path: PathBuf,
        name: &'static str,
        what: String,
    },
    #[error("reading the program's own map definitions: {0}")]
    Object(String),
    #[error(
        "the program has no SESSION_EVENTS ring, which `cluster:` needs: load lb's own \
         program (no --program) or one built from this version"
    )]
    NoSessionRing,
    #[error("pinning the attachment of {name:?} at {path}: {source}")]
    PinLink {
        name: String,
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("the attachment of {name:?}: {message}")]
    Link { name: String, message: String },
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
    /// Unconfirmed flows (TCP half-open, UDP unanswered) held at once.
    pub max_half_open: u32,
    /// Pin every map at `<dir>/<MAP>`, reusing maps already pinned there.
    pub pin_dir: Option<PathBuf>,
    /// An eBPF object file's contents to load instead of the built-in
    /// program (`attach --program`).
    pub object: Option<Vec<u8>>,
    /// Share sessions with other hosts (`cluster:`): the program must have
    /// the `SESSION_EVENTS` ring.
    pub shared: bool,
}

/// The loaded program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    pub tables: Tables,
    /// The data path's session announcements (`cluster:` only), until the
    /// cluster's reader takes them.
    pub session_events: Option<aya::maps::RingBuf<MapData>>,
    /// Announcements the full ring could not take, per CPU (`cluster:`).
    pub session_events_lost: Option<PerCpuArray<MapData, u64>>,
    links: Vec<(String, Held)>,
    pin_dir: Option<PathBuf>,
}

/// How the program is held on one interface.
enum Held {
    /// Attached for the life of this process (tests, benchmarks).
    Owned(XdpLinkId),
    /// A BPF link pinned in bpffs: it stays attached after this process
    /// exits, until the pin is removed.
    Pinned { path: PathBuf, link: FdLink },
}

/// What [`Dataplane::attach`] did on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub iface: String,
    /// The interface already ran lb through a pinned link, whose program
    /// was replaced atomically (BPF_LINK_UPDATE): no packet missed it.
    pub adopted: bool,
}

/// The maps, typed.
pub struct Tables {
    pub vips: HashMap<MapData, VipKey, VipInfo>,
    pub backends: Array<MapData, BackendInfo>,
    pub ring: Array<MapData, u32>,
    pub maglev: Array<MapData, u32>,
    pub conns: HashMap<MapData, FlowKey, Conn>,
    pub half_open: HashMap<MapData, FlowKey, Conn>,
    pub sessions: HashMap<MapData, SessionKey, Session>,
    pub pending: HashMap<MapData, SessionKey, Session>,
    pub settings: Array<MapData, Settings>,
    pub tx_ports: DevMapHash<MapData>,
    pub vip_stats: PerCpuArray<MapData, Counters>,
    pub backend_stats: PerCpuArray<MapData, Counters>,
    pub reasons: PerCpuArray<MapData, u64>,
    /// What became of ICMP errors, per [`lb_common::IcmpReason`].
    pub icmp_stats: PerCpuArray<MapData, u64>,
    pub max_connections: u32,
    pub max_sessions: u32,
    pub max_half_open: u32,
    /// `cluster:` is configured: VIPs with persistence announce their new
    /// sessions on the `SESSION_EVENTS` ring.
    pub shared: bool,
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
            .map_max_entries(names::SESSIONS, opts.max_sessions)
            .map_max_entries(names::HALF_OPEN, opts.max_half_open.saturating_mul(2))
            .map_max_entries(names::PENDING, opts.max_half_open);
        let object = opts.object.as_deref().unwrap_or(PROGRAM);
        if let Some(dir) = &opts.pin_dir {
            check_pinned_maps(dir, opts, object)?;
        }
        let paths: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => names::ALL.iter().map(|n| (*n, dir.join(n))).collect(),
            None => Vec::new(),
        };
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(object)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram)?
            .try_into()?;
        program.load()?;
        let tables = Tables {
            vips: take(&mut ebpf, names::VIPS)?,
            backends: take(&mut ebpf, names::BACKENDS)?,
            ring: take(&mut ebpf, names::RING)?,
            maglev: take(&mut ebpf, names::MAGLEV)?,
            conns: take(&mut ebpf, names::CONNS)?,
            half_open: take(&mut ebpf, names::HALF_OPEN)?,
            sessions: take(&mut ebpf, names::SESSIONS)?,
            pending: take(&mut ebpf, names::PENDING)?,
            settings: take(&mut ebpf, names::SETTINGS)?,
            tx_ports: take(&mut ebpf, names::TX_PORTS)?,
            vip_stats: take(&mut ebpf, names::VIP_STATS)?,
            backend_stats: take(&mut ebpf, names::BACKEND_STATS)?,
            reasons: take(&mut ebpf, names::REASONS)?,
            icmp_stats: take(&mut ebpf, names::ICMP_STATS)?,
            max_connections: opts.max_connections,
            max_sessions: opts.max_sessions,
            max_half_open: opts.max_half_open,
            shared: opts.shared,
        };
        let session_events = if opts.shared {
            Some(take(&mut ebpf, names::SESSION_EVENTS).map_err(|e| match e {
                DataplaneError::MissingMap(_) => DataplaneError::NoSessionRing,
                e => e,
            })?)
        } else {
            None
        };
        let session_events_lost = if opts.shared {
            Some(
                take(&mut ebpf, names::SESSION_EVENTS_LOST).map_err(|e| match e {
                    DataplaneError::MissingMap(_) => DataplaneError::NoSessionRing,
                    e => e,
                })?,
            )
        } else {
            None
        };
        Ok(Self {
            ebpf,
            tables,
            session_events,
            session_events_lost,
            links: Vec::new(),
            pin_dir: opts.pin_dir.clone(),
        })
    }

    /// The loaded program's id.
    #[must_use]
    pub fn program_id(&self) -> Option<u32> {
        self.program().ok()?.info().ok().map(|i| i.id())
    }

    /// The ids of the pinned links, by interface.
    #[must_use]
    pub fn link_ids(&self) -> Vec<(String, u32)> {
        self.links
            .iter()
            .filter_map(|(name, held)| match held {
                Held::Pinned { link, .. } => link.info().ok().map(|i| (name.clone(), i.id())),
                Held::Owned(_) => None,
            })
            .collect()
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

    /// The program and the tables apart, to run the one while the other
    /// changes (tests and benchmarks of changes under traffic).
    ///
    /// # Errors
    /// When the object has no balancer program.
    pub fn program_and_tables(&mut self) -> Result<(&Xdp, &mut Tables)> {
        let program = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram)?
            .try_into()?;
        Ok((program, &mut self.tables))
    }

    /// Attach to every interface, or to none: on failure the interfaces
    /// attached so far are detached again. With `link_dir`, each attachment
    /// is a BPF link pinned at `<link_dir>/<iface>`, which outlives this
    /// process; an interface that already has one (left by a controller
    /// that exited with `--keep-state` or died) is taken over by replacing
    /// its program atomically, keeping its mode.
    ///
    /// # Errors
    /// Naming the interface that could not be used.
    pub fn attach(
        &mut self,
        ifaces: &[String],
        mode: Mode,
        link_dir: Option<&Path>,
    ) -> Result<Vec<Attachment>> {
        let mut indexes = Vec::new();
        for name in ifaces {
            let index = nix::net::if_::if_nametoindex(name.as_str())
                .map_err(|_| DataplaneError::UnknownInterface { name: name.clone() })?;
            indexes.push(index);
        }
        let mut done = Vec::new();
        let result = self.attach_all(ifaces, &indexes, mode, link_dir, &mut done);
        if result.is_err() {
            // Undo what this call did; links it adopted are left pinned, so
            // the data path that ran before keeps running.
            let fresh: Vec<String> = done
                .iter()
                .filter(|a: &&Attachment| !a.adopted)
                .map(|a| a.iface.clone())
                .collect();
            self.detach_where(|name| fresh.iter().any(|f| f == name));
            self.release();
        }
        result.map(|()| done)
    }

    fn xdp(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram)?
            .try_into()?)
    }

    fn attach_all(
        &mut self,
        ifaces: &[String],
        indexes: &[u32],
        mode: Mode,
        link_dir: Option<&Path>,
        done: &mut Vec<Attachment>,
    ) -> Result<()> {
        for (name, &index) in ifaces.iter().zip(indexes) {
            self.tables
                .tx_ports
                .insert(index, index, None, 0)
                .map_err(|e| DataplaneError::Ports {
                    name: name.clone(),
                    source: e,
                })?;
            let (held, adopted) = self.attach_one(name, index, mode, link_dir)?;
            self.links.push((name.clone(), held));
            done.push(Attachment {
                iface: name.clone(),
                adopted,
            });
        }
        Ok(())
    }

    /// Attach to one interface: take over its pinned link if it has a
    /// usable one, else attach afresh (pinning the new link under
    /// `link_dir`). Returns how it is held and whether it was taken over.
    fn attach_one(
        &mut self,
        name: &str,
        index: u32,
        mode: Mode,
        link_dir: Option<&Path>,
    ) -> Result<(Held, bool)> {
        let path = link_dir.map(|dir| dir.join(name));
        if let Some(path) = path.as_ref().filter(|p| p.exists()) {
            match self.adopt(name, index, path, mode) {
                Ok(link) => {
                    let path = path.clone();
                    return Ok((Held::Pinned { path, link }, true));
                }
                Err(why) => {
                    log::warn!(
                        "{name}: not taking over the pinned attachment at {} ({why}); \
                         attaching afresh",
                        path.display()
                    );
                    // Dropping the last reference detaches it.
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let xdp_mode = match mode {
            Mode::Native => XdpMode::Driver,
            Mode::Generic => XdpMode::Skb,
        };
        let program = self.xdp()?;
        let id = program
            .attach_to_if_index(index, xdp_mode)
            .map_err(|source| DataplaneError::Attach {
                name: name.to_string(),
                mode,
                source,
            })?;
        let Some(path) = path else {
            return Ok((Held::Owned(id), false));
        };
        let fd = FdLink::try_from(program.take_link(id)?).map_err(|e| DataplaneError::Link {
            name: name.to_string(),
            message: format!("the kernel gave no BPF link ({e})"),
        })?;
        let pinned = fd.pin(&path).map_err(|source| DataplaneError::PinLink {
            name: name.to_string(),
            path: path.clone(),
            source,
        })?;
        let link = FdLink::from(pinned);
        Ok((Held::Pinned { path, link }, false))
    }

    /// Take over the link pinned at `path` for `name`: check that it is
    /// what runs on the interface and in `mode`, then replace its program
    /// with this one in one step (BPF_LINK_UPDATE).
    fn adopt(&mut self, name: &str, index: u32, path: &Path, mode: Mode) -> Result<FdLink, String> {
        let fd: FdLink = PinnedLink::from_pin(path)
            .map_err(|e| format!("cannot open it: {e}"))?
            .into();
        let prog_id = fd
            .info()
            .map_err(|e| format!("cannot read it: {e}"))?
            .program_id();
        let dev = netdev::link(index).map_err(|e| format!("reading {name}: {e}"))?;
        if dev.xdp_prog_id != prog_id {
            return Err(format!(
                "it holds program {prog_id} but {name} runs program {}",
                dev.xdp_prog_id
            ));
        }
        let running = match dev.xdp {
            netdev::Attached::Native => Mode::Native,
            netdev::Attached::Generic => Mode::Generic,
            other => return Err(format!("{name} has XDP attached as {other}")),
        };
        if running != mode {
            return Err(format!(
                "it runs in {running} mode and {mode} mode is wanted now"
            ));
        }
        let link = XdpLink::try_from(fd).map_err(|e| format!("it is not an XDP link: {e}"))?;
        let program = self.xdp().map_err(|e| e.to_string())?;
        let id = program
            .attach_to_link(link)
            .map_err(|e| format!("replacing its program: {e}"))?;
        let link = program.take_link(id).map_err(|e| e.to_string())?;
        FdLink::try_from(link).map_err(|e| e.to_string())
    }

    /// Detach from every interface, removing pinned attachments.
    pub fn detach(&mut self) {
        self.detach_where(|_| true);
    }

    fn detach_where(&mut self, pick: impl Fn(&str) -> bool) {
        let (gone, kept): (Vec<_>, Vec<_>) = self.links.drain(..).partition(|(n, _)| pick(n));
        self.links = kept;
        for (name, held) in gone {
            match held {
                Held::Owned(id) => {
                    if let Ok(program) = self.xdp() {
                        if let Err(e) = program.detach(id) {
                            log::warn!("detaching from {name}: {e}");
                        }
                    }
                }
                Held::Pinned { path, link } => {
                    if let Err(e) = std::fs::remove_file(&path) {
                        log::warn!("removing {}: {e}", path.display());
                    }
                    // Closing the last reference detaches the program.
                    drop(link);
                }
            }
        }
    }

    /// Let go of the pinned attachments without detaching: the program keeps
    /// running on them after this process exits.
    pub fn release(&mut self) {
        self.links.retain(|(_, h)| matches!(h, Held::Owned(_)));
    }

    /// Remove the pinned maps (the state is gone once the program exits).
    pub fn unpin(&self) {
        if let Some(dir) = &self.pin_dir {
            remove_pins(dir);
        }
    }

    #[must_use]
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }
}

impl Drop for Dataplane {
    /// Attachments owned by this process end with it; pinned ones stay
    /// (the daemon detaches them explicitly unless state is kept).
    fn drop(&mut self) {
        self.release();
        self.detach_where(|_| true);
    }
}

/// Remove the map pins in `dir` and `dir` itself.
pub fn remove_pins(dir: &Path) {
    for name in names::ALL {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir);
}

/// Maps pinned by an earlier run are reused as they are (by aya and the
/// kernel, whatever their shape): refuse unless each is exactly the map this
/// build declares, with the sizes the config asks for.
fn check_pinned_maps(dir: &Path, opts: &LoadOptions, program: &[u8]) -> Result<()> {
    let object =
        aya_obj::Object::parse(program).map_err(|e| DataplaneError::Object(e.to_string()))?;
    for name in names::ALL {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let def = object
            .maps
            .get(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        let (max_entries, field, per) = match name {
            names::CONNS => (
                opts.max_connections.saturating_mul(2),
                Some("limits.max_connections"),
                2,
            ),
            names::SESSIONS => (opts.max_sessions, Some("limits.max_sessions"), 1),
            names::HALF_OPEN => (
                opts.max_half_open.saturating_mul(2),
                Some("limits.max_half_open"),
                2,
            ),
            names::PENDING => (opts.max_half_open, Some("limits.max_half_open"), 1),
            _ => (def.max_entries(), None, 1),
        };
        let want = MapShape {
            map_type: def.map_type(),
            key_size: def.key_size(),
            value_size: def.value_size(),
            max_entries,
        };
        let info = aya::maps::MapInfo::from_pin(&path).map_err(map_err(name))?;
        let have = MapShape {
            map_type: info.map_type().map_or(u32::MAX, |t| t as u32),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        };
        let Some(what) = shape_difference(&have, &want) else {
            continue;
        };
        if let (Some(field), true) = (
            field,
            MapShape {
                max_entries,
                ..have
            } == want,
        ) {
            return Err(DataplaneError::PinnedSize {
                path,
                have: have.max_entries / per,
                field,
                wanted: max_entries / per,
            });
        }
        return Err(DataplaneError::PinnedShape { path, name, what });
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

fn vip_info(v: &Vip, shared: bool) -> VipInfo {
    VipInfo {
        id: v.slot,
        ring_len: v.table.len() as u32,
        persist_timeout_ns: nanos(v.spec.persistence_timeout),
        client_mask: lb_common::netmask(v.spec.persistence_netmask),
        maglev: v.maglev_slot.map_or(0, |m| m + 1),
        max_lifetime_ns: nanos(v.spec.max_lifetime),
        flags: if v.spec.forwarding == crate::services::Forwarding::Dsr {
            lb_common::maps::vip_flags::DSR
        } else {
            0
        } | if shared && !v.spec.persistence_timeout.is_zero() {
            lb_common::maps::vip_flags::SHARED
        } else {
            0
        },
        _pad: 0,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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

    /// Every entry of the table of unconfirmed flows.
    ///
    /// # Errors
    /// When the kernel refuses the read.
    pub fn half_open_entries(&self) -> Result<Vec<(FlowKey, Conn)>> {
        Self::entries(&self.half_open, names::HALF_OPEN)
    }

    /// Every entry of the persistence table.
    ///
    /// # Errors
    /// When the kernel refuses the read.
    pub fn session_entries(&self) -> Result<Vec<(SessionKey, Session)>> {
        Self::entries(&self.sessions, names::SESSIONS)
    }

    /// Every pending session.
    ///
    /// # Errors
    /// When the kernel refuses the read.
    pub fn pending_entries(&self) -> Result<Vec<(SessionKey, Session)>> {
        Self::entries(&self.pending, names::PENDING)
    }

    /// The timeouts in force.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn settings(&self) -> Result<Settings> {
        self.settings.get(&0, 0).map_err(map_err(names::SETTINGS))
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
                id: crate::services::VipId {
                    endpoint: Endpoint {
                        addr: addr(k.addr),
                        port: u16::from_be(k.port),
                    },
                    protocol,
                },
                slot: info.id,
                persistence_timeout: Duration::from_nanos(info.persist_timeout_ns),
                persistence_netmask: info.client_mask.count_ones() as u8,
                max_lifetime: Duration::from_nanos(info.max_lifetime_ns),
                forwarding: if info.flags & lb_common::maps::vip_flags::DSR != 0 {
                    crate::services::Forwarding::Dsr
                } else {
                    crate::services::Forwarding::Nat
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
            kept.backends.push(KeptBackend {
                slot,
                vip_slot: b.vip_id,
                endpoint: Endpoint {
                    addr: addr(b.addr),
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
        let backends_of = |s: &Services| -> HashSet<(u32, u32)> {
            s.vips()
                .flat_map(|v| v.backends.iter().map(|b| (b.slot, b.gen)))
                .collect()
        };
        let old_backends = backends_of(old);
        for v in new.vips() {
            // The XDP program leaves a `mode: http` VIP's traffic to the
            // kernel (and so to the proxy): it is not in its maps.
            if old.vip(&v.spec.id) == Some(v) || v.spec.mode == crate::services::Mode::Http {
                continue;
            }
            for b in &v.backends {
                let info = BackendInfo {
                    addr: raw_addr(b.endpoint.addr),
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
                let before = old
                    .vip(&v.spec.id)
                    .filter(|o| o.maglev_slot == Some(m))
                    .map(|o| o.table.as_slice())
                    .unwrap_or_default();
                for (i, slot) in crate::sched::changed_slots(before, &v.table) {
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
            if old.vip(&v.spec.id).is_none() {
                self.reset_counters(v.slot, true)?;
            }
            self.vips
                .insert(vip_key(v), vip_info(v, self.shared), 0)
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
        // Gone from the data path: removed, or now served by the proxy.
        let removed: Vec<&Vip> = old
            .vips()
            .filter(|v| {
                v.spec.mode == crate::services::Mode::Tcp
                    && new
                        .vip(&v.spec.id)
                        .is_none_or(|n| n.spec.mode == crate::services::Mode::Http)
            })
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

    /// Write every VIP entry of `services` again (after tables were taken
    /// over: their flags follow this controller's `cluster:`).
    ///
    /// # Errors
    /// When the kernel refuses a write.
    pub fn rewrite_vips(&mut self, services: &Services) -> Result<()> {
        for v in services
            .vips()
            .filter(|v| v.spec.mode == crate::services::Mode::Tcp)
        {
            self.vips
                .insert(vip_key(v), vip_info(v, self.shared), 0)
                .map_err(map_err(names::VIPS))?;
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
        for (map, name) in [
            (&self.conns, names::CONNS),
            (&self.half_open, names::HALF_OPEN),
        ] {
            let keys: Vec<FlowKey> = Self::entries(map, name)?
                .into_iter()
                .filter(|(_, c)| gone(c.vip_id))
                .map(|(k, _)| k)
                .collect();
            delete_keys(Self::fd(map), name, &keys)?;
        }
        for (map, name) in [
            (&self.sessions, names::SESSIONS),
            (&self.pending, names::PENDING),
        ] {
            let keys: Vec<SessionKey> = Self::entries(map, name)?
                .into_iter()
                .filter(|(k, _)| gone(k.vip_id))
                .map(|(k, _)| k)
                .collect();
            delete_keys(Self::fd(map), name, &keys)?;
        }
        Ok(())
    }

    /// Delete expired connections (both halves together) and sessions.
    ///
    /// # Errors
    /// When the clock or the settings cannot be read.
    pub fn sweep(&mut self, services: &Services) -> Result<SweepReport> {
        self.sweeper(services, StdHashMap::new())?.run()
    }

    /// A [`Sweeper`] over these tables: it holds its own references to the
    /// two tables and what it needs of the model, so it runs without the
    /// controller (the control socket answers while a large sweep runs).
    ///
    /// `share` names the VIP slots whose sessions used since the given
    /// time the sweep hands back for publication (`cluster:`).
    ///
    /// # Errors
    /// When the settings cannot be read or a map reference cannot be had.
    pub fn sweeper(&self, services: &Services, share: StdHashMap<u32, u64>) -> Result<Sweeper> {
        let dup = dup_fd;
        Ok(Sweeper {
            share,
            conns: dup(Self::fd(&self.conns), names::CONNS)?,
            half_open: dup(Self::fd(&self.half_open), names::HALF_OPEN)?,
            sessions: dup(Self::fd(&self.sessions), names::SESSIONS)?,
            pending: dup(Self::fd(&self.pending), names::PENDING)?,
            settings: self.settings.get(&0, 0).map_err(map_err(names::SETTINGS))?,
            liveness: Liveness::new(services),
        })
    }

    /// Live connections and sessions per backend (slot, generation).
    ///
    /// # Errors
    /// When the clock, the settings or a table cannot be read.
    pub fn live(&self, services: &Services) -> Result<StdHashMap<(u32, u32), Live>> {
        let settings = self.settings.get(&0, 0).map_err(map_err(names::SETTINGS))?;
        let now = now_ns()?;
        let liveness = Liveness::new(services);
        let mut live = StdHashMap::new();
        for (_, c) in self
            .conn_entries()?
            .into_iter()
            .chain(self.half_open_entries()?)
        {
            liveness.conn(&c, &settings, now, &mut live);
        }
        for (k, s) in self.session_entries()? {
            liveness.session(&k, &s, now, &mut live);
        }
        Ok(live)
    }
    /// What a listing needs, to run without the controller: its own
    /// references to the tables, the timeouts and a copy of the model.
    ///
    /// # Errors
    /// When the settings cannot be read or a map reference cannot be had.
    pub fn lister(&self, services: &Services) -> Result<Lister> {
        Ok(Lister {
            conns: dup_fd(Self::fd(&self.conns), names::CONNS)?,
            half_open: dup_fd(Self::fd(&self.half_open), names::HALF_OPEN)?,
            sessions: dup_fd(Self::fd(&self.sessions), names::SESSIONS)?,
            settings: self.settings.get(&0, 0).map_err(map_err(names::SETTINGS))?,
            services: services.clone(),
        })
    }

    /// One reason counter, summed over the CPUs.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn reason_total(&self, reason: u32) -> Result<u64> {
        Ok(self
            .reasons
            .get(&reason, 0)
            .map_err(map_err(names::REASONS))?
            .iter()
            .sum())
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
        let mut icmp = Vec::new();
        for (i, name) in lb_common::IcmpReason::NAMES.iter().enumerate() {
            let values = self
                .icmp_stats
                .get(&(i as u32), 0)
                .map_err(map_err(names::ICMP_STATS))?;
            icmp.push(((*name).to_string(), values.iter().sum()));
        }
        Ok(Stats {
            vips,
            backends,
            reasons,
            icmp,
            max_conns: self.max_connections,
            max_sessions: self.max_sessions,
            device_xdp_errors: Vec::new(),
            backend_states: Vec::new(),
            table_entries: Vec::new(),
            half_open_evictions: 0,
            cluster: None,
            max_half_open: self.max_half_open,
            last_sweep_seconds: None,
            sweep_deleted: Vec::new(),
            http: Vec::new(),
        })
    }
}

/// A second descriptor of a live map, for work off the controller.
fn dup_fd(fd: std::os::fd::RawFd, name: &'static str) -> Result<std::os::fd::OwnedFd> {
    // SAFETY: `fd` is a live map descriptor owned by the tables.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .map_err(|source| DataplaneError::Batch { name, source })
}

/// Listings of the connections and sessions, read in batches and handed
/// on batch by batch (a million entries never sit in memory at once).
pub struct Lister {
    conns: std::os::fd::OwnedFd,
    half_open: std::os::fd::OwnedFd,
    sessions: std::os::fd::OwnedFd,
    settings: Settings,
    services: Services,
}

impl Lister {
    /// The live connections (forward halves; confirmed ones, then those
    /// not confirmed yet), a batch at a time to `each`, which returns
    /// false to stop.
    ///
    /// # Errors
    /// When the clock cannot be read or the kernel refuses a read.
    pub fn connections(&self, each: &mut dyn FnMut(Vec<ConnView>) -> bool) -> Result<()> {
        use std::os::fd::AsRawFd as _;
        let now = now_ns()?;
        for (fd, name, confirmed) in [
            (&self.conns, names::CONNS, true),
            (&self.half_open, names::HALF_OPEN, false),
        ] {
            let mut go = true;
            crate::batch::for_each::<FlowKey, Conn>(fd.as_raw_fd(), |keys, values| {
                if !go {
                    return;
                }
                let rows: Vec<ConnView> = keys
                    .iter()
                    .zip(values)
                    .filter(|(_, c)| {
                        c.flags & conn_flags::REPLY == 0 && !c.is_expired(&self.settings, now)
                    })
                    .map(|(k, c)| self.conn_view(k, c, confirmed, now))
                    .collect();
                if !rows.is_empty() {
                    go = each(rows);
                }
            })
            .map_err(|source| DataplaneError::Batch { name, source })?;
            if !go {
                break;
            }
        }
        Ok(())
    }

    fn conn_view(&self, k: &FlowKey, c: &Conn, confirmed: bool, now: u64) -> ConnView {
        ConnView {
            confirmed,
            client: Endpoint {
                addr: addr(k.src_addr),
                port: u16::from_be(k.src_port),
            },
            vip: Endpoint {
                addr: addr(k.dst_addr),
                port: u16::from_be(k.dst_port),
            },
            vip_name: self
                .services
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
                (c.last_seen_ns + self.settings.timeout_ns(c.state)).saturating_sub(now),
            ),
        }
    }

    /// The live sessions, a batch at a time to `each`, which returns false
    /// to stop.
    ///
    /// # Errors
    /// When the clock cannot be read or the kernel refuses a read.
    pub fn sessions(&self, each: &mut dyn FnMut(Vec<SessionView>) -> bool) -> Result<()> {
        use std::os::fd::AsRawFd as _;
        let now = now_ns()?;
        let mut go = true;
        crate::batch::for_each::<SessionKey, Session>(self.sessions.as_raw_fd(), |keys, values| {
            if !go {
                return;
            }
            let rows: Vec<SessionView> = keys
                .iter()
                .zip(values)
                .filter_map(|(k, s)| self.session_view(k, s, now))
                .collect();
            if !rows.is_empty() {
                go = each(rows);
            }
        })
        .map_err(|source| DataplaneError::Batch {
            name: names::SESSIONS,
            source,
        })
    }

    fn session_view(&self, k: &SessionKey, s: &Session, now: u64) -> Option<SessionView> {
        let v = self.services.vip_by_slot(k.vip_id)?;
        let timeout = nanos(v.spec.persistence_timeout);
        if !s.is_live(timeout, nanos(v.spec.max_lifetime), now) {
            return None;
        }
        let backend = v
            .backends
            .iter()
            .find(|b| b.slot == s.backend_id && b.gen == s.backend_gen);
        Some(SessionView {
            client: addr(k.client),
            netmask: v.spec.persistence_netmask,
            vip: v.spec.id.endpoint,
            protocol: v.spec.id.protocol,
            backend: backend.map(|b| b.endpoint),
            time_left: Duration::from_nanos((s.last_seen_ns + timeout).saturating_sub(now)),
            age: Duration::from_nanos(now.saturating_sub(s.created_ns)),
        })
    }
}

/// One sweep of the two tables, runnable on its own thread.
pub struct Sweeper {
    /// VIP slot -> sessions used after this time are handed back.
    share: StdHashMap<u32, u64>,
    conns: std::os::fd::OwnedFd,
    half_open: std::os::fd::OwnedFd,
    sessions: std::os::fd::OwnedFd,
    pending: std::os::fd::OwnedFd,
    settings: Settings,
    liveness: Liveness,
}

/// Live connections and sessions of one backend.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Live {
    pub connections: u64,
    pub sessions: u64,
}

/// Tells live entries from expired ones, counting the live ones per
/// backend (slot, generation).
struct Liveness {
    /// Persistence timeout and session lifetime (ns) per VIP slot.
    persistence: StdHashMap<u32, (u64, u64)>,
}

impl Liveness {
    fn new(services: &Services) -> Self {
        Self {
            persistence: services
                .vips()
                .map(|v| {
                    (
                        v.slot,
                        (
                            nanos(v.spec.persistence_timeout),
                            nanos(v.spec.max_lifetime),
                        ),
                    )
                })
                .collect(),
        }
    }

    /// Whether `c` has expired; a live forward half is counted.
    fn conn(
        &self,
        c: &Conn,
        settings: &Settings,
        now: u64,
        live: &mut StdHashMap<(u32, u32), Live>,
    ) -> bool {
        let expired = c.is_expired(settings, now);
        if !expired && c.flags & conn_flags::REPLY == 0 {
            live.entry((c.backend_id, c.backend_gen))
                .or_default()
                .connections += 1;
        }
        expired
    }

    /// Whether `s` is idle past its VIP's timeout (the sweeper deletes
    /// those); a live one is counted. A session past its lifetime is not
    /// live but is left in place: the client's long-lived connection would
    /// otherwise recreate it as a new one, and its next connection
    /// replaces it anyway.
    fn session(
        &self,
        k: &SessionKey,
        s: &Session,
        now: u64,
        live: &mut StdHashMap<(u32, u32), Live>,
    ) -> bool {
        let (timeout, lifetime) = self.persistence.get(&k.vip_id).copied().unwrap_or((0, 0));
        if s.is_live(timeout, lifetime, now) {
            live.entry((s.backend_id, s.backend_gen))
                .or_default()
                .sessions += 1;
        }
        is_expired(s.last_seen_ns, timeout, now)
    }
}

impl Sweeper {
    /// Delete expired connections (both halves together) and sessions.
    ///
    /// # Errors
    /// When the clock cannot be read or the kernel refuses a batch.
    pub fn run(self) -> Result<SweepReport> {
        use std::os::fd::AsRawFd as _;
        let start = Instant::now();
        let now = now_ns()?;
        let settings = self.settings;
        let mut live = StdHashMap::new();
        let connections =
            sweep_map::<FlowKey, Conn>(self.conns.as_raw_fd(), names::CONNS, |_, c| {
                self.liveness.conn(c, &settings, now, &mut live)
            })?;
        let connections_elapsed = start.elapsed();
        let half_open =
            sweep_map::<FlowKey, Conn>(self.half_open.as_raw_fd(), names::HALF_OPEN, |_, c| {
                self.liveness.conn(c, &settings, now, &mut live)
            })?;
        let mut to_share = Vec::new();
        let sessions = sweep_map::<SessionKey, Session>(
            self.sessions.as_raw_fd(),
            names::SESSIONS,
            |k, s| {
                let expired = self.liveness.session(k, s, now, &mut live);
                if !expired
                    && self
                        .share
                        .get(&k.vip_id)
                        .is_some_and(|&t| s.last_seen_ns > t)
                {
                    to_share.push((*k, *s));
                }
                expired
            },
        )?;
        // Pending sessions are not counted as live ones.
        let pending =
            sweep_map::<SessionKey, Session>(self.pending.as_raw_fd(), names::PENDING, |k, s| {
                self.liveness.session(k, s, now, &mut StdHashMap::new())
            })?;
        Ok(SweepReport {
            live,
            to_share,
            connections,
            half_open,
            sessions,
            pending,
            connections_elapsed,
            elapsed: start.elapsed(),
        })
    }
}

/// Delete `keys` from the hash map behind `fd`, in batches.
fn delete_keys<K: aya::Pod>(fd: std::os::fd::RawFd, name: &'static str, keys: &[K]) -> Result<u64> {
    crate::batch::delete(fd, keys).map_err(|source| DataplaneError::Batch { name, source })
}

/// What one sweep did to one table.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Swept {
    /// Entries read.
    pub scanned: u64,
    /// Expired entries deleted.
    pub deleted: u64,
}

impl Swept {
    /// Entries left in the table.
    #[must_use]
    pub const fn left(&self) -> u64 {
        self.scanned.saturating_sub(self.deleted)
    }
}

/// Read the hash map behind `fd` in batches and delete the entries
/// `expired` selects.
fn sweep_map<K: aya::Pod + Default, V: aya::Pod + Default>(
    fd: std::os::fd::RawFd,
    name: &'static str,
    mut expired: impl FnMut(&K, &V) -> bool,
) -> Result<Swept> {
    let mut scanned = 0;
    let mut gone: Vec<K> = Vec::new();
    crate::batch::for_each::<K, V>(fd, |keys, values| {
        scanned += keys.len() as u64;
        gone.extend(
            keys.iter()
                .zip(values)
                .filter(|(k, v)| expired(k, v))
                .map(|(k, _)| *k),
        );
    })
    .map_err(|source| DataplaneError::Batch { name, source })?;
    Ok(Swept {
        scanned,
        deleted: delete_keys(fd, name, &gone)?,
    })
}

#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    /// Live connections and sessions per backend (slot, generation).
    pub live: StdHashMap<(u32, u32), Live>,
    /// Sessions to publish to the other hosts (see [`Tables::sweeper`]).
    pub to_share: Vec<(SessionKey, Session)>,
    pub connections: Swept,
    pub half_open: Swept,
    pub sessions: Swept,
    pub pending: Swept,
    /// Time spent on the connection table.
    pub connections_elapsed: Duration,
    /// Time spent on both tables.
    pub elapsed: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnView {
    /// In the connection table; else an unconfirmed flow (TCP handshake in
    /// progress, UDP not yet answered and continued).
    #[serde(default)]
    pub confirmed: bool,
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
    /// Since the client was pinned to this backend.
    #[serde(default)]
    pub age: Duration,
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
    pub http: Vec<(
        crate::services::VipId,
        Option<Endpoint>,
        crate::proxy::HttpCounters,
    )>,
}

/// A backend's state, for the metrics.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendState {
    pub vip: crate::services::VipId,
    pub backend: Endpoint,
    /// `up`, `down`, `draining` or `down, draining`.
    pub state: String,
    /// Passes its health checks (or has none).
    pub up: bool,
    /// Checks passed and failed, with a health check.
    pub checks: Option<(u64, u64)>,
}
