//! What the connection tables or the scheduler decided for a packet (the
//! rewrite, the counters and the forwarding all follow it), and where its
//! next hop may be cached.

use lb_common::NextHop;

/// What the connection table or the scheduler decided for this packet;
/// `A` is the address type of its family (`u32`, or `Addr6` for IPv6).
pub struct Flow<A = u32> {
    /// The reply half: rewrite the source back to `nat`.
    pub reply: bool,
    pub nat_addr: A,
    pub nat_port: u16,
    pub vip_id: u32,
    pub backend_id: u32,
    /// A connection was created by this packet.
    pub new: bool,
    /// Direct server return: forwarded to `nat_addr`'s MAC, unrewritten.
    pub dsr: bool,
    /// Where the next hop is cached: the connection-table entry of an
    /// established flow, the backend's for a new flow's packets to it.
    pub hop: Cache,
}

/// Where a packet's next hop may be cached: an established flow's entry
/// (`conn`, its `next_hop` field; its once-a-second refresh clears it), else, for a new flow's
/// packet to its backend, the backend's own (`NEXT_HOPS[slot]` of that
/// generation, renewed when a second old), else nowhere (replies of new
/// flows, ICMP errors). A plain struct, not an enum: LLVM packs an enum's
/// tag into a pointer's spare bits, which the verifier refuses.
#[derive(Clone, Copy)]
pub struct Cache {
    pub(crate) conn: *mut NextHop,
    pub(crate) slot: u32,
    pub(crate) gen: u32,
    pub(crate) now: u64,
}

impl Cache {
    const NO_SLOT: u32 = u32::MAX;

    #[inline(always)]
    pub const fn conn(conn: *mut NextHop) -> Self {
        Self {
            conn,
            slot: Self::NO_SLOT,
            gen: 0,
            now: 0,
        }
    }

    #[inline(always)]
    pub const fn backend(slot: u32, gen: u32, now: u64) -> Self {
        Self {
            conn: core::ptr::null_mut(),
            slot,
            gen,
            now,
        }
    }

    #[inline(always)]
    pub const fn none() -> Self {
        Self::backend(Self::NO_SLOT, 0, 0)
    }
}
