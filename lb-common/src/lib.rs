//! Types and pure decisions shared by the XDP program (`lb-ebpf`) and the
//! controller (`lb-ctl`).
//!
//! Every map key and value is `#[repr(C)]`, `Copy`, has explicit padding
//! fields and a compile-time size check, and holds no `enum` or `bool`.
//! Addresses and ports inside map keys and values are kept in **network byte
//! order**, exactly as they appear on the wire (`u32::from_ne_bytes(octets)`),
//! so the data path never swaps bytes.
//!
//! The decisions that both sides must agree on (when an entry has expired,
//! how TCP flags move a connection's state, how checksums are patched) are
//! plain functions here, tested on the host.
#![no_std]

pub mod checksum;
pub mod conn;
pub mod conn6;
pub mod handshake;
pub mod ipv6;
pub mod maps;
pub mod pending;
pub mod sets;
pub mod stats;

pub use conn::{
    answers, confirms, tcp_next_state, BackendHop, Conn, ConnState, FlowKey, NextHop, Session,
    SessionEvent, SessionKey, Settings,
};
pub use maps::{BackendInfo, VipInfo, VipKey};
pub use stats::{is_icmp_error, Counters, IcmpReason, Reason};

/// IANA protocol numbers understood by the data path.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP: u8 = 1;

/// Most virtual services (VIP, port, protocol) the data path holds.
pub const MAX_VIPS: u32 = 256;
/// Most (VIP, backend) pairs over all VIPs.
pub const MAX_BACKENDS: u32 = 4096;
/// Slots of one VIP's selection table. The table of VIP `id` occupies
/// `id * RING_SIZE .. id * RING_SIZE + ring_len` of the `RING` map.
pub const RING_SIZE: u32 = 1024;
/// Slots of a Maglev lookup table (a prime, as the paper wants).
pub const MAGLEV_SIZE: u32 = 65_537;
/// VIPs with the `maglev` scheduler at most; the table of maglev slot `m`
/// occupies `m * MAGLEV_SIZE ..` of the `MAGLEV` map.
pub const MAX_MAGLEV_VIPS: u32 = 16;

/// Interfaces the program may redirect to.
pub const MAX_PORTS: u32 = 64;

/// A connection or session refreshes its `last_seen` at most this often, so
/// the established path writes shared memory about once a second per flow.
pub const REFRESH_NS: u64 = 1_000_000_000;

/// Names of the maps, as declared in `lb-ebpf` and pinned by `lb-ctl`.
pub mod map_names {
    pub const VIPS: &str = "VIPS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const RING: &str = "RING";
    pub const CURSORS: &str = "CURSORS";
    pub const CONNS: &str = "CONNS";
    pub const SESSIONS: &str = "SESSIONS";
    pub const SETTINGS: &str = "SETTINGS";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const VIP_STATS: &str = "VIP_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const REASONS: &str = "REASONS";
    pub const HALF_OPEN: &str = "HALF_OPEN";
    pub const PENDING: &str = "PENDING";
    pub const MAGLEV: &str = "MAGLEV";
    /// Sessions recorded, for the controller to share (`cluster:`); a
    /// channel, not state: never pinned, each program has its own.
    pub const SESSION_EVENTS: &str = "SESSION_EVENTS";
    /// Each backend's next hop for its new flows: a cache, never pinned
    /// (a new program starts with an empty one).
    pub const NEXT_HOPS: &str = "NEXT_HOPS";
    /// Announcements the full `SESSION_EVENTS` ring could not take; like
    /// the ring, never pinned.
    pub const SESSION_EVENTS_LOST: &str = "SESSION_EVENTS_LOST";
    /// What became of ICMP errors ([`crate::IcmpReason`]). Added after
    /// layout v5 was released: a kept v5 directory without it gets it
    /// created (a new counter map changes nothing that is kept).
    pub const ICMP_STATS: &str = "ICMP_STATS";
    /// The address filter ([`crate::addr_filter`]); added within layout
    /// v5 like `ICMP_STATS`: a kept directory without it gets it created,
    /// and the controller fills it before attaching.
    pub const ADDR_FILTER: &str = "ADDR_FILTER";
    /// The IPv6 tables (layout 7): VIPs, backends' addresses (by the
    /// slot of their `BACKENDS` entry), connections, sessions, unconfirmed
    /// flows and pending sessions.
    pub const VIPS6: &str = "VIPS6";
    pub const BACKEND_ADDRS6: &str = "BACKEND_ADDRS6";
    pub const CONNS6: &str = "CONNS6";
    pub const SESSIONS6: &str = "SESSIONS6";
    pub const HALF_OPEN6: &str = "HALF_OPEN6";
    pub const PENDING6: &str = "PENDING6";
    /// The IPv6 program, which the IPv4 one tail-calls for IPv6 frames
    /// (pinned, so that it stays in place while no controller runs).
    pub const PROGS6: &str = "PROGS6";
    /// Every map, in the order `lb-ctl` pins them.
    pub const ALL: [&str; 23] = [
        VIPS,
        BACKENDS,
        RING,
        CURSORS,
        CONNS,
        SESSIONS,
        SETTINGS,
        TX_PORTS,
        VIP_STATS,
        BACKEND_STATS,
        REASONS,
        HALF_OPEN,
        PENDING,
        MAGLEV,
        ICMP_STATS,
        ADDR_FILTER,
        VIPS6,
        BACKEND_ADDRS6,
        CONNS6,
        SESSIONS6,
        HALF_OPEN6,
        PENDING6,
        PROGS6,
    ];
}

