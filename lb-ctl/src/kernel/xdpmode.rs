//! Choosing the XDP attach mode so that what the program transmits is
//! delivered. In native mode a frame sent with XDP_TX or redirect leaves
//! through the driver's XDP transmit path, which not every device has:
//!
//! - **veth** delivers such a frame only into a peer that runs an XDP
//!   program in native mode itself (the peer's NAPI must exist and be woken;
//!   GRO on the peer is enough for redirected frames but not for XDP_TX,
//!   whose flush only wakes a peer with a program — `veth_xdp_flush` in the
//!   kernel's veth driver). Otherwise the frames are dropped and counted as
//!   `xdp_tx_errors`/`drops` on the device, silently for the clients.
//! - **other drivers** report what they can do in `xdp-features`: native
//!   XDP at all (`basic`) and, when the program redirects between several
//!   interfaces, accepting redirected frames (`ndo-xmit`).
//!
//! Generic mode runs the program on socket buffers, which every device can
//! transmit, at a higher cost per packet. `auto` (the default) takes native
//! when every interface can deliver and generic otherwise; an explicit
//! `native` that cannot deliver is refused with the reason and the fix.

use std::fmt;

use super::netdev::{self, xdp_act, Attached, Link};

/// What the operator asked for (`--xdp-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Requested {
    /// Native where every interface can deliver XDP-sent frames, else generic.
    #[default]
    Auto,
    /// In the driver: fastest; refused where frames would be dropped.
    Native,
    /// On socket buffers: works on any interface, slower.
    Generic,
}

/// The mode the program is attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Native,
    Generic,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// What is known about one interface to attach to.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub link: Link,
    /// The veth peer as seen from here; `None` when it could not be read.
    pub peer: Option<Link>,
    /// `xdp-features` bits; `None` on kernels that do not report them.
    pub features: Option<u64>,
}

/// Everything [`choose`] needs to know about `ifindex`.
///
/// # Errors
/// When the device cannot be read (its veth peer or features missing are
/// not errors: they are recorded as unknown).
pub fn facts(ifindex: u32) -> Result<Facts, netdev::NetdevError> {
    let link = netdev::link(ifindex)?;
    let peer = match (link.is_veth(), link.peer_ifindex) {
        (true, Some(peer)) => netdev::link_in(peer, link.peer_netnsid)
            .map_err(|e| log::debug!("reading the veth peer of {}: {e}", link.name))
            .ok(),
        _ => None,
    };
    let features = netdev::xdp_features(ifindex).unwrap_or_else(|e| {
        log::debug!("reading the XDP features of {}: {e}", link.name);
        None
    });
    Ok(Facts {
        link,
        peer,
        features,
    })
}

/// Why native mode would drop frames on this interface (`None`: it would
/// not). `several` says whether the program redirects between interfaces.
#[must_use]
pub fn native_obstacle(f: &Facts, several: bool) -> Option<String> {
    let name = &f.link.name;
    if f.link.is_veth() {
        let peer_name = || match &f.peer {
            Some(p) => format!("{} (ifindex {})", p.name, p.ifindex),
            None => format!("ifindex {}", f.link.peer_ifindex.unwrap_or(0)),
        };
        let where_ = f
            .link
            .peer_netnsid
            .map_or_else(String::new, |id| format!(" in network namespace id {id}"));
        return match &f.peer {
            None => Some(format!(
                "{name} is a veth device whose peer {}{where_} cannot be inspected, so frames sent \
                 by XDP_TX or redirect may be dropped there",
                peer_name()
            )),
            Some(p) if p.xdp != Attached::Native => Some(format!(
                "{name} is a veth device and its peer {}{where_} runs no XDP program in native \
                 mode: the veth driver drops frames sent by XDP_TX or redirect into such a peer",
                peer_name()
            )),
            Some(p) if !p.up => Some(format!(
                "{name} is a veth device and its peer {}{where_} is down",
                peer_name()
            )),
            Some(_) => None,
        };
    }
    let features = f.features?;
    if features & xdp_act::BASIC == 0 {
        return Some(format!("the driver of {name} has no native XDP support"));
    }
    if several && features & xdp_act::NDO_XMIT == 0 {
        return Some(format!(
            "the driver of {name} cannot transmit frames redirected to it by XDP (no ndo-xmit)"
        ));
    }
    None
}

/// The decision: the mode, and for each interface why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub mode: Mode,
    pub why: String,
}

