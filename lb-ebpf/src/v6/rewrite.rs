//! IPv6 NAT rewrites: IPv6 has no header checksum, so only the TCP/UDP
//! checksum is patched, over the 16-byte address and the port.

use lb_common::{
    checksum::{replace16, replace2},
    conn6::{Addr6, FlowKey6},
};

use super::parse::Packet6;

/// Forward path: destination (VIP) becomes the backend.
#[inline(always)]
pub fn dnat(pkt: &Packet6, key: &FlowKey6, addr: &Addr6, port: u16) {
    rewrite(pkt, key, addr, port, 1);
}

/// Reply path: source (backend) becomes the VIP.
#[inline(always)]
pub fn snat(pkt: &Packet6, key: &FlowKey6, addr: &Addr6, port: u16) {
    rewrite(pkt, key, addr, port, 0);
}

/// Rewrite the source (`which == 0`) or destination (`which == 1`) address
/// and port. (A UDP checksum is never 0 here: such datagrams are dropped,
/// and a patched one cannot come out as 0 from a non-zero sum.)
#[inline(always)]
fn rewrite(pkt: &Packet6, key: &FlowKey6, addr: &Addr6, port: u16, which: usize) {
    let (old_addr, old_port) = if which == 0 {
        (key.src_addr, key.src_port)
    } else {
        (key.dst_addr, key.dst_port)
    };
    let addr = *addr;
    let mut bytes = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let w = addr[i].to_ne_bytes();
        bytes[4 * i] = w[0];
        bytes[4 * i + 1] = w[1];
        bytes[4 * i + 2] = w[2];
        bytes[4 * i + 3] = w[3];
        i += 1;
    }
    // SAFETY: the pointers were bounds-checked by `parse`.
    unsafe {
        if which == 0 {
            (*pkt.ip).src_addr = bytes;
        } else {
            (*pkt.ip).dst_addr = bytes;
        }
        (*pkt.ports)[which] = port;
        let check = pkt.l4_check.read_unaligned();
        let patched = replace2(replace16(check, old_addr, addr), old_port, port);
        pkt.l4_check
            .write_unaligned(if !pkt.is_tcp && patched == 0 {
                0xffff
            } else {
                patched
            });
    }
}
