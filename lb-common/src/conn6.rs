//! The IPv6 tables' keys and values. IPv6 has tables of its own (`CONNS6`,
//! `SESSIONS6`, `HALF_OPEN6`, `PENDING6`, `VIPS6`, `BACKEND_ADDRS6`) so that
//! IPv4's entries keep their 4-byte addresses: an IPv4 connection costs
//! what it did before IPv6 came. The decisions (states, timeouts, expiry,
//! confirmation, sessions' lifetime) are the IPv4 tables' own functions;
//! only the addresses differ. Addresses are [`Addr6`]: four words in packet
//! order, as IPv4 addresses are one.

use crate::{conn::conn_flags, BackendInfo, NextHop, Settings, VipInfo};

/// An IPv6 address as four `u32` words in packet order
/// (`u32::from_ne_bytes` of each four bytes).
pub type Addr6 = [u32; 4];

/// Whether two addresses are equal, word by word (a slice comparison
/// would call `bcmp`, which a BPF program cannot).
#[inline(always)]
#[must_use]
pub const fn same(a: &Addr6, b: &Addr6) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
}

/// Key of `CONNS6`: a flow as seen on the wire, as [`crate::FlowKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey6 {
    pub src_addr: Addr6,
    pub dst_addr: Addr6,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowKey6>() == 40);

/// Value of `CONNS6`, as [`crate::Conn`] with IPv6 addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn6 {
    pub last_seen_ns: u64,
    /// Forward: the backend's address; reply: the VIP's address.
    pub nat_addr: Addr6,
    pub nat_port: u16,
    /// One of [`crate::ConnState`].
    pub state: u8,
    /// Bits of [`conn_flags`].
    pub flags: u8,
    pub backend_id: u32,
    pub vip_id: u32,
    pub backend_gen: u32,
    /// The client address masked by the VIP's `netmask6`.
    pub session_client: Addr6,
    pub next_hop: NextHop,
}
const _: () = assert!(core::mem::size_of::<Conn6>() == 72);

impl Conn6 {
    #[inline(always)]
    #[must_use]
    pub const fn is_reply(&self) -> bool {
        self.flags & conn_flags::REPLY != 0
    }

    #[inline(always)]
    #[must_use]
    pub fn is_expired(&self, settings: &Settings, now_ns: u64) -> bool {
        crate::is_expired(self.last_seen_ns, settings.timeout_ns(self.state), now_ns)
    }

    /// The key of the other half of this connection, given this half's key.
    #[inline(always)]
    #[must_use]
    pub const fn twin_key(&self, key: &FlowKey6) -> FlowKey6 {
        if self.is_reply() {
            FlowKey6 {
                src_addr: key.dst_addr,
                dst_addr: self.nat_addr,
                src_port: key.dst_port,
                dst_port: self.nat_port,
                proto: key.proto,
                _pad: [0; 3],
            }
        } else {
            FlowKey6 {
                src_addr: self.nat_addr,
                dst_addr: key.src_addr,
                src_port: self.nat_port,
                dst_port: key.src_port,
                proto: key.proto,
                _pad: [0; 3],
            }
        }
    }
}

/// Key of `SESSIONS6` and `PENDING6`: one VIP and one client prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionKey6 {
    pub vip_id: u32,
    /// The client address masked by the VIP's `netmask6`.
    pub client: Addr6,
}
const _: () = assert!(core::mem::size_of::<SessionKey6>() == 20);

/// Key of `VIPS6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey6 {
    pub addr: Addr6,
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<VipKey6>() == 20);

/// Value of `VIPS6`: the VIP's settings, as an IPv4 VIP's (its id indexes
/// the same selection tables, counters and `BACKENDS`), and the client
/// prefix mask for its sessions (`netmask6`; `info.client_mask` unused).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipInfo6 {
    pub info: VipInfo,
    pub client_mask: Addr6,
}
const _: () = assert!(core::mem::size_of::<VipInfo6>() == 56);

