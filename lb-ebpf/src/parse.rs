//! Parsing: every packet read goes through [`ptr_at`], which checks bounds
//! against `data_end` so the verifier (and malformed input) can never make
//! the program read outside the frame.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use lb_common::{is_icmp_error, FlowKey, Reason, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, tcp::TcpHdr, udp::UdpHdr};

/// What [`parse`] found.
pub enum Parsed {
    /// A TCP or UDP packet: the balancer's traffic.
    Flow(Packet),
    /// An ICMP error (destination unreachable, time exceeded, parameter
    /// problem), perhaps about a balanced flow: [`crate::icmp`] reads the
    /// packet it carries. Both headers are bounds-checked, and the IPv4
    /// total length lies inside the frame.
    IcmpError { eth: *mut EthHdr, ip: *mut Ipv4Hdr },
    /// An IPv6 packet: [`crate::v6`] parses it, in a function of its own.
    Ipv6,
}

/// A parsed IPv4 TCP/UDP packet without options or fragmentation.
pub struct Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    /// The L4 ports (source, destination), as on the wire.
    pub ports: *mut [u16; 2],
    /// The L4 checksum field.
    pub l4_check: *mut u16,
    pub key: FlowKey,
    /// TCP flags byte, 0 for UDP.
    pub tcp_flags: u8,
    pub is_tcp: bool,
    /// Frame length in bytes, for the counters.
    pub len: u64,
}

/// A pointer to a `T` at `offset`, if the whole `T` lies inside the frame.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(Reason::PASS_TRUNCATED);
    }
    Ok((start + offset) as *mut T)
}

const ETH_P_IPV4: u16 = u16::from_ne_bytes([0x08, 0x00]);
const ETH_P_IPV6: u16 = u16::from_ne_bytes([0x86, 0xdd]);
/// More-fragments flag and fragment offset, in the first byte of `frags`.
const IP_MF: u8 = 0x20;
pub const IP_OFFSET_HI: u8 = 0x1f;

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Parsed, u32> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked the bounds.
    let ether_type = unsafe { (*eth).ether_type };
    if ether_type == ETH_P_IPV6 {
        return Ok(Parsed::Ipv6);
    }
    if ether_type != ETH_P_IPV4 {
        return Err(Reason::PASS_NOT_IP);
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: `ptr_at` checked the bounds.
    let iph = unsafe { &*ip };
    if iph.vihl >> 4 != 4 || iph.vihl & 0xf < 5 {
        return Err(Reason::PASS_MALFORMED);
    }
    if iph.vihl & 0xf != 5 {
        return Err(Reason::PASS_IP_OPTIONS);
    }
    let tot_len = u16::from_be_bytes(iph.tot_len) as usize;
    if tot_len < Ipv4Hdr::LEN {
        return Err(Reason::PASS_MALFORMED);
    }
    if EthHdr::LEN + tot_len > ctx.data_end() - ctx.data() {
        return Err(Reason::PASS_TRUNCATED);
    }
    if iph.frags[0] & (IP_MF | IP_OFFSET_HI) != 0 || iph.frags[1] != 0 {
        return Err(Reason::PASS_FRAGMENT);
    }
    let l4 = EthHdr::LEN + Ipv4Hdr::LEN;
    let (l4_check, tcp_flags, is_tcp): (*mut u16, u8, bool) = match iph.proto {
        PROTO_TCP => {
            let tcp: *mut TcpHdr = ptr_at(ctx, l4)?;
            // SAFETY: `ptr_at` checked the bounds.
            let th = unsafe { &mut *tcp };
            if th.doff() < 5 || tot_len < Ipv4Hdr::LEN + TcpHdr::LEN {
                return Err(Reason::PASS_MALFORMED);
            }
            let flags: *const u8 = ptr_at(ctx, l4 + 13)?;
            // SAFETY: `ptr_at` checked the bounds.
            (th.check.as_mut_ptr().cast(), unsafe { *flags }, true)
        }
        PROTO_UDP => {
            let udp: *mut UdpHdr = ptr_at(ctx, l4)?;
            if tot_len < Ipv4Hdr::LEN + UdpHdr::LEN {
                return Err(Reason::PASS_MALFORMED);
            }
            // SAFETY: `ptr_at` checked the bounds.
            (unsafe { (*udp).check.as_mut_ptr().cast() }, 0, false)
        }
        PROTO_ICMP => {
            let icmp_type: *const u8 = ptr_at(ctx, l4)?;
            // SAFETY: `ptr_at` checked the bounds.
            if is_icmp_error(unsafe { *icmp_type }) {
                return Ok(Parsed::IcmpError { eth, ip });
            }
            return Err(Reason::PASS_NOT_TCP_UDP);
        }
        _ => return Err(Reason::PASS_NOT_TCP_UDP),
    };
    let ports: *mut [u16; 2] = ptr_at(ctx, l4)?;
    // SAFETY: `ptr_at` checked the bounds.
    let [src_port, dst_port] = unsafe { *ports };
    Ok(Parsed::Flow(Packet {
        eth,
        ip,
        ports,
        l4_check,
        key: FlowKey {
            src_addr: u32::from_ne_bytes(iph.src_addr),
            dst_addr: u32::from_ne_bytes(iph.dst_addr),
            src_port,
            dst_port,
            proto: iph.proto,
            _pad: [0; 3],
        },
        tcp_flags,
        is_tcp,
        len: (ctx.data_end() - ctx.data()) as u64,
    }))
}
