//! NAT rewrites with incremental checksum updates: of balanced packets,
//! and of the ICMP errors about them.

use lb_common::checksum::{replace2, replace4, udp_fixup};
use network_types::ip::Ipv4Hdr;

use crate::parse::Packet;

/// Forward path: destination (VIP) becomes the backend.
#[inline(always)]
pub fn dnat(pkt: &Packet, addr: u32, port: u16) {
    rewrite(pkt, addr, port, 1);
}

/// Reply path: source (backend) becomes the VIP.
#[inline(always)]
pub fn snat(pkt: &Packet, addr: u32, port: u16) {
    rewrite(pkt, addr, port, 0);
}

/// Rewrite the source (`which == 0`) or destination (`which == 1`) address
/// and port.
#[inline(always)]
fn rewrite(pkt: &Packet, addr: u32, port: u16, which: usize) {
    let (old_addr, old_port) = if which == 0 {
        (pkt.key.src_addr, pkt.key.src_port)
    } else {
        (pkt.key.dst_addr, pkt.key.dst_port)
    };
    // SAFETY: the pointers were bounds-checked by `parse`.
    unsafe {
        set_addr(&mut *pkt.ip, which, old_addr, addr);
        (*pkt.ports)[which] = port;
        let l4 = pkt.l4_check.read_unaligned();
        pkt.l4_check
            .write_unaligned(l4_check(l4, pkt.is_tcp, old_addr, addr, old_port, port));
    }
}

/// Set the source (`which == 0`) or destination address of `ip` from `old`
/// to `addr`, patching the header checksum; returns the checksum before
/// and after.
#[inline(always)]
fn set_addr(ip: &mut Ipv4Hdr, which: usize, old: u32, addr: u32) -> (u16, u16) {
    let before = u16::from_ne_bytes(ip.check);
    let after = replace4(before, old, addr);
    ip.check = after.to_ne_bytes();
    if which == 0 {
        ip.src_addr = addr.to_ne_bytes();
    } else {
        ip.dst_addr = addr.to_ne_bytes();
    }
    (before, after)
}

/// A TCP/UDP checksum `check` after one address and one port of its
/// segment changed (a UDP checksum of 0 stays 0).
#[inline(always)]
fn l4_check(check: u16, is_tcp: bool, old_addr: u32, addr: u32, old_port: u16, port: u16) -> u16 {
    let patched = replace2(replace4(check, old_addr, addr), old_port, port);
    if is_tcp {
        patched
    } else {
        udp_fixup(check, patched)
    }
}

/// The headers of an ICMP error that [`icmp_error`] rewrites, each
/// bounds-checked by [`crate::icmp`].
pub struct IcmpHeaders {
    /// The error's own IPv4 header.
    pub outer: *mut Ipv4Hdr,
    /// The ICMP checksum (over the ICMP header and everything it carries).
    pub icmp_check: *mut u16,
    /// The IPv4 header of the packet the error is about.
    pub inner: *mut Ipv4Hdr,
    /// That packet's ports (source, destination).
    pub inner_ports: *mut [u16; 2],
    /// That packet's TCP/UDP checksum, or null when the error cut it off.
    pub inner_check: *mut u16,
    pub inner_is_tcp: bool,
}

/// Translate an ICMP error as the flow it is about is translated: the
/// embedded packet's source (`which == 0`: an error about a reply, going to
/// the backend) or destination (`which == 1`: an error about a forwarded
/// packet, going to the client) becomes `addr:port`, and so does the other
/// end of the outer header (its destination or its source). The embedded
/// IPv4 and TCP/UDP checksums (when present) and the ICMP checksum are
/// patched incrementally.
#[inline(always)]
pub fn icmp_error(h: &IcmpHeaders, which: usize, addr: u32, port: u16) {
    // SAFETY: the pointers were bounds-checked by `icmp`; `inner_check` is
    // used only when not null.
    unsafe {
        let outer = &mut *h.outer;
        let other = 1 - which;
        let old_outer = if other == 0 {
            u32::from_ne_bytes(outer.src_addr)
        } else {
            u32::from_ne_bytes(outer.dst_addr)
        };
        set_addr(outer, other, old_outer, addr);

        let inner = &mut *h.inner;
        let old_addr = if which == 0 {
            u32::from_ne_bytes(inner.src_addr)
        } else {
            u32::from_ne_bytes(inner.dst_addr)
        };
        let old_port = (*h.inner_ports)[which];
        let (old_ip_check, ip_check) = set_addr(inner, which, old_addr, addr);
        (*h.inner_ports)[which] = port;

        let mut icmp = h.icmp_check.read_unaligned();
        icmp = replace4(icmp, old_addr, addr);
        icmp = replace2(icmp, old_ip_check, ip_check);
        icmp = replace2(icmp, old_port, port);
        if !h.inner_check.is_null() {
            let old = h.inner_check.read_unaligned();
            let patched = l4_check(old, h.inner_is_tcp, old_addr, addr, old_port, port);
            h.inner_check.write_unaligned(patched);
            icmp = replace2(icmp, old, patched);
        }
        h.icmp_check.write_unaligned(icmp);
    }
}
