//! Incremental Internet checksum updates (RFC 1624, eqn. 3):
//! `HC' = ~(~HC + ~m + m')`, on 16-bit words in the order they sit in the
//! packet. Checksums and words are handled as the raw bytes of the packet
//! read with `from_ne_bytes`, so no byte swapping is needed: one's complement
//! addition is byte-order independent.

#[inline(always)]
const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Patch `check` for a 16-bit field that changed from `old` to `new`.
#[inline(always)]
#[must_use]
pub const fn replace2(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u32 + (!old) as u32 + new as u32;
    !fold(sum)
}

/// Patch `check` for a 32-bit field (an IPv4 address) that changed.
#[inline(always)]
#[must_use]
pub const fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let sum = (!check) as u32
        + (!(old as u16)) as u32
        + (!((old >> 16) as u16)) as u32
        + (new as u16) as u32
        + ((new >> 16) as u16) as u32;
    !fold(sum)
}

/// Patch `check` for a 128-bit field (an IPv6 address, as four words in
/// packet order) that changed: IPv6 has no header checksum, but the TCP,
/// UDP and ICMPv6 checksums cover the addresses through the pseudo-header.
#[inline(always)]
#[must_use]
pub const fn replace16(check: u16, old: [u32; 4], new: [u32; 4]) -> u16 {
    let mut c = check;
    let mut i = 0;
    while i < 4 {
        c = replace4(c, old[i], new[i]);
        i += 1;
    }
    c
}

/// The UDP checksum after a rewrite: a datagram sent without a checksum
/// (zero) keeps none, and a computed zero is sent as all ones (RFC 768).
#[inline(always)]
#[must_use]
pub const fn udp_fixup(original: u16, updated: u16) -> u16 {
    if original == 0 {
        0
    } else if updated == 0 {
        0xffff
    } else {
        updated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Full checksum over `bytes`, as the receiver computes it.
    fn full(bytes: &[u8]) -> u16 {
        let mut sum = 0u32;
        for chunk in bytes.chunks(2) {
            let word = u16::from_ne_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
        !fold(sum)
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut hdr: [u8; 20] = [
            0x45, 0, 0, 60, 0x1c, 0x46, 0x40, 0, 0x40, 6, 0, 0, 198, 18, 0, 11, 198, 18, 0, 100,
        ];
        let c = full(&hdr);
        hdr[10..12].copy_from_slice(&c.to_ne_bytes());
        assert_eq!(full(&hdr), 0);

        // 32-bit field: the destination address.
        let old = u32::from_ne_bytes([198, 18, 0, 100]);
        let new = u32::from_ne_bytes([198, 18, 1, 14]);
        let c = replace4(c, old, new);
        hdr[16..20].copy_from_slice(&new.to_ne_bytes());
        hdr[10..12].copy_from_slice(&c.to_ne_bytes());
        assert_eq!(full(&hdr), 0, "header must verify after the address patch");

        // 16-bit field: the identification field stands in for a port.
        let old = u16::from_ne_bytes([0x1c, 0x46]);
        let new = u16::from_ne_bytes([0x1f, 0x90]);
        let c = replace2(c, old, new);
        hdr[4..6].copy_from_slice(&new.to_ne_bytes());
        hdr[10..12].copy_from_slice(&c.to_ne_bytes());
        assert_eq!(full(&hdr), 0, "header must verify after the 16-bit patch");
    }

    #[test]
    fn a_128_bit_address_patch_matches_a_full_recompute() {
        // An IPv6 pseudo-header (source, destination, length, next header)
        // followed by a TCP header without options.
        let v6 = |a: [u16; 8]| -> [u8; 16] {
            let mut b = [0u8; 16];
            for (i, w) in a.iter().enumerate() {
                b[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
            }
            b
        };
        let mut seg = [0u8; 60];
        seg[0..16].copy_from_slice(&v6([0x2001, 0xdb8, 0x18, 1, 0, 0, 0, 0x11]));
        seg[16..32].copy_from_slice(&v6([0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 0x100]));
        seg[32..40].copy_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
        seg[40..60].copy_from_slice(&[
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
        ]);
        let check_at = 40 + 16;
        let c = full(&seg);
        seg[check_at..check_at + 2].copy_from_slice(&c.to_ne_bytes());
        assert_eq!(full(&seg), 0);
        let words = |b: &[u8]| -> [u32; 4] {
            core::array::from_fn(|i| {
                u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            })
        };
        // DNAT: the destination becomes a backend's address.
        let old = words(&seg[16..32]);
        let backend = v6([0x2001, 0xdb8, 0x18, 1, 0, 0, 0, 0x21]);
        let c = replace16(c, old, words(&backend));
        seg[16..32].copy_from_slice(&backend);
        seg[check_at..check_at + 2].copy_from_slice(&c.to_ne_bytes());
        assert_eq!(full(&seg), 0, "the segment must verify after the patch");
    }

    #[test]
    fn udp_zero_checksum_rules() {
        assert_eq!(udp_fixup(0, 0x1234), 0);
        assert_eq!(udp_fixup(0x1111, 0), 0xffff);
        assert_eq!(udp_fixup(0x1111, 0x2222), 0x2222);
    }
}
