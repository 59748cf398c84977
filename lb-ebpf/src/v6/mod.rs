//! The IPv6 packet path, in the order of IPv4's (see the crate's top):
//! [`parse`] (extension headers walked), the address filter, [`conntrack`]
//! (`CONNS6`, then the unconfirmed flows of `HALF_OPEN6`), [`select`] for
//! a new flow (`SESSIONS6`, `PENDING6`, the VIP's selection table),
//! [`rewrite`] (no header checksum: only TCP/UDP's), then the shared
//! [`crate::forward`]. IPv6 has tables of its own so that IPv4's entries
//! keep their 4-byte addresses (`lb_common::conn6`).
//!
//! It runs as a program of its own (`lb_xdp6`), tail-called by `lb_xdp`
//! for IPv6 frames, and keeps its keys and entries in a per-CPU scratch
//! area ([`Scratch6`]): the IPv4 path alone takes most of the BPF stack.

pub mod conntrack;
pub mod parse;
mod rewrite;
mod select;
mod session;

use aya_ebpf::programs::XdpContext;
use lb_common::{
    conn6::{ClientKey6, FlowKey6, HalfOpen6, SessionKey6, VipKey6},
    Reason,
};

use crate::{conns, filter, forward, maps::SCRATCH6, stats};

/// The IPv6 path's working memory (`SCRATCH6`, per CPU): the packet's key,
/// the keys it looks up with, and an entry being put together.
#[repr(C)]
pub struct Scratch6 {
    pub key: FlowKey6,
    pub twin: FlowKey6,
    pub half: HalfOpen6,
    pub client: ClientKey6,
    pub session: SessionKey6,
    pub vip: VipKey6,
    pub _pad: [u8; 4],
}

/// The IPv6 program's path; `Err` carries the reason for leaving the
/// packet to the kernel (or dropping it).
#[inline(always)]
pub fn run(ctx: &XdpContext) -> Result<u32, u32> {
    let s = SCRATCH6
        .get_ptr_mut(0)
        .ok_or(Reason::PASS_IPV6_UNSUPPORTED)?;
    // SAFETY: a per-CPU map value, used by this run only.
    let s = unsafe { &mut *s };
    let pkt = parse::parse(ctx, &mut s.key)?;
    let to_vip = filter::ours6(&s.key).ok_or(Reason::PASS_NOT_VIP)?;
    if pkt.udp_zero_checksum {
        return Err(Reason::DROP_UDP_ZERO_CHECKSUM);
    }
    let now = conns::now();
    let flow = match conntrack::lookup(&pkt, s, to_vip, now)? {
        Some(flow) => flow,
        None => select::new_flow(&pkt, s, now)?,
    };
    stats::traffic(&flow, pkt.len);
    let proto = s.key.proto;
    if flow.dsr {
        return Ok(forward::forward(ctx, pkt.eth, flow.hop, true, |p| {
            forward::fib6(p, pkt.ip, proto, ports(&pkt), Some(flow.nat_addr))
        }));
    }
    if flow.reply {
        rewrite::snat(&pkt, &s.key, &flow.nat_addr, flow.nat_port);
    } else {
        rewrite::dnat(&pkt, &s.key, &flow.nat_addr, flow.nat_port);
    }
    Ok(forward::forward(ctx, pkt.eth, flow.hop, false, |p| {
        forward::fib6(p, pkt.ip, proto, ports(&pkt), None)
    }))
}

/// The packet's ports as they are now (after the rewrite).
#[inline(always)]
fn ports(pkt: &parse::Packet6) -> [u16; 2] {
    // SAFETY: bounds-checked by `parse`.
    unsafe { *pkt.ports }
}