/// Key of `HALF_OPEN6`: the client's end of an unconfirmed flow, which the
/// client's packets carry as their source and the backend's answers as
/// their destination, so both find the flow with one lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientKey6 {
    pub addr: Addr6,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ClientKey6>() == 20);

/// Value of `HALF_OPEN6`: an unconfirmed flow, its forward half and the
/// VIP it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HalfOpen6 {
    pub fwd: Conn6,
    pub vip_addr: Addr6,
    pub vip_port: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<HalfOpen6>() == 96);

impl HalfOpen6 {
    /// Whether the forward packet `key` (client to VIP) is of this flow.
    #[inline(always)]
    #[must_use]
    pub fn is_forward(&self, key: &FlowKey6) -> bool {
        key.dst_port == self.vip_port && same(&key.dst_addr, &self.vip_addr)
    }

    /// Whether the reply packet `key` (backend to client) is of this flow.
    #[inline(always)]
    #[must_use]
    pub fn is_reply(&self, key: &FlowKey6) -> bool {
        key.src_port == self.fwd.nat_port && same(&key.src_addr, &self.fwd.nat_addr)
    }

    /// The reply half, as it is recorded in `CONNS6` at confirmation.
    #[inline(always)]
    #[must_use]
    pub const fn reply(&self) -> Conn6 {
        Conn6 {
            nat_addr: self.vip_addr,
            nat_port: self.vip_port,
            flags: self.fwd.flags | conn_flags::REPLY,
            ..self.fwd
        }
    }
}

/// The key of `HALF_OPEN6` for a packet: its source for a client's packet
/// (`reply` false), its destination for a backend's answer.
#[inline(always)]
#[must_use]
pub const fn client_key(key: &FlowKey6, reply: bool) -> ClientKey6 {
    let (addr, port) = if reply {
        (key.dst_addr, key.dst_port)
    } else {
        (key.src_addr, key.src_port)
    };
    ClientKey6 {
        addr,
        port,
        proto: key.proto,
        _pad: 0,
    }
}

/// An IPv6 backend: its `BackendInfo` (address field 0) and its address in
/// `BACKEND_ADDRS6`, at the same backend slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend6 {
    pub info: BackendInfo,
    pub addr: Addr6,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with explicit padding.
    unsafe impl aya::Pod for super::FlowKey6 {}
    unsafe impl aya::Pod for super::Conn6 {}
    unsafe impl aya::Pod for super::SessionKey6 {}
    unsafe impl aya::Pod for super::VipKey6 {}
    unsafe impl aya::Pod for super::VipInfo6 {}
    unsafe impl aya::Pod for super::ClientKey6 {}
    unsafe impl aya::Pod for super::HalfOpen6 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn a(last: u32) -> Addr6 {
        [
            0x2001_0db8u32.to_be(),
            0x0018_0000u32.to_be(),
            0,
            last.to_be(),
        ]
    }

    #[test]
    fn twin_keys_round_trip() {
        let fwd_key = FlowKey6 {
            src_addr: a(11),
            dst_addr: a(0x100),
            src_port: 4000,
            dst_port: 80,
            proto: 6,
            _pad: [0; 3],
        };
        let fwd = Conn6 {
            nat_addr: a(0x1_0011),
            nat_port: 8080,
            ..Conn6::default()
        };
        let rep_key = fwd.twin_key(&fwd_key);
        assert_eq!(
            rep_key,
            FlowKey6 {
                src_addr: a(0x1_0011),
                dst_addr: a(11),
                src_port: 8080,
                dst_port: 4000,
                proto: 6,
                _pad: [0; 3]
            }
        );
        let h = HalfOpen6 {
            fwd,
            vip_addr: a(0x100),
            vip_port: 80,
            _pad: [0; 6],
        };
        assert!(h.is_forward(&fwd_key) && !h.is_reply(&fwd_key));
        assert!(h.is_reply(&rep_key) && !h.is_forward(&rep_key));
        assert_eq!(h.reply().twin_key(&rep_key), fwd_key);
        assert_eq!(client_key(&fwd_key, false), client_key(&rep_key, true));
    }
}
