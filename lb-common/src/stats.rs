//! Counters kept per CPU by the data path.

/// Traffic counters of one VIP or one backend (`VIP_STATS`, `BACKEND_STATS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
}
const _: () = assert!(core::mem::size_of::<Counters>() == 24);

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers.
unsafe impl aya::Pod for Counters {}

/// Why the data path did what it did: slots of the `REASONS` counter array.
pub struct Reason;
impl Reason {
    /// Rewritten and sent back out of the interface it came in on.
    pub const TX: u32 = 0;
    /// Rewritten and redirected to another attached interface.
    pub const REDIRECT: u32 = 1;
    /// Rewritten and handed to the kernel, whose neighbour table has no entry
    /// for the next hop yet (the kernel forwards it and resolves ARP).
    pub const PASS_NO_NEIGH: u32 = 2;
    /// Rewritten and handed to the kernel: the route goes out of an interface
    /// the program is not attached to, or the FIB lookup failed otherwise.
    pub const PASS_FIB: u32 = 3;
    /// Neither IPv4 nor IPv6 (ARP, ...): passed untouched.
    pub const PASS_NOT_IP: u32 = 4;
    /// IP but neither TCP nor UDP (ICMP and ICMPv6 other than the errors
    /// about balanced flows, neighbour discovery, ...): passed untouched.
    pub const PASS_NOT_TCP_UDP: u32 = 5;
    /// TCP/UDP to no VIP and of no tracked connection: passed untouched.
    pub const PASS_NOT_VIP: u32 = 6;
    /// Frame shorter than the headers it announces: passed untouched.
    pub const PASS_TRUNCATED: u32 = 7;
    /// Malformed IPv4 header (bad version or header length): passed untouched.
    pub const PASS_MALFORMED: u32 = 8;
    /// IPv4 header with options: passed untouched.
    pub const PASS_IP_OPTIONS: u32 = 9;
    /// IPv4 fragment, or IPv6 packet with a Fragment header: passed
    /// untouched.
    pub const PASS_FRAGMENT: u32 = 10;
    /// Dropped: the VIP has no backend.
    pub const DROP_NO_BACKEND: u32 = 11;
    /// Dropped: a connection being confirmed found the connection table
    /// full (its half-open entries are removed).
    pub const DROP_CONN_TABLE_FULL: u32 = 12;
    /// Not a verdict: a new session could not be stored because the
    /// persistence table is full (the connection is still served).
    pub const SESSION_TABLE_FULL: u32 = 13;
    /// Not a verdict: a new connection was scheduled.
    pub const NEW_CONN: u32 = 14;
    /// Not a verdict: a new connection reused a live session.
    pub const SESSION_HIT: u32 = 15;
    /// Not a verdict: an unconfirmed flow (TCP half-open, UDP unanswered) was
    /// confirmed and moved to the connection table.
    pub const CONFIRMED: u32 = 16;
    /// Not a verdict: a new connection of a client whose first connection
    /// is not confirmed yet went to the same backend (pending session).
    pub const PENDING_HIT: u32 = 17;
    /// Dropped: a direct-server-return packet whose backend's neighbour
    /// entry is not resolved yet (the kernel cannot forward a packet
    /// addressed to its own VIP; the controller resolves the backends and
    /// the client retransmits).
    pub const DROP_DSR_NO_NEIGH: u32 = 18;
    /// Not a verdict: a new unconfirmed flow found its set of `HALF_OPEN`
    /// full of live flows and replaced the least recently used one.
    pub const HALF_OPEN_EVICTED: u32 = 19;
    /// Dropped: a UDP datagram over IPv6 with checksum 0, which IPv6 does
    /// not allow (RFC 8200, 8.1).
    pub const DROP_UDP_ZERO_CHECKSUM: u32 = 20;
    /// An IPv6 packet with a header the data path does not skip: AH, ESP,
    /// a Routing header with segments left, no next header, more than
    /// four extension headers, or an unknown one: passed untouched.
    pub const PASS_IPV6_UNSUPPORTED: u32 = 21;
    /// Number of slots.
    pub const COUNT: u32 = 22;

    /// Whether the data path drops a packet it gives up on for `reason`
    /// (else it passes it to the kernel).
    #[inline(always)]
    #[must_use]
    pub const fn drops(reason: u32) -> bool {
        reason == Self::DROP_NO_BACKEND
            || reason == Self::DROP_CONN_TABLE_FULL
            || reason == Self::DROP_UDP_ZERO_CHECKSUM
    }

    /// Metric label of each slot, in slot order.
    pub const NAMES: [&'static str; Self::COUNT as usize] = [
        "tx",
        "redirect",
        "pass_no_neigh",
        "pass_fib",
        "pass_not_ip",
        "pass_not_tcp_udp",
        "pass_not_vip",
        "pass_truncated",
        "pass_malformed",
        "pass_ip_options",
        "pass_fragment",
        "drop_no_backend",
        "drop_conn_table_full",
        "session_table_full",
        "new_conn",
        "session_hit",
        "confirmed",
        "pending_hit",
        "drop_dsr_no_neigh",
        "half_open_evicted",
        "drop_udp_zero_checksum",
        "pass_ipv6_unsupported",
    ];
}

/// What the data path did with an ICMP error (destination unreachable,
/// time exceeded, parameter problem): slots of the `ICMP_STATS` counter
/// array. The first three are translations of an error about a balanced
/// flow; the others left the error to the kernel untouched.
pub struct IcmpReason;
impl IcmpReason {
    /// About a reply the balancer sent from the VIP (a router towards the
    /// client could not deliver it): translated and sent to the backend.
    pub const TO_BACKEND: u32 = 0;
    /// From a backend (or a router towards it) about a packet the balancer
    /// forwarded: translated and sent to the client.
    pub const TO_CLIENT: u32 = 1;
    /// About a packet a direct-server-return backend sent from the VIP:
    /// sent unchanged to that backend's MAC address.
    pub const TO_DSR_BACKEND: u32 = 2;
    /// Passed: the embedded packet belongs to no live balanced flow.
    pub const UNMATCHED: u32 = 3;
    /// Passed: the embedded packet is neither TCP nor UDP.
    pub const NOT_TCP_UDP: u32 = 4;
    /// Passed: the error is shorter than an IPv4 header and 8 bytes of the
    /// packet it is about.
    pub const TRUNCATED: u32 = 5;
    /// Passed: the embedded header is not IPv4 or has a bad length, or the
    /// error is not addressed to the embedded packet's source.
    pub const MALFORMED: u32 = 6;
    /// Passed: the embedded header has options or is a non-first fragment
    /// (no ports to match).
    pub const UNSUPPORTED: u32 = 7;
    /// Number of slots.
    pub const COUNT: u32 = 8;

    /// Metric label of each slot, in slot order.
    pub const NAMES: [&'static str; Self::COUNT as usize] = [
        "to_backend",
        "to_client",
        "to_dsr_backend",
        "unmatched",
        "not_tcp_udp",
        "truncated",
        "malformed",
        "unsupported",
    ];
}

/// ICMPv4 types that report an error about a packet and carry its header:
/// destination unreachable (3, "fragmentation needed" included), time
/// exceeded (11) and parameter problem (12).
#[inline(always)]
#[must_use]
pub const fn is_icmp_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 11 | 12)
}
