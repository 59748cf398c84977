//! NAT rewrites with incremental checksum updates.

use lb_common::checksum::{replace2, replace4, udp_fixup};

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
    // SAFETY: the pointers were bounds-checked by `parse`.
    unsafe {
        let ip = &mut *pkt.ip;
        let (old_addr, old_port) = if which == 0 {
            (pkt.key.src_addr, pkt.key.src_port)
        } else {
            (pkt.key.dst_addr, pkt.key.dst_port)
        };
        let ip_check = u16::from_ne_bytes(ip.check);
        ip.check = replace4(ip_check, old_addr, addr).to_ne_bytes();
        if which == 0 {
            ip.src_addr = addr.to_ne_bytes();
        } else {
            ip.dst_addr = addr.to_ne_bytes();
        }
        (*pkt.ports)[which] = port;

        let l4 = pkt.l4_check.read_unaligned();
        let patched = replace2(replace4(l4, old_addr, addr), old_port, port);
        let patched = if pkt.is_tcp {
            patched
        } else {
            udp_fixup(l4, patched)
        };
        pkt.l4_check.write_unaligned(patched);
    }
}
