//! The IPv6 tables, typed, and how an IPv6 VIP and its backends are
//! written into them: `VIPS6` holds the VIP (its id indexes the selection
//! tables and counters IPv4 VIPs use), `BACKEND_ADDRS6` each backend's
//! address at its `BACKENDS` slot (whose entry has the rest).

use std::net::{IpAddr, Ipv6Addr};

use aya::maps::{Array, HashMap, MapData};
use lb_common::{
    conn6::{Addr6, ClientKey6, Conn6, FlowKey6, HalfOpen6, SessionKey6, VipInfo6, VipKey6},
    ipv6::{fold, netmask6},
    Session, VipInfo,
};

use crate::model::services::Vip;

/// The IPv6 maps, typed.
pub struct Tables6 {
    pub vips: HashMap<MapData, VipKey6, VipInfo6>,
    pub backend_addrs: Array<MapData, Addr6>,
    pub conns: HashMap<MapData, FlowKey6, Conn6>,
    pub sessions: HashMap<MapData, SessionKey6, Session>,
    /// Unconfirmed flows (an LRU table).
    pub half_open: HashMap<MapData, ClientKey6, HalfOpen6>,
    /// Pending sessions (an LRU table).
    pub pending: HashMap<MapData, SessionKey6, Session>,
}

/// An IPv6 address as the data path holds it.
#[must_use]
pub fn raw_addr6(a: Ipv6Addr) -> Addr6 {
    let o = a.octets();
    let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// The address the data path holds as `raw`.
#[must_use]
pub fn addr6(raw: Addr6) -> Ipv6Addr {
    let mut o = [0u8; 16];
    for (i, w) in raw.iter().enumerate() {
        o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    Ipv6Addr::from(o)
}

/// The address filter's word for `a` (`lb_common::addr_filter::bit`): an
/// IPv6 address folded into one word first.
#[must_use]
pub fn filter_word(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => u32::from_ne_bytes(a.octets()),
        IpAddr::V6(a) => fold(raw_addr6(a)),
    }
}

/// The IPv6 address of `a`, or the unspecified one.
#[must_use]
pub const fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => Ipv6Addr::UNSPECIFIED,
    }
}

pub(crate) fn vip_key6(v: &Vip) -> VipKey6 {
    VipKey6 {
        addr: raw_addr6(v6(v.spec.id.endpoint.addr)),
        port: v.spec.id.endpoint.port.to_be(),
        proto: v.spec.id.protocol.number(),
        _pad: 0,
    }
}

/// The `VIPS6` entry of `v`, whose settings but the client mask are
/// `info` (as an IPv4 VIP's would be).
pub(crate) fn vip_info6(v: &Vip, info: VipInfo) -> VipInfo6 {
    VipInfo6 {
        info: VipInfo {
            client_mask: 0,
            ..info
        },
        client_mask: netmask6(v.spec.persistence_netmask6),
    }
}

/// Prefix length of a mask written by [`vip_info6`].
#[must_use]
pub fn prefix_len(mask: Addr6) -> u8 {
    mask.iter().map(|w| w.count_ones()).sum::<u32>() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_fold_into_the_filter() {
        let a: Ipv6Addr = "2001:db8:18::100".parse().unwrap();
        assert_eq!(addr6(raw_addr6(a)), a);
        assert_eq!(raw_addr6(a)[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(filter_word(IpAddr::V6(a)), fold(raw_addr6(a)));
        assert_eq!(prefix_len(netmask6(64)), 64);
        assert_eq!(prefix_len(netmask6(56)), 56);
    }
}
