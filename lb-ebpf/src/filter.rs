//! Whether a packet can be the balancer's at all: its destination a VIP
//! address, or its source a backend address. Two reads of small arrays
//! (`lb_common::addr_filter`) spare every other packet the host receives
//! the lookups in the connection tables.

use lb_common::{addr_filter, FlowKey};

use crate::maps::ADDR_FILTER;

/// False when the packet is certainly not the balancer's.
#[inline(always)]
pub fn maybe_ours(key: &FlowKey) -> bool {
    set(0, key.dst_addr) || set(addr_filter::BACKENDS, key.src_addr)
}

/// Whether `addr`'s bit is set in the bitmap starting at word `base` (an
/// unreadable word counts as set: the tables decide then).
#[inline(always)]
fn set(base: u32, addr: u32) -> bool {
    let (word, mask) = addr_filter::bit(addr);
    ADDR_FILTER.get(base + word).is_none_or(|w| *w & mask != 0)
}