/// Version of the layout of the pinned maps (their types, keys, values and
/// meaning). Bumped on every change of one, so that a controller never
/// reuses tables written by a build that laid them out differently; it
/// names the directory the maps are pinned in (`<bpffs>/lb/v<N>`).
/// History: 1 = unversioned pins in `<bpffs>/lb/`; 2 = one shared
/// round-robin cursor per VIP (`CURSORS` no longer per CPU); 3 = sessions
/// carry their creation time and VIPs a session lifetime; 4 = unconfirmed
/// flows and pending sessions in their own LRU tables (`HALF_OPEN`,
/// `PENDING`), the connection and persistence tables hold confirmed ones;
/// 5 = Maglev tables (`MAGLEV`, `VipInfo::maglev`) and direct server return
/// (`VipInfo::flags`, forward-only entries); 6 = unconfirmed flows and
/// pending sessions in fixed set-associative arrays (`HALF_OPEN`,
/// `PENDING`: [`handshake`]), one entry per unconfirmed flow; the table
/// geometry and hash seed in `Settings`; `REASONS` counts evictions;
/// 7 = IPv6 tables of their own ([`conn6`]: `VIPS6`, `BACKEND_ADDRS6`,
/// `CONNS6`, `SESSIONS6`, `HALF_OPEN6`, `PENDING6`) and two more `REASONS`
/// (every other v6 map is kept as it was).
pub const LAYOUT_VERSION: u32 = 7;

/// The Maglev slot of a flow: a hash of `client` (the masked client
/// address, for a VIP with persistence) or of the whole connection, mixed
/// with the VIP's id (murmur3's 64-bit finalizer), modulo [`MAGLEV_SIZE`].
/// The same on every host: a flow that moves keeps its backend.
#[inline(always)]
#[must_use]
pub const fn maglev_slot(vip_id: u32, a: u32, b: u32, ports: u32, proto: u8) -> u32 {
    let mut h = ((a as u64) << 32 | b as u64)
        ^ ((ports as u64) << 8 | proto as u64)
        ^ ((vip_id as u64) << 48);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % MAGLEV_SIZE as u64) as u32
}

/// The slot of a selection table of `len` slots (`len` > 0) for `client`
/// (a masked client address) of VIP `vip_id`: a weighted VIP's choice for
/// a new client ([`maps::vip_flags::HASH_FIRST`]).
#[inline(always)]
#[must_use]
pub const fn ring_slot(vip_id: u32, client: u32, len: u32) -> u32 {
    let mut h = (client as u64) << 32 | vip_id as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    ((h >> 16) % len as u64) as u32
}

/// The address filter: two bitmaps (`ADDR_FILTER`, u64 words) that tell
/// the data path, with one array read each, that a packet cannot belong to
/// the balancer — its destination is no VIP address and its source no
/// backend address ever configured — so that other traffic skips the
/// connection tables. A bit set by another address only costs that
/// address the tables' lookups; an address is never unset while the
/// tables live (a removed backend's connections go on).
pub mod addr_filter {
    /// Bits per bitmap (a power of two).
    pub const BITS: u32 = 1 << 16;
    /// Words per bitmap.
    pub const WORDS: u32 = BITS / 64;
    /// The VIP addresses' bitmap starts at word 0, the backends' here.
    pub const BACKENDS: u32 = WORDS;
    /// Entries of `ADDR_FILTER`.
    pub const ENTRIES: u32 = 2 * WORDS;

    /// The bit of `addr` (network byte order), as (word, mask) within one
    /// bitmap: a multiplicative hash of the address.
    #[inline(always)]
    #[must_use]
    pub const fn bit(addr: u32) -> (u32, u64) {
        let h = addr.wrapping_mul(0x9e37_79b1) >> 16;
        (h / 64, 1u64 << (h % 64))
    }
}

