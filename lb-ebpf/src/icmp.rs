//! ICMP errors about balanced flows. A router that cannot deliver a packet
//! (too big for its next hop, TTL exceeded, no route) or a backend with no
//! listener answers the packet's source with an error that carries the
//! packet's first bytes. For a balanced flow that source is an address the
//! other end never saw, so the error must be translated as the flow is:
//!
//! - an error about a reply (the embedded packet is VIP → client, sent to
//!   the VIP) goes to the backend, with the VIP replaced by the backend in
//!   the outer destination and the embedded source;
//! - an error about a forwarded packet (the embedded packet is client →
//!   backend, sent to the client) goes to the client, with the backend
//!   replaced by the VIP in the outer source and the embedded destination;
//! - an error about a `forwarding: dsr` reply (VIP → client, sent by the
//!   backend itself) goes unchanged to that backend's MAC address.
//!
//! The flow is found by the embedded header, reversed, in the connection
//! tables. Nothing is created or refreshed: errors cannot keep entries
//! alive or fill tables. Anything else goes to the kernel untouched, its
//! reason counted in `ICMP_STATS`.

use aya_ebpf::programs::XdpContext;
use lb_common::{conn::conn_flags, FlowKey, IcmpReason, Reason, PROTO_TCP, PROTO_UDP};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    conntrack, forward,
    parse::{ptr_at, IP_OFFSET_HI},
    rewrite::{self, IcmpHeaders},
    select, stats,
};

/// The ICMP header (type, code, checksum, 4 bytes that depend on the type).
const ICMP: usize = EthHdr::LEN + Ipv4Hdr::LEN;
const ICMP_LEN: usize = 8;
/// The embedded IPv4 header and its first 8 bytes of TCP/UDP (RFC 792: at
/// least that much is carried).
const INNER_IP: usize = ICMP + ICMP_LEN;
const INNER_L4: usize = INNER_IP + Ipv4Hdr::LEN;
const INNER_L4_MIN: usize = 8;
/// The checksum's offset in a TCP and in a UDP header.
const TCP_CHECK: usize = 16;
const UDP_CHECK: usize = 6;

/// Translate and forward the ICMP error whose headers `parse` checked, or
/// leave it to the kernel (`Err`, with its reason counted).
#[inline(always)]
pub fn handle(ctx: &XdpContext, eth: *mut EthHdr, ip: *mut Ipv4Hdr, now: u64) -> Result<u32, u32> {
    match translate(ctx, eth, ip, now) {
        Ok((action, slot)) => {
            stats::icmp(slot);
            Ok(action)
        }
        Err(slot) => {
            stats::icmp(slot);
            Err(Reason::PASS_NOT_TCP_UDP)
        }
    }
}

/// The verdict and the counter slot of a translated error; `Err` is the
/// counter slot of an error left to the kernel.
#[inline(always)]
fn translate(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    now: u64,
) -> Result<(u32, u32), u32> {
    // SAFETY: bounds-checked by `parse`, which also checked that the IPv4
    // total length lies inside the frame.
    let outer = unsafe { &*ip };
    let tot_len = usize::from(u16::from_be_bytes(outer.tot_len));
    // The error's own length, not the frame's (which may be padded).
    let carried = tot_len.saturating_sub(Ipv4Hdr::LEN + ICMP_LEN);
    if carried < Ipv4Hdr::LEN + INNER_L4_MIN {
        return Err(IcmpReason::TRUNCATED);
    }
    let truncated = |_| IcmpReason::TRUNCATED;
    let icmp_check: *mut u16 = ptr_at(ctx, ICMP + 2).map_err(truncated)?;
    let inner: *mut Ipv4Hdr = ptr_at(ctx, INNER_IP).map_err(truncated)?;
    let inner_ports: *mut [u16; 2] = ptr_at(ctx, INNER_L4).map_err(truncated)?;
    // SAFETY: `ptr_at` checked the bounds.
    let ih = unsafe { &*inner };
    if ih.vihl >> 4 != 4 || ih.vihl & 0xf < 5 {
        return Err(IcmpReason::MALFORMED);
    }
    if ih.vihl & 0xf != 5 || ih.frags[0] & IP_OFFSET_HI != 0 || ih.frags[1] != 0 {
        return Err(IcmpReason::UNSUPPORTED);
    }
    let inner_is_tcp = match ih.proto {
        PROTO_TCP => true,
        PROTO_UDP => false,
        _ => return Err(IcmpReason::NOT_TCP_UDP),
    };
    // An error goes to the source of the packet it is about.
    if outer.dst_addr != ih.src_addr {
        return Err(IcmpReason::MALFORMED);
    }
    // SAFETY: `ptr_at` checked the bounds.
    let [sport, dport] = unsafe { *inner_ports };
    // The flow of the packet the embedded one answers.
    let key = FlowKey {
        src_addr: u32::from_ne_bytes(ih.dst_addr),
        dst_addr: u32::from_ne_bytes(ih.src_addr),
        src_port: dport,
        dst_port: sport,
        proto: ih.proto,
        _pad: [0; 3],
    };
    let Some(c) = conntrack::peek(&key, now) else {
        // A DSR flow the table does not hold (yet, or any more): the
        // backend a mid-flow packet would go to.
        let b = select::dsr_backend(&key, now).ok_or(IcmpReason::UNMATCHED)?;
        return Ok((
            to_dsr_backend(ctx, eth, ip, b.addr),
            IcmpReason::TO_DSR_BACKEND,
        ));
    };
    if c.flags & conn_flags::DSR != 0 {
        return Ok((
            to_dsr_backend(ctx, eth, ip, c.nat_addr),
            IcmpReason::TO_DSR_BACKEND,
        ));
    }
    // The embedded TCP/UDP checksum, when the error carries it.
    let check_at = if inner_is_tcp { TCP_CHECK } else { UDP_CHECK };
    let inner_check = if carried >= Ipv4Hdr::LEN + check_at + 2 {
        ptr_at::<u16>(ctx, INNER_L4 + check_at).unwrap_or(core::ptr::null_mut())
    } else {
        core::ptr::null_mut()
    };
    let headers = IcmpHeaders {
        outer: ip,
        icmp_check,
        inner,
        inner_ports,
        inner_check,
        inner_is_tcp,
    };
    // The reply half (backend → client) is found by an error about a
    // forwarded packet; the forward half by an error about a reply.
    let (which, slot) = if c.is_reply() {
        (1, IcmpReason::TO_CLIENT)
    } else {
        (0, IcmpReason::TO_BACKEND)
    };
    rewrite::icmp_error(&headers, which, c.nat_addr, c.nat_port);
    let action = forward::forward(ctx, eth, crate::flow::Cache::none(), false, |p| {
        forward::fib4(p, ip, [0, 0], None)
    });
    Ok((action, slot))
}

/// Send the error, unchanged, to the MAC address of the DSR backend at
/// `backend` (which holds the VIP it is addressed to).
#[inline(always)]
fn to_dsr_backend(ctx: &XdpContext, eth: *mut EthHdr, ip: *mut Ipv4Hdr, backend: u32) -> u32 {
    forward::forward(ctx, eth, crate::flow::Cache::none(), true, |p| {
        forward::fib4(p, ip, [0, 0], Some(backend))
    })
}
