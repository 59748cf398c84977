//! Announcing VIPs by BGP through the host's own BGP daemon (`announce:`):
//! which VIP addresses belong on the announce interface, and why. The
//! daemon (BIRD's `protocol direct`, FRR's `redistribute connected`)
//! exports that interface's addresses; lb-ctl only puts them there and
//! takes them away ([`crate::announce`] applies this plan).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::services::Services;

/// The `announce:` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announce {
    /// The interface whose addresses the BGP daemon exports; lb-ctl
    /// creates it (a dummy device) when it is missing.
    #[serde(default = "default_interface")]
    pub interface: String,
    /// Which VIPs are announced.
    #[serde(default)]
    pub when: When,
    /// After attach, nothing new is announced for this long (the health
    /// checks run, the cluster store is read).
    #[serde(default = "default_delay", with = "humantime_serde")]
    pub delay: Duration,
    /// At a stop: withdraw every VIP, keep forwarding this long, then stop.
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub drain: Duration,
}

fn default_interface() -> String {
    "lb-vips".into()
}

const fn default_delay() -> Duration {
    Duration::from_secs(5)
}

const fn default_drain() -> Duration {
    Duration::from_secs(10)
}

impl Default for Announce {
    fn default() -> Self {
        Self {
            interface: default_interface(),
            when: When::default(),
            delay: default_delay(),
            drain: default_drain(),
        }
    }
}

/// Which VIPs are announced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// A VIP with at least one backend up and not drained.
    #[default]
    Healthy,
    /// Every configured VIP.
    Always,
}

impl When {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Always => "always",
        }
    }
}

/// The longest stop drain accepted (systemd's default stop timeout is 90 s).
pub const MAX_DRAIN: Duration = Duration::from_secs(60);

impl Announce {
    /// Check the block; the message names the field.
    ///
    /// # Errors
    /// An interface name the kernel would refuse, or a drain too long.
    pub fn check(&self) -> Result<(), String> {
        let name = &self.interface;
        if name.is_empty()
            || name.len() > 15
            || name == "."
            || name == ".."
            || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(format!(
                "announce.interface {name:?} is not an interface name: 1 to 15 characters, \
                 without '/', ':' or spaces"
            ));
        }
        if self.drain > MAX_DRAIN {
            return Err(format!(
                "announce.drain {} is longer than {}: a stop would outlast service managers' \
                 stop timeouts",
                humantime::format_duration(self.drain),
                humantime::format_duration(MAX_DRAIN)
            ));
        }
        Ok(())
    }
}

/// Where the controller is in its life, as far as announcing goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Attached this long ago, `left` of `delay` still to wait: addresses
    /// already on the interface (a controller before this one announced
    /// them) stay; nothing new is announced.
    Starting { left: Duration },
    /// Announcing what qualifies.
    Running,
    /// Stopping: everything is withdrawn.
    Stopping,
}

/// One VIP address: announced or not, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrState {
    pub announced: bool,
    pub why: String,
}

