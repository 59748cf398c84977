//! Frame building and checksum verification for the packet tests, written
//! independently of the data path's incremental checksum code: every
//! checksum here is computed over the whole header from scratch.

use std::net::Ipv4Addr;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// One's complement sum of 16-bit big-endian words.
#[must_use]
pub fn ones_sum(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

#[must_use]
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `bytes`.
#[must_use]
pub fn checksum(bytes: &[u8]) -> u16 {
    !fold(ones_sum(bytes))
}

/// The TCP/UDP checksum of `segment` (checksum field included as it is)
/// under the IPv4 pseudo-header.
#[must_use]
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12 + segment.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.push(0);
    pseudo.push(proto);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(segment);
    checksum(&pseudo)
}

/// The fields of an IPv4 header a test chooses (no options).
struct Ipv4Header {
    tos: u8,
    /// Identification, flags and fragment offset, as on the wire.
    id_and_flags: [u8; 4],
    ttl: u8,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

/// An Ethernet frame carrying an IPv4 packet with `payload`, the header
/// checksum computed over the whole header.
fn ethernet_ipv4(src_mac: [u8; 6], dst_mac: [u8; 6], h: &Ipv4Header, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let tot_len = (20 + payload.len()) as u16;
    let mut ip = vec![0x45, h.tos];
    ip.extend_from_slice(&tot_len.to_be_bytes());
    ip.extend_from_slice(&h.id_and_flags);
    ip.extend_from_slice(&[h.ttl, h.proto, 0, 0]);
    ip.extend_from_slice(&h.src.octets());
    ip.extend_from_slice(&h.dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

/// An Ethernet + IPv4 + TCP/UDP frame description.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub payload: Vec<u8>,
    /// UDP only: send with checksum 0 (none).
    pub udp_no_checksum: bool,
    pub ttl: u8,
}

impl Frame {
    #[must_use]
    pub fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Self {
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
            udp_no_checksum: false,
            ttl: 64,
        }
    }

    #[must_use]
    pub fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Self {
        Self {
            proto: PROTO_UDP,
            tcp_flags: 0,
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

    /// The frame's bytes, every checksum computed over the whole header.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let header = Ipv4Header {
            tos: 0,
            id_and_flags: [0x12, 0x34, 0x40, 0x00],
            ttl: self.ttl,
            proto: self.proto,
            src: self.src,
            dst: self.dst,
        };
        ethernet_ipv4(self.src_mac, self.dst_mac, &header, &self.l4_bytes())
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&self.sport.to_be_bytes());
        s.extend_from_slice(&self.dport.to_be_bytes());
        let check_at = if self.proto == PROTO_TCP {
            s.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // seq
            s.extend_from_slice(&0x0a0b_0c0du32.to_be_bytes()); // ack
            s.extend_from_slice(&[0x50, self.tcp_flags, 0xfa, 0xf0, 0, 0, 0, 0]);
            16
        } else {
            s.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            s.extend_from_slice(&[0, 0]);
            6
        };
        s.extend_from_slice(&self.payload);
        if !(self.proto == PROTO_UDP && self.udp_no_checksum) {
            let mut c = l4_checksum(self.src, self.dst, self.proto, &s);
            if self.proto == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            s[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
        }
        s
    }
}

pub const PROTO_ICMP: u8 = 1;

/// An Ethernet + IPv4 + ICMP error frame: `embedded` is the IPv4 packet
/// (or its first bytes) the error is about.
#[derive(Clone, Debug)]
pub struct IcmpError {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub icmp_type: u8,
    pub code: u8,
    /// The four bytes after the checksum (the next hop's MTU for
    /// "fragmentation needed", the pointer for "parameter problem").
    pub rest: [u8; 4],
    pub embedded: Vec<u8>,
}

impl IcmpError {
    /// "Fragmentation needed" (type 3, code 4) from `src` to `dst`, with
    /// the next hop's `mtu`.
    #[must_use]
    pub fn frag_needed(src: Ipv4Addr, dst: Ipv4Addr, mtu: u16, embedded: &[u8]) -> Self {
        let m = mtu.to_be_bytes();
        Self {
            src_mac: [0x02, 0, 0, 0, 0, 0xaa],
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
            src,
            dst,
            icmp_type: 3,
            code: 4,
            rest: [0, 0, m[0], m[1]],
            embedded: embedded.to_vec(),
        }
    }

