//! The announce interface and the VIP addresses on it, over rtnetlink:
//! the BGP daemon exports that interface's addresses, so adding a VIP's
//! /32 (IPv6: /128) announces it and removing it withdraws it.

use std::{collections::BTreeSet, net::IpAddr};

use netlink_packet_core::{
    NetlinkMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope},
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::protocols;

use super::netdev::{request, NetdevError};

/// What is wrong with the announce interface.
#[derive(Debug, thiserror::Error)]
pub enum VipAddrError {
    #[error(
        "announce.interface {name}: it does not exist, and this kernel can create neither a \
         dummy nor an ifb device (CONFIG_DUMMY, CONFIG_IFB). Create an interface of that name \
         yourself (any type works: `ip link add {name} type bridge`, or a veth pair), or load \
         the dummy module"
    )]
    NoDeviceType { name: String },
    #[error("announce.interface {name}: {what}: {source}")]
    Netlink {
        name: String,
        what: &'static str,
        source: NetdevError,
    },
}

/// The announce interface, ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    /// The device type lb-ctl created it as (`None`: it existed).
    pub created: Option<&'static str>,
}

fn ifindex(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// The interface `name`, set up: as it is when it exists (whatever its
/// type), else created as a dummy device, else as an ifb device (kernels
/// built without dummy devices), else refused with the reason.
///
/// # Errors
/// When it cannot be had, saying why and what to do.
pub fn ensure(name: &str) -> Result<Interface, VipAddrError> {
    let err = |what, source| VipAddrError::Netlink {
        name: name.to_string(),
        what,
        source,
    };
    let mut created = None;
    if ifindex(name).is_none() {
        for (kind, label) in [(InfoKind::Dummy, "dummy"), (InfoKind::Ifb, "ifb")] {
            match create(name, kind) {
                Ok(()) => {
                    created = Some(label);
                    break;
                }
                // The kernel has no such device type.
                Err(NetdevError::Kernel { code, .. }) if code == -libc::EOPNOTSUPP => {}
                // Created meanwhile by someone else: use it.
                Err(NetdevError::Kernel { code, .. }) if code == -libc::EEXIST => break,
                Err(e) => return Err(err("creating it", e)),
            }
        }
    }
    let Some(index) = ifindex(name) else {
        return Err(VipAddrError::NoDeviceType {
            name: name.to_string(),
        });
    };
    set_up(index).map_err(|e| err("setting it up", e))?;
    Ok(Interface {
        name: name.to_string(),
        ifindex: index,
        created,
    })
}

fn create(name: &str, kind: InfoKind) -> Result<(), NetdevError> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
    request(protocols::NETLINK_ROUTE, req).map(drop)
}

fn set_up(index: u32) -> Result<(), NetdevError> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::SetLink(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    request(protocols::NETLINK_ROUTE, req).map(drop)
}

/// A host address: a /32, or a /128 (without duplicate address detection,
/// so that it is usable, and announced, at once).
fn address(index: u32, addr: IpAddr) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    match addr {
        IpAddr::V4(_) => {
            msg.header.family = AddressFamily::Inet;
            msg.header.prefix_len = 32;
            msg.attributes.push(AddressAttribute::Local(addr));
        }
        IpAddr::V6(_) => {
            msg.header.family = AddressFamily::Inet6;
            msg.header.prefix_len = 128;
            msg.header.flags = AddressHeaderFlags::Nodad;
        }
    }
    msg.attributes.push(AddressAttribute::Address(addr));
    msg
}

/// Put `addr` (a /32 or /128) on the interface (already there: fine).
///
/// # Errors
/// When the kernel refuses it.
pub fn add(iface: &Interface, addr: IpAddr) -> Result<(), VipAddrError> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewAddress(address(
        iface.ifindex,
        addr,
    )));
    req.header.flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
    match request(protocols::NETLINK_ROUTE, req) {
        Err(NetdevError::Kernel { code, .. }) if code == -libc::EEXIST => Ok(()),
        r => r.map(drop).map_err(|source| VipAddrError::Netlink {
            name: iface.name.clone(),
            what: "adding a VIP address",
            source,
        }),
    }
}

/// Take `addr` off the interface (already gone: fine).
///
/// # Errors
/// When the kernel refuses it.
pub fn remove(iface: &Interface, addr: IpAddr) -> Result<(), VipAddrError> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::DelAddress(address(
        iface.ifindex,
        addr,
    )));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    match request(protocols::NETLINK_ROUTE, req) {
        Err(NetdevError::Kernel { code, .. })
            if code == -libc::EADDRNOTAVAIL || code == -libc::ENODEV =>
        {
            Ok(())
        }
        r => r.map(drop).map_err(|source| VipAddrError::Netlink {
            name: iface.name.clone(),
            what: "removing a VIP address",
            source,
        }),
    }
}

/// The host addresses (IPv4 /32, IPv6 /128) on the interface now.
///
/// # Errors
/// When the kernel refuses the dump.
pub fn held(iface: &Interface) -> Result<BTreeSet<IpAddr>, VipAddrError> {
    let mut out = held_of(iface, AddressFamily::Inet)?;
    out.extend(held_of(iface, AddressFamily::Inet6)?);
    Ok(out)
}

fn held_of(iface: &Interface, family: AddressFamily) -> Result<BTreeSet<IpAddr>, VipAddrError> {
    let mut msg = AddressMessage::default();
    msg.header.family = family;
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetAddress(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let answers =
        request(protocols::NETLINK_ROUTE, req).map_err(|source| VipAddrError::Netlink {
            name: iface.name.clone(),
            what: "listing its addresses",
            source,
        })?;
    Ok(answers
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) if a.header.index == iface.ifindex => {
                a.attributes.into_iter().find_map(|attr| match attr {
                    AddressAttribute::Address(ip @ IpAddr::V4(_)) if a.header.prefix_len == 32 => {
                        Some(ip)
                    }
                    AddressAttribute::Address(ip @ IpAddr::V6(v6))
                        if a.header.prefix_len == 128 && !v6.is_unicast_link_local() =>
                    {
                        Some(ip)
                    }
                    _ => None,
                })
            }
            _ => None,
        })
        .collect())
}