/// Pick the mode for attaching to all of `ifaces` (one mode for all: a
/// frame redirected from a native interface into one that cannot take it
/// would be dropped).
///
/// # Errors
/// An explicit native mode that would drop frames, with the reason and the
/// fix.
pub fn choose(requested: Requested, ifaces: &[Facts]) -> Result<Choice, String> {
    let several = ifaces.len() > 1;
    let obstacles: Vec<String> = ifaces
        .iter()
        .filter_map(|f| native_obstacle(f, several))
        .collect();
    match requested {
        Requested::Generic => Ok(Choice {
            mode: Mode::Generic,
            why: "requested with --xdp-mode generic".into(),
        }),
        Requested::Native if obstacles.is_empty() => Ok(Choice {
            mode: Mode::Native,
            why: "requested with --xdp-mode native".into(),
        }),
        Requested::Native => Err(format!(
            "--xdp-mode native would drop what the balancer sends: {}. Fix: use --xdp-mode auto \
             (it attaches in generic mode here) or --xdp-mode generic; or, for veth, attach an \
             XDP program in native mode to the peer (any program that returns XDP_PASS, for \
             example `xdp-loader load -m native PEER xdp_pass.o` in the peer's namespace)",
            obstacles.join("; ")
        )),
        Requested::Auto if obstacles.is_empty() => Ok(Choice {
            mode: Mode::Native,
            why: "every interface can deliver frames sent by XDP".into(),
        }),
        Requested::Auto => Ok(Choice {
            mode: Mode::Generic,
            why: format!("native mode would drop frames: {}", obstacles.join("; ")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veth(name: &str, peer: Option<(Attached, bool)>) -> Facts {
        Facts {
            link: Link {
                ifindex: 2,
                name: name.into(),
                up: true,
                kind: Some("veth".into()),
                peer_ifindex: Some(7),
                peer_netnsid: Some(0),
                ..Link::default()
            },
            peer: peer.map(|(xdp, up)| Link {
                ifindex: 7,
                name: "lb0".into(),
                up,
                kind: Some("veth".into()),
                xdp,
                ..Link::default()
            }),
            features: Some(xdp_act::BASIC | xdp_act::REDIRECT),
        }
    }

    fn nic(name: &str, features: Option<u64>) -> Facts {
        Facts {
            link: Link {
                ifindex: 3,
                name: name.into(),
                up: true,
                ..Link::default()
            },
            peer: None,
            features,
        }
    }

    #[test]
    fn veth_needs_a_native_program_on_an_up_peer() {
        let bare = veth("eth0", Some((Attached::None, true)));
        let c = choose(Requested::Auto, std::slice::from_ref(&bare)).unwrap();
        assert_eq!(c.mode, Mode::Generic);
        assert!(c.why.contains("runs no XDP program"), "{}", c.why);
        let generic_peer = veth("eth0", Some((Attached::Generic, true)));
        assert_eq!(
            choose(Requested::Auto, &[generic_peer]).unwrap().mode,
            Mode::Generic
        );
        let down = veth("eth0", Some((Attached::Native, false)));
        assert_eq!(
            choose(Requested::Auto, &[down]).unwrap().mode,
            Mode::Generic
        );
        let unknown = veth("eth0", None);
        assert_eq!(
            choose(Requested::Auto, &[unknown]).unwrap().mode,
            Mode::Generic
        );
        let ready = veth("eth0", Some((Attached::Native, true)));
        assert_eq!(
            choose(Requested::Auto, &[ready]).unwrap().mode,
            Mode::Native
        );
    }

    #[test]
    fn explicit_native_is_refused_with_interface_reason_and_fix() {
        let e = choose(
            Requested::Native,
            &[veth("eth0", Some((Attached::None, true)))],
        )
        .unwrap_err();
        for part in [
            "eth0",
            "lb0 (ifindex 7)",
            "no XDP program",
            "--xdp-mode generic",
            "peer",
        ] {
            assert!(e.contains(part), "{part:?} missing from {e}");
        }
        let ok = choose(
            Requested::Native,
            &[veth("eth0", Some((Attached::Native, true)))],
        );
        assert_eq!(ok.unwrap().mode, Mode::Native);
        // Generic is always possible.
        let g = choose(Requested::Generic, &[veth("eth0", None)]).unwrap();
        assert_eq!(g.mode, Mode::Generic);
    }

    #[test]
    fn drivers_follow_their_xdp_features() {
        let full = Some(xdp_act::BASIC | xdp_act::REDIRECT | xdp_act::NDO_XMIT);
        let no_xmit = Some(xdp_act::BASIC | xdp_act::REDIRECT);
        assert_eq!(
            choose(Requested::Auto, &[nic("eth0", full)]).unwrap().mode,
            Mode::Native
        );
        // One interface only transmits with XDP_TX: basic support is enough.
        assert_eq!(
            choose(Requested::Auto, &[nic("eth0", no_xmit)])
                .unwrap()
                .mode,
            Mode::Native
        );
        // Two interfaces redirect to each other: both must accept frames.
        let two = [nic("eth0", full), nic("eth1", no_xmit)];
        let c = choose(Requested::Auto, &two).unwrap();
        assert_eq!(c.mode, Mode::Generic);
        assert!(c.why.contains("eth1"), "{}", c.why);
        assert_eq!(
            choose(Requested::Auto, &[nic("eth0", Some(0))])
                .unwrap()
                .mode,
            Mode::Generic
        );
        // A kernel that does not report features: trust the driver.
        assert_eq!(
            choose(Requested::Auto, &[nic("eth0", None)]).unwrap().mode,
            Mode::Native
        );
        // One veth without a ready peer makes every interface generic.
        let mixed = [
            nic("eth0", full),
            veth("eth1", Some((Attached::None, true))),
        ];
        assert_eq!(choose(Requested::Auto, &mixed).unwrap().mode, Mode::Generic);
    }
}