    /// "Port unreachable" (type 3, code 3) from `src` to `dst`.
    #[must_use]
    pub fn port_unreachable(src: Ipv4Addr, dst: Ipv4Addr, embedded: &[u8]) -> Self {
        Self {
            code: 3,
            rest: [0; 4],
            ..Self::frag_needed(src, dst, 0, embedded)
        }
    }

    #[must_use]
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// The frame's bytes, every checksum computed over the whole header.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let mut icmp = vec![self.icmp_type, self.code, 0, 0];
        icmp.extend_from_slice(&self.rest);
        icmp.extend_from_slice(&self.embedded);
        let c = checksum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let header = Ipv4Header {
            tos: 0xc0,
            id_and_flags: [0x56, 0x78, 0, 0],
            ttl: 64,
            proto: PROTO_ICMP,
            src: self.src,
            dst: self.dst,
        };
        ethernet_ipv4(self.src_mac, self.dst_mac, &header, &icmp)
    }
}

/// The IPv4 packet inside an Ethernet frame.
#[must_use]
pub fn ip_packet(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

/// Check the checksums of an ICMP error frame from scratch: its IPv4
/// header, the ICMP message, and the embedded IPv4 header.
///
/// # Errors
/// Saying which checksum is wrong.
pub fn verify_icmp(frame: &[u8]) -> Result<(), String> {
    let ip = frame.get(14..34).ok_or("frame too short")?;
    if checksum(ip) != 0 {
        return Err("bad IPv4 header checksum".into());
    }
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let icmp = frame
        .get(34..14 + tot)
        .ok_or("frame shorter than its total length")?;
    if checksum(icmp) != 0 {
        return Err("bad ICMP checksum".into());
    }
    let inner = icmp.get(8..28).ok_or("no embedded IPv4 header")?;
    if checksum(inner) != 0 {
        return Err("bad embedded IPv4 header checksum".into());
    }
    Ok(())
}

/// Check every checksum of an IPv4 TCP/UDP frame from scratch.
///
/// # Errors
/// Saying which checksum is wrong.
pub fn verify(frame: &[u8]) -> Result<(), String> {
    let ip = frame.get(14..34).ok_or("frame too short")?;
    if checksum(ip) != 0 {
        return Err(format!(
            "bad IPv4 header checksum {:#06x}",
            u16::from_be_bytes([ip[10], ip[11]])
        ));
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let seg = frame
        .get(34..14 + tot)
        .ok_or("frame shorter than its IPv4 total length")?;
    if ip[9] == PROTO_UDP && seg[6..8] == [0, 0] {
        return Ok(());
    }
    if l4_checksum(src, dst, ip[9], seg) != 0 {
        return Err(format!(
            "bad L4 checksum {:#06x}",
            u16::from_be_bytes([seg[16 % seg.len()], seg[17 % seg.len()]])
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_verify() {
        let a = (Ipv4Addr::new(198, 18, 0, 11), 40000);
        let b = (Ipv4Addr::new(198, 18, 0, 100), 80);
        verify(&Frame::tcp(a, b, SYN).build()).unwrap();
        verify(&Frame::udp(a, b).build()).unwrap();
        let mut f = Frame::tcp(a, b, ACK).build();
        f[40] ^= 1;
        assert!(verify(&f).is_err());
        let mut f = Frame::tcp(a, b, ACK).build();
        f[30] ^= 1;
        assert!(verify(&f).is_err());
    }
}
