//! The XDP program: loading it (with its maps, pinned or not), attaching
//! it to interfaces or taking over a pinned attachment, detaching, and the
//! checks before pinned maps are reused.

use std::path::{Path, PathBuf};

use aya::{
    maps::{MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use lb_common::{
    map_names as names,
    sets::{sets_for, WAYS},
    PROGRAM6_NAME, PROGRAM_NAME,
};

use super::{
    error::{map_err, DataplaneError, Result},
    netdev,
    pins::{shape_difference, MapShape},
    tables::Tables,
    xdpmode::Mode,
};

/// The compiled XDP program, built by `build.rs`.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));

/// An XDP program that passes everything (`lb_pass`), for the far ends of
/// veth pairs: a veth device accepts XDP_TX'd or redirected frames only when
/// it runs an XDP program itself.
pub static PASS_PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-pass"));

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

/// Entries of `HALF_OPEN6` and `PENDING6` (LRU tables, one entry per
/// flow or client) for `limits.max_half_open`: as many as the IPv4 fixed
/// tables hold.
fn half_open6(max_half_open: u32) -> u32 {
    sets_for(max_half_open).saturating_mul(WAYS as u32)
}

/// Load the IPv6 program and put it where the IPv4 one tail-calls it
/// (`PROGS6`, slot 0), replacing the one a kept table held.
fn load_ipv6(ebpf: &mut Ebpf) -> Result<()> {
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM6_NAME)
        .ok_or(DataplaneError::MissingProgram)?
        .try_into()?;
    program.load()?;
    let program = program
        .fd()?
        .try_clone()
        .map_err(|e| DataplaneError::Program(aya::programs::ProgramError::IOError(e)))?;
    let map = ebpf
        .map_mut(names::PROGS6)
        .ok_or(DataplaneError::MissingMap(names::PROGS6))?;
    let mut progs = aya::maps::ProgramArray::try_from(map).map_err(map_err(names::PROGS6))?;
    progs.set(0, &program, 0).map_err(map_err(names::PROGS6))
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
            .map_max_entries(names::HALF_OPEN, sets_for(opts.max_half_open))
            .map_max_entries(names::PENDING, sets_for(opts.max_half_open))
            .map_max_entries(names::CONNS6, opts.max_connections.saturating_mul(2))
            .map_max_entries(names::SESSIONS6, opts.max_sessions)
            .map_max_entries(names::HALF_OPEN6, half_open6(opts.max_half_open))
            .map_max_entries(names::PENDING6, half_open6(opts.max_half_open));
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
        load_ipv6(&mut ebpf)?;
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
            addr_filter: take(&mut ebpf, names::ADDR_FILTER)?,
            v6: super::tables::Tables6 {
                vips: take(&mut ebpf, names::VIPS6)?,
                backend_addrs: take(&mut ebpf, names::BACKEND_ADDRS6)?,
                conns: take(&mut ebpf, names::CONNS6)?,
                sessions: take(&mut ebpf, names::SESSIONS6)?,
                half_open: take(&mut ebpf, names::HALF_OPEN6)?,
                pending: take(&mut ebpf, names::PENDING6)?,
            },
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
        // The map's size, and how to tell it in the config's terms: map
        // entries per configured entry (CONNS: two halves), or entries per
        // map entry (the fixed tables: ways per set).
        let (max_entries, field, per, ways) = match name {
            names::CONNS => (
                opts.max_connections.saturating_mul(2),
                Some("limits.max_connections"),
                2,
                1,
            ),
            names::SESSIONS | names::SESSIONS6 => {
                (opts.max_sessions, Some("limits.max_sessions"), 1, 1)
            }
            names::CONNS6 => (
                opts.max_connections.saturating_mul(2),
                Some("limits.max_connections"),
                2,
                1,
            ),
            names::HALF_OPEN6 | names::PENDING6 => (
                half_open6(opts.max_half_open),
                Some("limits.max_half_open"),
                1,
                1,
            ),
            names::HALF_OPEN | names::PENDING => (
                sets_for(opts.max_half_open),
                Some("limits.max_half_open"),
                1,
                WAYS as u32,
            ),
            _ => (def.max_entries(), None, 1, 1),
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
                have: have.max_entries / per * ways,
                field,
                wanted: max_entries / per * ways,
            });
        }
        return Err(DataplaneError::PinnedShape { path, name, what });
    }
    Ok(())
}
