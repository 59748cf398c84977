//! Keys and values of the configuration maps written by the controller.

/// A virtual service: key of `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// Network byte order.
    pub addr: u32,
    /// Network byte order.
    pub port: u16,
    /// [`crate::PROTO_TCP`] or [`crate::PROTO_UDP`].
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<VipKey>() == 8);

/// A virtual service's settings: value of `VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipInfo {
    /// Index of this VIP in the per-VIP arrays (`RING` block, counters).
    pub id: u32,
    /// Valid slots of this VIP's selection table; 0 when it has no backend.
    pub ring_len: u32,
    /// Persistence timeout; 0 turns persistence off.
    pub persist_timeout_ns: u64,
    /// Persistence netmask (network byte order): clients that agree on these
    /// bits share one session.
    pub client_mask: u32,
    /// 0: the VIP's selection table is its block of `RING` (walked by the
    /// round-robin cursor); `m + 1`: it is Maglev table `m` in `MAGLEV`,
    /// indexed by a hash of the client (or of the connection).
    pub maglev: u32,
    /// A session ends this long after it was created, busy or not; 0: no
    /// limit.
    pub max_lifetime_ns: u64,
    /// Bits of [`vip_flags`].
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<VipInfo>() == 40);

/// Bits of [`VipInfo::flags`].
pub mod vip_flags {
    /// `forwarding: dsr`: the backends hold the VIP and answer the clients
    /// themselves; the balancer only rewrites MAC addresses.
    pub const DSR: u32 = 1;
    /// `cluster:` is configured: the VIP's new sessions are announced on
    /// the `SESSION_EVENTS` ring, to be shared with the other hosts.
    pub const SHARED: u32 = 2;
    /// `scheduler: wrr` with persistence: a new client's backend is a hash
    /// of the client onto the VIP's selection table (in proportion to the
    /// weights, the same for its parallel first connections) rather than
    /// the next turn, so no pending session is needed (`rr` keeps strict
    /// turns and its pending sessions).
    pub const HASH_FIRST: u32 = 4;
}

/// Bits of [`BackendInfo::flags`].
pub mod backend_flags {
    /// The backend serves its VIP: sessions pinned to it may keep using it.
    /// Cleared when it is removed, down, or drained with re-pinning; new
    /// clients reach a backend only through the VIP's selection table.
    pub const ACTIVE: u32 = 1;
    /// The backend is configured (not removed), whatever its state; the
    /// controller reads this back from kept tables after a restart. The
    /// data path does not look at it.
    pub const CONFIGURED: u32 = 2;
}

/// One backend of one VIP: value of `BACKENDS`, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendInfo {
    /// Network byte order.
    pub addr: u32,
    /// Network byte order.
    pub port: u16,
    pub _pad: u16,
    /// The VIP this backend serves.
    pub vip_id: u32,
    /// Bumped each time the slot is given to a new backend.
    pub gen: u32,
    /// Bits of [`backend_flags`].
    pub flags: u32,
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<BackendInfo>() == 24);

impl BackendInfo {
    /// Whether a session pinned to (`id`'s slot, `gen`) for `vip_id` may still
    /// use this backend.
    #[inline(always)]
    #[must_use]
    pub const fn serves(&self, vip_id: u32, gen: u32) -> bool {
        self.flags & backend_flags::ACTIVE != 0 && self.vip_id == vip_id && self.gen == gen
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with explicit padding.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipInfo {}
    unsafe impl aya::Pod for super::BackendInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_serves_only_its_vip_and_generation_while_active() {
        let b = BackendInfo {
            vip_id: 3,
            gen: 7,
            flags: backend_flags::ACTIVE,
            ..BackendInfo::default()
        };
        assert!(b.serves(3, 7));
        assert!(!b.serves(4, 7));
        assert!(!b.serves(3, 6));
        let removed = BackendInfo { flags: 0, ..b };
        assert!(!removed.serves(3, 7));
    }
}
