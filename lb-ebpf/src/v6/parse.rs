//! IPv6 parsing: the fixed header, then up to four Hop-by-Hop,
//! Destination Options and finished Routing headers skipped
//! (`lb_common::ipv6::step` decides at each), then TCP or UDP. A fragment,
//! AH, ESP or any other header goes to the kernel untouched and is
//! counted; so does ICMPv6 (neighbour and router discovery, MLD, echo:
//! a client must still resolve the VIP while lb is attached).

use lb_common::{
    conn6::FlowKey6,
    ipv6::{next_header, step, Step, MAX_EXTENSION_HEADERS},
    Reason,
};
use network_types::{eth::EthHdr, ip::Ipv6Hdr, tcp::TcpHdr, udp::UdpHdr};

use aya_ebpf::programs::XdpContext;

use crate::{forward::words, parse::ptr_at};

/// A parsed IPv6 TCP/UDP packet (its flow key is written to the scratch
/// area, see [`super::Scratch6`]).
pub struct Packet6 {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv6Hdr,
    /// The L4 ports (source, destination), as on the wire.
    pub ports: *mut [u16; 2],
    /// The L4 checksum field.
    pub l4_check: *mut u16,
    /// TCP flags byte, 0 for UDP.
    pub tcp_flags: u8,
    pub is_tcp: bool,
    /// A UDP datagram with checksum 0: invalid over IPv6, dropped if it
    /// is the balancer's (other traffic is the kernel's to judge).
    pub udp_zero_checksum: bool,
    /// Frame length in bytes, for the counters.
    pub len: u64,
}

/// Longest extension header a walk step may skip (`hdr_ext_len` 255).
const MAX_EXTENSION_LEN: usize = 2048;

#[inline(always)]
pub fn parse(ctx: &XdpContext, key: &mut FlowKey6) -> Result<Packet6, u32> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    let ip: *mut Ipv6Hdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: `ptr_at` checked the bounds.
    let iph = unsafe { &*ip };
    if iph.vcf[0] >> 4 != 6 {
        return Err(Reason::PASS_MALFORMED);
    }
    let payload = u16::from_be_bytes(iph.payload_len) as usize;
    // A jumbogram (payload length 0) is not balanced.
    if payload == 0 {
        return Err(Reason::PASS_MALFORMED);
    }
    if EthHdr::LEN + Ipv6Hdr::LEN + payload > ctx.data_end() - ctx.data() {
        return Err(Reason::PASS_TRUNCATED);
    }
    let mut next = iph.next_hdr;
    let mut off = EthHdr::LEN + Ipv6Hdr::LEN;
    let mut i = 0;
    while i <= MAX_EXTENSION_HEADERS {
        // The next header, its length and (Routing) its segments left.
        let hdr: *const [u8; 4] = ptr_at(ctx, off)?;
        // SAFETY: `ptr_at` checked the bounds.
        let hdr = unsafe { *hdr };
        match step(next, hdr[1], hdr[3]) {
            Step::Transport => break,
            Step::Skip(len) if i < MAX_EXTENSION_HEADERS => {
                next = hdr[0];
                // Bounded for the verifier: every step skips at most
                // `MAX_EXTENSION_LEN` bytes.
                off += (len as usize) & (2 * MAX_EXTENSION_LEN - 1);
            }
            Step::Fragment => return Err(Reason::PASS_FRAGMENT),
            _ => return Err(Reason::PASS_IPV6_UNSUPPORTED),
        }
        i += 1;
    }
    let l4_len = (EthHdr::LEN + Ipv6Hdr::LEN + payload).saturating_sub(off);
    let (l4_check, tcp_flags, is_tcp, udp_zero_checksum): (*mut u16, u8, bool, bool) = match next {
        next_header::TCP => {
            let tcp: *mut TcpHdr = ptr_at(ctx, off)?;
            // SAFETY: `ptr_at` checked the bounds.
            let th = unsafe { &mut *tcp };
            if th.doff() < 5 || l4_len < TcpHdr::LEN {
                return Err(Reason::PASS_MALFORMED);
            }
            // Byte 13 of the header checked above (a separate check at a
            // variable offset loses the verifier the bound).
            // SAFETY: inside the TCP header `ptr_at` checked.
            let flags = unsafe { *(tcp as *const u8).add(13) };
            (th.check.as_mut_ptr().cast(), flags, true, false)
        }
        next_header::UDP => {
            let udp: *mut UdpHdr = ptr_at(ctx, off)?;
            if l4_len < UdpHdr::LEN {
                return Err(Reason::PASS_MALFORMED);
            }
            // SAFETY: `ptr_at` checked the bounds.
            let check = unsafe { (*udp).check };
            // SAFETY: as above.
            let at = unsafe { (*udp).check.as_mut_ptr().cast() };
            (at, 0, false, check == [0, 0])
        }
        _ => return Err(Reason::PASS_NOT_TCP_UDP),
    };
    let ports: *mut [u16; 2] = ptr_at(ctx, off)?;
    // SAFETY: `ptr_at` checked the bounds.
    let [src_port, dst_port] = unsafe { *ports };
    key.src_addr = words(iph.src_addr);
    key.dst_addr = words(iph.dst_addr);
    key.src_port = src_port;
    key.dst_port = dst_port;
    key.proto = next;
    key._pad = [0; 3];
    Ok(Packet6 {
        eth,
        ip,
        ports,
        l4_check,
        tcp_flags,
        is_tcp,
        udp_zero_checksum,
        len: (ctx.data_end() - ctx.data()) as u64,
    })
}