/// Whether each VIP address of `services` should be announced: with
/// `when: healthy`, while any VIP on the address has a backend that is up
/// and not drained. `held` are the addresses on the interface now.
#[must_use]
pub fn plan(
    services: &Services,
    when: When,
    phase: Phase,
    held: &BTreeSet<IpAddr>,
) -> BTreeMap<IpAddr, AddrState> {
    // Per address: (backends usable, backends configured).
    let mut usable: BTreeMap<IpAddr, (usize, usize)> = BTreeMap::new();
    for v in services.vips() {
        let e = usable.entry(v.spec.id.endpoint.addr).or_default();
        e.0 += v
            .backends
            .iter()
            .filter(|b| !b.down && b.drain.is_none())
            .count();
        e.1 += v.backends.len();
    }
    usable
        .into_iter()
        .map(|(addr, (up, all))| {
            let (qualifies, because) = match when {
                When::Always => (true, "announce.when: always".to_string()),
                When::Healthy if up > 0 => (true, format!("{up} of {all} backends up")),
                When::Healthy if all == 0 => (false, "no backend configured".to_string()),
                When::Healthy => (false, format!("no backend up (0 of {all})")),
            };
            let state = match phase {
                Phase::Stopping => AddrState {
                    announced: false,
                    why: "withdrawn for the stop".into(),
                },
                Phase::Starting { .. } if qualifies && held.contains(&addr) => AddrState {
                    announced: true,
                    why: format!("{because}; kept from the controller before"),
                },
                Phase::Starting { left } if qualifies => AddrState {
                    announced: false,
                    why: format!(
                        "{because}; waiting for announce.delay ({} left)",
                        humantime::format_duration(Duration::from_secs(left.as_secs().max(1)))
                    ),
                },
                _ => AddrState {
                    announced: qualifies,
                    why: because,
                },
            };
            (addr, state)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        endpoint::{Endpoint, Protocol, VipId},
        services::{Forwarding, Mode, VipSpec},
    };

    use std::net::{Ipv4Addr, Ipv6Addr};

    fn services(addrs: &[(IpAddr, u16, usize)]) -> Services {
        let mut s = Services::default();
        for &(addr, port, backends) in addrs {
            let id = VipId {
                endpoint: Endpoint { addr, port },
                protocol: Protocol::Tcp,
            };
            s.add_vip(VipSpec {
                name: None,
                id,
                scheduler: crate::model::sched::Scheduler::Rr,
                persistence_timeout: Duration::ZERO,
                persistence_netmask: 32,
                persistence_netmask6: 64,
                max_lifetime: Duration::ZERO,
                health_check: None,
                // The XDP path is IPv4: an IPv6 VIP is the proxy's.
                mode: if addr.is_ipv6() {
                    Mode::Http
                } else {
                    Mode::Tcp
                },
                cookie: None,
                forwarding: Forwarding::Nat,
                tls: None,
            })
            .unwrap();
            for i in 0..backends {
                s.add_backend(&id, backend_addr(addr, i as u8), 1).unwrap();
            }
        }
        s
    }

    /// Backend `i` of a VIP at `vip`, of its family.
    fn backend_addr(vip: IpAddr, i: u8) -> Endpoint {
        let addr = match vip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 18, 1, 11 + i)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0x18,
                1,
                0,
                0,
                0,
                0x11 + u16::from(i),
            )),
        };
        Endpoint { addr, port: 8080 }
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101));
    const C: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 0x100));

    fn backend(s: &Services, addr: IpAddr, port: u16, i: u8) -> (VipId, Endpoint) {
        let id = s
            .vips()
            .find(|v| v.spec.id.endpoint.addr == addr && v.spec.id.endpoint.port == port)
            .unwrap()
            .spec
            .id;
        (id, backend_addr(addr, i))
    }

    #[test]
    fn healthy_vips_are_announced_while_a_backend_serves() {
        let mut s = services(&[(A, 80, 2), (B, 80, 1)]);
        let held = BTreeSet::new();
        let p = plan(&s, When::Healthy, Phase::Running, &held);
        assert!(p[&A].announced && p[&B].announced, "{p:?}");
        assert_eq!(p[&A].why, "2 of 2 backends up");
        // B's only backend goes down; A's are drained one, then down.
        let (vip, b) = backend(&s, B, 80, 0);
        s.set_down(&vip, b, true).unwrap();
        let (vip, b0) = backend(&s, A, 80, 0);
        s.drain(&vip, b0, false).unwrap();
        let p = plan(&s, When::Healthy, Phase::Running, &held);
        assert!(
            !p[&B].announced && p[&B].why == "no backend up (0 of 1)",
            "{p:?}"
        );
        assert!(p[&A].announced && p[&A].why == "1 of 2 backends up");
        let (_, b1) = backend(&s, A, 80, 1);
        s.set_down(&vip, b1, true).unwrap();
        assert!(!plan(&s, When::Healthy, Phase::Running, &held)[&A].announced);
        // `always` announces them all the same.
        let p = plan(&s, When::Always, Phase::Running, &held);
        assert!(p[&A].announced && p[&B].announced);
    }

    #[test]
    fn ipv6_vips_are_announced_as_ipv4_ones() {
        let mut s = services(&[(A, 80, 1), (C, 80, 1)]);
        let p = plan(&s, When::Healthy, Phase::Running, &BTreeSet::new());
        assert!(p[&A].announced && p[&C].announced, "{p:?}");
        let (vip, b) = backend(&s, C, 80, 0);
        s.set_down(&vip, b, true).unwrap();
        let p = plan(&s, When::Healthy, Phase::Running, &BTreeSet::new());
        assert!(p[&A].announced && !p[&C].announced, "{p:?}");
    }

    #[test]
    fn an_address_shared_by_vips_is_announced_while_any_qualifies() {
        let mut s = services(&[(A, 80, 1), (A, 443, 1)]);
        let (vip, b) = backend(&s, A, 80, 0);
        s.set_down(&vip, b, true).unwrap();
        let p = plan(&s, When::Healthy, Phase::Running, &BTreeSet::new());
        assert_eq!(p.len(), 1);
        assert!(p[&A].announced, "the :443 VIP still serves: {p:?}");
    }

    #[test]
    fn nothing_new_before_the_delay_and_nothing_at_the_stop() {
        let s = services(&[(A, 80, 1), (B, 80, 1)]);
        let held: BTreeSet<IpAddr> = [A].into();
        let starting = Phase::Starting {
            left: Duration::from_millis(2500),
        };
        let p = plan(&s, When::Healthy, starting, &held);
        assert!(p[&A].announced, "kept: {p:?}");
        assert!(!p[&B].announced);
        assert!(
            p[&B].why.contains("waiting for announce.delay (2s left)"),
            "{p:?}"
        );
        let p = plan(&s, When::Always, Phase::Stopping, &held);
        assert!(p
            .values()
            .all(|a| !a.announced && a.why == "withdrawn for the stop"));
    }

    #[test]
    fn bad_interface_names_and_long_drains_are_refused() {
        let ok = Announce::default();
        assert!(ok.check().is_ok());
        for name in ["", "a/b", "lb vips", "sixteen-chars-xx", "lb:0", ".."] {
            let a = Announce {
                interface: name.into(),
                ..Announce::default()
            };
            let e = a.check().unwrap_err();
            assert!(e.starts_with("announce.interface"), "{name}: {e}");
        }
        let a = Announce {
            drain: Duration::from_secs(61),
            ..Announce::default()
        };
        assert!(a.check().unwrap_err().starts_with("announce.drain"));
    }
}
