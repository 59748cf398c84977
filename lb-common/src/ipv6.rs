//! IPv6 decisions the data path will share with the controller and the
//! tests (groundwork for balancing IPv6): how extension headers are walked
//! to the transport header, and client prefixes. Addresses are four `u32`
//! words in packet order (`u32::from_ne_bytes` of each four bytes), like
//! IPv4 addresses elsewhere in this crate.

/// Next-header values the walk knows.
pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT: u8 = 59;
    pub const DESTINATION_OPTIONS: u8 = 60;
}

/// Extension headers skipped at most before the transport header.
pub const MAX_EXTENSION_HEADERS: usize = 4;

/// What the data path does at a header of type `next` (the previous
/// header's next-header field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// TCP, UDP or ICMPv6: the walk ends here.
    Transport,
    /// An extension header of this many bytes, to skip.
    Skip(u16),
    /// A fragment: to the kernel untouched, counted.
    Fragment,
    /// AH, ESP, a Routing header with segments left, no next header, or
    /// anything unknown: to the kernel untouched, counted.
    Unsupported,
}

/// The step at a header of type `next`, whose first bytes are its own
/// next-header field, `hdr_ext_len` (its length in 8-octet units, not
/// counting the first 8) and, for a Routing header, `segments_left`.
#[must_use]
pub const fn step(next: u8, hdr_ext_len: u8, segments_left: u8) -> Step {
    use next_header::{DESTINATION_OPTIONS, FRAGMENT, HOP_BY_HOP, ICMPV6, ROUTING, TCP, UDP};
    let len = (hdr_ext_len as u16 + 1) * 8;
    match next {
        TCP | UDP | ICMPV6 => Step::Transport,
        HOP_BY_HOP | DESTINATION_OPTIONS => Step::Skip(len),
        // A packet still on its way through a source route is not for us
        // yet: a Routing header is skipped only when it is done.
        ROUTING if segments_left == 0 => Step::Skip(len),
        FRAGMENT => Step::Fragment,
        _ => Step::Unsupported,
    }
}

/// The mask of a `prefix_len`-bit prefix (0-128), as four words in packet
/// order: clients that agree on these bits share one session.
#[must_use]
pub const fn netmask6(prefix_len: u8) -> [u32; 4] {
    let mut mask = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        let bits = prefix_len as i32 - 32 * i as i32;
        mask[i] = if bits >= 32 {
            u32::MAX
        } else if bits <= 0 {
            0
        } else {
            // Built in host order, stored in network order.
            (u32::MAX << (32 - bits as u32)).to_be()
        };
        i += 1;
    }
    mask
}

/// `addr` masked by `mask`.
#[must_use]
pub const fn masked(addr: [u32; 4], mask: [u32; 4]) -> [u32; 4] {
    [
        addr[0] & mask[0],
        addr[1] & mask[1],
        addr[2] & mask[2],
        addr[3] & mask[3],
    ]
}

/// `addr` folded into one word, for the hashes that pick a backend
/// (`crate::ring_slot`, `crate::maglev_slot`): the same on every host.
#[inline(always)]
#[must_use]
pub const fn fold(addr: [u32; 4]) -> u32 {
    addr[0] ^ addr[1].rotate_left(8) ^ addr[2].rotate_left(16) ^ addr[3].rotate_left(24)
}

/// ICMPv6 errors about a packet, which carry as much of it as fits:
/// destination unreachable (1), packet too big (2), time exceeded (3) and
/// parameter problem (4). Every other ICMPv6 message (neighbour and router
/// discovery, MLD, echo) is the kernel's, untouched.
#[inline(always)]
#[must_use]
pub const fn is_icmpv6_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 1..=4)
}

#[cfg(test)]
mod tests {
    use super::{next_header::*, *};

    #[test]
    fn the_walk_skips_options_and_finished_routes_and_passes_the_rest() {
        assert_eq!(step(TCP, 0, 0), Step::Transport);
        assert_eq!(step(UDP, 0, 0), Step::Transport);
        assert_eq!(step(ICMPV6, 0, 0), Step::Transport);
        assert_eq!(step(HOP_BY_HOP, 0, 0), Step::Skip(8));
        assert_eq!(step(DESTINATION_OPTIONS, 2, 0), Step::Skip(24));
        assert_eq!(step(ROUTING, 1, 0), Step::Skip(16));
        assert_eq!(step(ROUTING, 1, 2), Step::Unsupported, "segments left");
        assert_eq!(step(FRAGMENT, 0, 0), Step::Fragment);
        for other in [AH, 50, NO_NEXT, 135, 253] {
            assert_eq!(step(other, 0, 0), Step::Unsupported, "{other}");
        }
        assert_eq!(step(HOP_BY_HOP, 255, 0), Step::Skip(2048));
    }

    #[test]
    fn folding_spreads_the_interface_identifier_and_the_prefix() {
        let a = [1, 2, 3, 4];
        assert_ne!(fold(a), fold([1, 2, 3, 5]));
        assert_ne!(fold(a), fold([1, 2, 4, 4]));
        assert_ne!(fold([1, 0, 0, 0]), fold([0, 1, 0, 0]));
        assert!(is_icmpv6_error(2) && !is_icmpv6_error(135) && !is_icmpv6_error(128));
    }

    #[test]
    fn prefixes_mask_in_network_order() {
        let addr: [u32; 4] = [
            u32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]),
            u32::from_ne_bytes([0x00, 0x18, 0x00, 0x01]),
            u32::from_ne_bytes([0xaa, 0xbb, 0xcc, 0xdd]),
            u32::from_ne_bytes([0x11, 0x22, 0x33, 0x44]),
        ];
        let m = masked(addr, netmask6(64));
        assert_eq!(m[..2], addr[..2]);
        assert_eq!(m[2..], [0, 0]);
        let m = masked(addr, netmask6(56));
        assert_eq!(m[1].to_ne_bytes(), [0x00, 0x18, 0x00, 0x00]);
        assert_eq!(masked(addr, netmask6(128)), addr);
        assert_eq!(netmask6(0), [0; 4]);
        assert_eq!(netmask6(200), [u32::MAX; 4]);
        assert_eq!(netmask6(33)[1].to_ne_bytes(), [0x80, 0, 0, 0]);
    }
}
