//! Per-CPU counters: no atomics needed, the controller sums the CPUs.

use lb_common::Counters;

use crate::{
    flow::Flow,
    maps::{BACKEND_STATS, ICMP_STATS, REASONS, VIP_STATS},
};

#[inline(always)]
pub fn reason(slot: u32) {
    if let Some(c) = REASONS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *c += 1 };
    }
}

/// What became of an ICMP error ([`lb_common::IcmpReason`]).
#[inline(always)]
pub fn icmp(slot: u32) {
    if let Some(c) = ICMP_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn add(c: Option<*mut Counters>, len: u64, new: bool) {
    if let Some(c) = c {
        // SAFETY: per-CPU slot, only this CPU writes it.
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += len;
        if new {
            c.new_conns += 1;
        }
    }
}

#[inline(always)]
pub fn traffic<A>(flow: &Flow<A>, len: u64) {
    add(VIP_STATS.get_ptr_mut(flow.vip_id), len, flow.new);
    add(BACKEND_STATS.get_ptr_mut(flow.backend_id), len, flow.new);
}
