//! IPv6 frames for the packet tests, built from scratch with every
//! checksum computed over the whole segment (as [`crate::packet`] does for
//! IPv4), and the IPv6 addresses of the packet tests' FIB namespace.

use std::net::Ipv6Addr;

use crate::packet::{checksum, PROTO_TCP, PROTO_UDP};

pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 0x100);
pub const C1_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 0x11);
/// Another address in client 1's /64 (a temporary address, say).
pub const C1_6B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0xa, 0xb, 0xc, 0xd);
pub const B1_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 1, 0, 0, 0, 0x11);
pub const B2_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 1, 0, 0, 0, 0x12);
pub const B3_6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 1, 0, 0, 0, 0x13);

/// The TCP/UDP/ICMPv6 checksum of `segment` under the IPv6 pseudo-header.
#[must_use]
pub fn l4_checksum6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + segment.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, proto]);
    pseudo.extend_from_slice(segment);
    checksum(&pseudo)
}

/// An Ethernet + IPv6 (+ extension headers) + TCP/UDP frame description.
#[derive(Clone, Debug)]
pub struct Frame6 {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub payload: Vec<u8>,
    /// Extension headers before the transport header: (type, bytes after
    /// the next-header byte), each padded to a multiple of 8 bytes by the
    /// caller.
    pub ext: Vec<(u8, Vec<u8>)>,
    /// UDP only: send with checksum 0.
    pub udp_no_checksum: bool,
}

impl Frame6 {
    #[must_use]
    pub fn tcp(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), flags: u8) -> Self {
        Self {
            src_mac: [0x02, 0, 0, 0, 0, 0xaa],
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
            src: src.0,
            dst: dst.0,
            proto: PROTO_TCP,
            sport: src.1,
            dport: dst.1,
            tcp_flags: flags,
            payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            ext: Vec::new(),
            udp_no_checksum: false,
        }
    }

    #[must_use]
    pub fn udp(src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16)) -> Self {
        Self {
            proto: PROTO_UDP,
            payload: b"ping".to_vec(),
            ..Self::tcp(src, dst, 0)
        }
    }

    #[must_use]
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        let check_at = if self.proto == PROTO_TCP {
            l4.extend_from_slice(&0x0102_0304u32.to_be_bytes());
            l4.extend_from_slice(&0x0a0b_0c0du32.to_be_bytes());
            l4.extend_from_slice(&[0x50, self.tcp_flags, 0xfa, 0xf0, 0, 0, 0, 0]);
            16
        } else {
            l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            6
        };
        l4.extend_from_slice(&self.payload);
        if !(self.proto == PROTO_UDP && self.udp_no_checksum) {
            let mut c = l4_checksum6(self.src, self.dst, self.proto, &l4);
            if self.proto == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            l4[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
        }
        raw6(
            self.src_mac,
            self.dst_mac,
            self.src,
            self.dst,
            &self.ext,
            self.proto,
            &l4,
        )
    }
}

/// An Ethernet + IPv6 frame carrying `ext` then `upper` (of type `proto`).
#[must_use]
pub fn raw6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ext: &[(u8, Vec<u8>)],
    proto: u8,
    upper: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, bytes)) in ext.iter().enumerate() {
        body.push(ext.get(i + 1).map_or(proto, |e| e.0));
        body.extend_from_slice(bytes);
    }
    body.extend_from_slice(upper);
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(body.len() as u16).to_be_bytes());
    f.push(ext.first().map_or(proto, |e| e.0));
    f.push(64);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&body);
    f
}

/// The IPv6 source and destination of a frame built here.
#[must_use]
pub fn addrs(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr) {
    let a = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&frame[at..at + 16]).unwrap());
    (a(22), a(38))
}
