//! The lb XDP program. A packet goes through the modules in this order:
//!
//! 1. [`parse`]: bounds-checked Ethernet/IPv4/TCP/UDP parsing into a flow key;
//!    anything else is passed to the kernel untouched, with its reason counted.
//! 2. [`filter`]: a packet whose destination is no VIP address and whose
//!    source is no backend address goes to the kernel at once.
//!    [`conntrack`]: the connection table (`CONNS`) by the packet's own tuple
//!    (a pure SYN skips it: it starts a connection), then the unconfirmed
//!    flows ([`handshake`], `HALF_OPEN`: one way per flow, found by both
//!    directions). A live entry is a forward flow (client to VIP) or a reply
//!    (backend to client); its state and timestamps are refreshed in place.
//!    The client's ACK after the backend's SYN-ACK (UDP: its next datagram
//!    after the answer) moves an unconfirmed flow to `CONNS` and records the
//!    client's session.
//! 3. [`select`]: for a new flow to a VIP, the persistence table
//!    (`SESSIONS`), then the pending sessions ([`pending`], round robin), or
//!    else the VIP's selection table (`RING`, `MAGLEV`) picks the backend,
//!    and the flow is written into its set of `HALF_OPEN`. [`session`]
//!    records and renews the client's session when a connection of it is
//!    confirmed or refreshed.
//! 4. [`rewrite`]: DNAT (forward) or SNAT back to the VIP (reply), with
//!    incremental checksums.
//! 5. [`forward`]: next hop by `bpf_fib_lookup` (cached in the connection
//!    entry, or for a new flow in its backend's, renewed every second), out by XDP_TX or redirect, or to the
//!    kernel while the neighbour is unresolved.
//!
//! ICMP errors take a side path: [`icmp`] finds the flow of the packet an
//! error carries (read-only: no state is created or refreshed), rewrites
//! both headers as the flow's own packets are rewritten, and forwards the
//! error to the backend or the client.
//!
//! IPv6 packets take the same path through tables of their own ([`v6`]).
//!
//! The maps live in [`maps`]; the decisions shared with the controller
//! (expiry, TCP states, checksums) live in `lb-common`.
#![no_std]
#![no_main]
// `atomic_xadd` for the shared round-robin cursor (see `select::pick`).
#![feature(core_intrinsics)]
#![allow(internal_features)]
// Map keys are passed by reference on purpose: it keeps them off the copy
// path on the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod conns;
mod conntrack;
mod filter;
mod flow;
mod forward;
mod handshake;
mod icmp;
mod maps;
mod parse;
mod pending;
mod rewrite;
mod runtime;
mod select;
mod session;
mod stats;
mod v6;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::Reason;

#[xdp]
#[inline(always)]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    match run(&ctx) {
        Ok(action) => action,
        Err(reason) => verdict(reason),
    }
}

/// What becomes of a packet the path gave up on for `reason` (counted).
#[inline(always)]
pub(crate) fn verdict(reason: u32) -> u32 {
    stats::reason(reason);
    if Reason::drops(reason) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// The IPv6 program, tail-called by [`lb_xdp`] for every IPv6 frame
/// (through `PROGS6`, which the controller fills).
#[xdp]
#[inline(always)]
pub fn lb_xdp6(ctx: XdpContext) -> u32 {
    match v6::run(&ctx) {
        Ok(action) => action,
        Err(reason) => verdict(reason),
    }
}

/// The packet's path; `Err` carries the reason for leaving it to the kernel
/// (or dropping it).
#[inline(always)]
fn run(ctx: &XdpContext) -> Result<u32, u32> {
    let pkt = match parse::parse(ctx)? {
        parse::Parsed::Flow(pkt) => pkt,
        parse::Parsed::IcmpError { eth, ip } => {
            return icmp::handle(ctx, eth, ip, conns::now());
        }
        parse::Parsed::Ipv6 => {
            // SAFETY: the helper either jumps to the IPv6 program, never
            // to return, or fails (no program in the slot) and returns.
            unsafe { maps::PROGS6.tail_call(ctx, 0) };
            return Err(Reason::PASS_IPV6_UNSUPPORTED);
        }
    };
    // Another instruction stream, same behaviour (see Cargo.toml).
    #[cfg(feature = "build-variant")]
    let _ = conns::now();
    let to_vip = filter::ours(&pkt.key).ok_or(Reason::PASS_NOT_VIP)?;
    let now = conns::now();
    let flow = match conntrack::lookup(&pkt, to_vip, now)? {
        Some(flow) => flow,
        None => select::new_flow(&pkt, now)?,
    };
    stats::traffic(&flow, pkt.len);
    if flow.dsr {
        // Direct server return: the packet keeps its addresses and goes to
        // the backend's MAC address.
        return Ok(forward::forward(ctx, pkt.eth, flow.hop, true, |p| {
            forward::fib4(p, pkt.ip, ports(&pkt), Some(flow.nat_addr))
        }));
    }
    if flow.reply {
        rewrite::snat(&pkt, flow.nat_addr, flow.nat_port);
    } else {
        rewrite::dnat(&pkt, flow.nat_addr, flow.nat_port);
    }
    Ok(forward::forward(ctx, pkt.eth, flow.hop, false, |p| {
        forward::fib4(p, pkt.ip, ports(&pkt), None)
    }))
}

/// The packet's ports as they are now (after the rewrite).
#[inline(always)]
fn ports(pkt: &parse::Packet) -> [u16; 2] {
    // SAFETY: bounds-checked by `parse`.
    unsafe { *pkt.ports }
}
