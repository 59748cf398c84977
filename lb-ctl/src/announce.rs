//! Announcing the VIPs by BGP (`announce:`): the announcer puts each VIP
//! address that should be announced on the announce interface, and takes
//! it off when it should not be; the host's BGP daemon (BIRD, FRR) exports
//! that interface's addresses to its peers. What should be announced is
//! decided in [`crate::model::announce::plan`]; this applies it, logs each
//! change once, and remembers what it put there in a state file next to
//! the control socket, so that the next controller, and `lb-ctl detach`,
//! know which addresses are lb's.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};

use crate::{
    kernel::vipaddr::{self, Interface, VipAddrError},
    model::{
        announce::{plan, AddrState, Announce, Phase},
        services::Services,
    },
};

/// What the state file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announced {
    pub interface: String,
    pub addresses: BTreeSet<IpAddr>,
}

/// The state file of the controller whose control socket is `socket`.
#[must_use]
pub fn state_file(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".announce");
    PathBuf::from(name)
}

fn read_state(path: &Path) -> Option<Announced> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The announcer of one controller.
pub struct Announcer {
    config: Announce,
    iface: Interface,
    /// When the data path was attached (the delay counts from then).
    started: Instant,
    stopping: bool,
    /// Addresses on the interface when this controller started.
    held_at_start: BTreeSet<IpAddr>,
    /// The addresses lb put on the interface (removed when they no longer
    /// qualify, whatever configuration named them).
    ours: BTreeSet<IpAddr>,
    states: BTreeMap<IpAddr, AddrState>,
    state_file: PathBuf,
}

impl Announcer {
    /// Get the interface ready (created when missing) and take over what
    /// the controller before this one announced.
    ///
    /// # Errors
    /// When the interface cannot be had, saying why and what to do.
    pub fn start(config: Announce, state_file: PathBuf) -> Result<Self, VipAddrError> {
        let iface = vipaddr::ensure(&config.interface)?;
        if let Some(kind) = iface.created {
            log::info!(
                "announce: created interface {} ({kind} device); the BGP daemon exports its \
                 addresses",
                iface.name
            );
        }
        let held = vipaddr::held(&iface)?;
        let ours: BTreeSet<IpAddr> = read_state(&state_file)
            .filter(|s| s.interface == iface.name)
            .map(|s| s.addresses.intersection(&held).copied().collect())
            .unwrap_or_default();
        Ok(Self {
            config,
            iface,
            started: Instant::now(),
            stopping: false,
            held_at_start: held,
            ours,
            states: BTreeMap::new(),
            state_file,
        })
    }

    /// The `announce:` block in force.
    #[must_use]
    pub const fn config(&self) -> &Announce {
        &self.config
    }

    /// Each VIP address, announced or not, and why.
    #[must_use]
    pub const fn states(&self) -> &BTreeMap<IpAddr, AddrState> {
        &self.states
    }

    fn phase(&self) -> Phase {
        if self.stopping {
            Phase::Stopping
        } else if let Some(left) = self.config.delay.checked_sub(self.started.elapsed()) {
            if left.is_zero() {
                Phase::Running
            } else {
                Phase::Starting { left }
            }
        } else {
            Phase::Running
        }
    }

    /// Bring the interface in line with `services`: add what should be
    /// announced and is not, remove what lb put there and should not be.
    /// A failure is logged and tried again at the next call.
    pub fn apply(&mut self, services: &Services) {
        let held = match vipaddr::held(&self.iface) {
            Ok(h) => h,
            Err(e) => {
                log::error!("announce: {e}");
                return;
            }
        };
        let kept = if matches!(self.phase(), Phase::Starting { .. }) {
            &self.held_at_start
        } else {
            &held
        };
        let next = plan(services, self.config.when, self.phase(), kept);
        for (addr, state) in &next {
            if state.announced && !held.contains(addr) {
                match vipaddr::add(&self.iface, *addr) {
                    Ok(()) => {
                        self.ours.insert(*addr);
                    }
                    Err(e) => log::error!("announce: {e}"),
                }
            } else if state.announced {
                self.ours.insert(*addr);
            }
        }
        let gone: Vec<IpAddr> = self
            .ours
            .iter()
            .filter(|a| !next.get(a).is_some_and(|s| s.announced))
            .copied()
            .collect();
        for addr in gone {
            match vipaddr::remove(&self.iface, addr) {
                Ok(()) => {
                    self.ours.remove(&addr);
                }
                Err(e) => log::error!("announce: {e}"),
            }
        }
        self.log_changes(&next);
        self.states = next;
        self.save();
    }