/// Name of the XDP program inside the object file.
pub const PROGRAM_NAME: &str = "lb_xdp";
/// Name of the IPv6 program inside the object file (tail-called by
/// [`PROGRAM_NAME`] through `PROGS6`).
pub const PROGRAM6_NAME: &str = "lb_xdp6";

/// True when an entry last seen at `last_seen_ns` is idle past `timeout_ns` at
/// `now_ns`. The data path treats such an entry as absent; the sweeper deletes
/// it. A zero timeout means the entry never lives.
#[inline(always)]
#[must_use]
pub const fn is_expired(last_seen_ns: u64, timeout_ns: u64, now_ns: u64) -> bool {
    // A clock read on another CPU may be slightly behind `last_seen_ns`.
    now_ns.saturating_sub(last_seen_ns) >= timeout_ns
}

/// True when an entry last written at `last_seen_ns` should have its
/// timestamp refreshed at `now_ns` (at most once per [`REFRESH_NS`]).
#[inline(always)]
#[must_use]
pub const fn needs_refresh(last_seen_ns: u64, now_ns: u64) -> bool {
    now_ns.saturating_sub(last_seen_ns) >= REFRESH_NS
}

/// `addr` (network byte order) masked to its first `prefix_len` bits.
#[inline(always)]
#[must_use]
pub const fn netmask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else if prefix_len >= 32 {
        u32::MAX
    } else {
        // Built in host order, stored in network order.
        (u32::MAX << (32 - prefix_len as u32)).to_be()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_idle_time_against_timeout() {
        assert!(!is_expired(100, 50, 149));
        assert!(is_expired(100, 50, 150));
        assert!(is_expired(100, 50, 1_000));
        // A clock slightly behind the writer never expires an entry.
        assert!(!is_expired(100, 50, 90));
        // Zero timeout: never alive.
        assert!(is_expired(100, 0, 100));
    }

    #[test]
    fn refresh_at_most_once_a_second() {
        assert!(!needs_refresh(
            5 * REFRESH_NS,
            5 * REFRESH_NS + REFRESH_NS - 1
        ));
        assert!(needs_refresh(5 * REFRESH_NS, 6 * REFRESH_NS));
        assert!(!needs_refresh(5 * REFRESH_NS, 4 * REFRESH_NS));
    }

    #[test]
    fn maglev_slots_are_in_range_and_spread() {
        let mut seen = [0u32; 16];
        for c in 0..4096u32 {
            let slot = maglev_slot(3, c.to_be(), 0, 0, 0);
            assert!(slot < MAGLEV_SIZE);
            seen[(slot * 16 / MAGLEV_SIZE) as usize] += 1;
        }
        // Roughly even over the table (256 expected per sixteenth).
        assert!(seen.iter().all(|&n| (150..370).contains(&n)), "{seen:?}");
        assert_ne!(maglev_slot(3, 1, 0, 0, 0), maglev_slot(4, 1, 0, 0, 0));
    }

    #[test]
    fn ring_slots_are_in_range_and_spread() {
        let mut seen = [0u32; 7];
        for c in 0..7000u32 {
            let slot = ring_slot(2, c.to_be(), 7);
            seen[slot as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (850..1150).contains(&n)), "{seen:?}");
        assert_eq!(ring_slot(2, 5, 1), 0);
    }

    #[test]
    fn filter_bits_are_in_range_and_spread() {
        let mut seen = [0u32; 16];
        for i in 0..4096u32 {
            let addr = u32::from_ne_bytes([198, 18, (i >> 8) as u8, i as u8]);
            let (word, mask) = addr_filter::bit(addr);
            assert!(word < addr_filter::WORDS);
            assert_eq!(mask.count_ones(), 1);
            seen[(word * 16 / addr_filter::WORDS) as usize] += 1;
        }
        // Roughly even over the bitmap (256 expected per sixteenth).
        assert!(seen.iter().all(|&n| (150..370).contains(&n)), "{seen:?}");
    }

    #[test]
    fn masks_are_network_order_prefixes() {
        let addr = u32::from_ne_bytes([198, 18, 0, 77]);
        assert_eq!((addr & netmask(24)).to_ne_bytes(), [198, 18, 0, 0]);
        assert_eq!((addr & netmask(16)).to_ne_bytes(), [198, 18, 0, 0]);
        assert_eq!((addr & netmask(31)).to_ne_bytes(), [198, 18, 0, 76]);
        assert_eq!((addr & netmask(32)).to_ne_bytes(), [198, 18, 0, 77]);
        assert_eq!(addr & netmask(0), 0);
        assert_eq!(netmask(40), u32::MAX);
        assert_eq!(netmask(8).to_ne_bytes(), [255, 0, 0, 0]);
    }
}
