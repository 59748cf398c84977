//! Whether a packet can be the balancer's at all: its destination a VIP
//! address, or its source a backend address. Two reads of small arrays
//! (`lb_common::addr_filter`) spare every other packet the host receives
//! the lookups in the connection tables, and tell the unconfirmed flows'
//! lookup which direction to look for.

use lb_common::{addr_filter, conn6::FlowKey6, ipv6::fold, FlowKey};

use crate::maps::ADDR_FILTER;

/// `None` when the packet is certainly not the balancer's, else whether
/// its destination may be a VIP address (a client's packet). Whether its
/// source may be a backend is asked only when needed ([`from_backend`]).
#[inline(always)]
pub fn ours(key: &FlowKey) -> Option<bool> {
    if set(0, key.dst_addr) {
        Some(true)
    } else if from_backend(key) {
        Some(false)
    } else {
        None
    }
}

/// Whether the packet's source may be a backend address.
#[inline(always)]
pub fn from_backend(key: &FlowKey) -> bool {
    set(addr_filter::BACKENDS, key.src_addr)
}

/// [`ours`] for an IPv6 packet: its addresses are folded into one word
/// each, in the same bitmaps.
#[inline(always)]
pub fn ours6(key: &FlowKey6) -> Option<bool> {
    if set(0, fold(key.dst_addr)) {
        Some(true)
    } else if from_backend6(key) {
        Some(false)
    } else {
        None
    }
}

/// [`from_backend`] for an IPv6 packet.
#[inline(always)]
pub fn from_backend6(key: &FlowKey6) -> bool {
    set(addr_filter::BACKENDS, fold(key.src_addr))
}

/// Whether `addr`'s bit is set in the bitmap starting at word `base` (an
/// unreadable word counts as set: the tables decide then).
#[inline(always)]
fn set(base: u32, addr: u32) -> bool {
    let (word, mask) = addr_filter::bit(addr);
    ADDR_FILTER.get(base + word).is_none_or(|w| *w & mask != 0)
}