    fn log_changes(&self, next: &BTreeMap<IpAddr, AddrState>) {
        for (addr, state) in next {
            let before = self.states.get(addr);
            if before.map(|b| b.announced) != Some(state.announced)
                && (state.announced || before.is_some())
            {
                log::info!(
                    "announce: VIP address {addr} {} on {}: {}",
                    if state.announced {
                        "announced"
                    } else {
                        "withdrawn"
                    },
                    self.iface.name,
                    state.why
                );
            } else if before.is_none() && !state.announced {
                log::info!("announce: VIP address {addr} not announced: {}", state.why);
            }
        }
        for addr in self.states.keys().filter(|a| !next.contains_key(a)) {
            log::info!(
                "announce: VIP address {addr} withdrawn from {}: no VIP uses it",
                self.iface.name
            );
        }
    }

    fn save(&self) {
        let state = Announced {
            interface: self.iface.name.clone(),
            addresses: self.ours.clone(),
        };
        let tmp = self.state_file.with_extension("announce.tmp");
        let written = serde_json::to_vec(&state)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(&tmp, json))
            .and_then(|()| std::fs::rename(&tmp, &self.state_file));
        if let Err(e) = written {
            log::warn!(
                "announce: recording the announced addresses in {}: {e}",
                self.state_file.display()
            );
        }
    }

    /// Withdraw every VIP (the stop without `--keep-state`).
    pub fn withdraw_all(&mut self, services: &Services) {
        self.stopping = true;
        self.apply(services);
    }

    /// Take a changed `announce:` block (reload): a new interface gets the
    /// addresses, the old one loses them.
    ///
    /// # Errors
    /// When the new interface cannot be had; nothing changes then.
    pub fn reconfigure(
        &mut self,
        config: Announce,
        services: &Services,
    ) -> Result<(), VipAddrError> {
        if config.interface != self.iface.name {
            let iface = vipaddr::ensure(&config.interface)?;
            for addr in std::mem::take(&mut self.ours) {
                if let Err(e) = vipaddr::remove(&self.iface, addr) {
                    log::error!("announce: {e}");
                }
            }
            self.iface = iface;
            self.states.clear();
        }
        self.config = config;
        self.apply(services);
        Ok(())
    }

    /// Stop announcing for good (`announce:` removed by a reload): every
    /// address lb put there is withdrawn.
    pub fn retire(mut self, services: &Services) {
        self.withdraw_all(services);
        let _ = std::fs::remove_file(&self.state_file);
    }
}

/// Take off what the controller of `socket` announced (`lb-ctl detach`):
/// the addresses its state file names, from the interface it names.
/// Returns them.
///
/// # Errors
/// When the interface exists and the kernel refuses a removal.
pub fn forget(socket: &Path) -> Result<Vec<IpAddr>, VipAddrError> {
    let path = state_file(socket);
    let Some(state) = read_state(&path) else {
        return Ok(Vec::new());
    };
    let removed = match nix::net::if_::if_nametoindex(state.interface.as_str()) {
        Ok(ifindex) => {
            let iface = Interface {
                name: state.interface.clone(),
                ifindex,
                created: None,
            };
            for addr in &state.addresses {
                vipaddr::remove(&iface, *addr)?;
            }
            state.addresses.into_iter().collect()
        }
        // The interface is gone, and its addresses with it.
        Err(_) => Vec::new(),
    };
    let _ = std::fs::remove_file(&path);
    Ok(removed)
}
