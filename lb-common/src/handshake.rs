//! The new-flow path's table of unconfirmed flows (`HALF_OPEN`: TCP
//! handshakes in progress and UDP flows not answered yet), one of the two
//! fixed set-associative tables of [`crate::sets`] (the other is
//! [`crate::pending`]).
//!
//! An unconfirmed flow is one entry for both directions: its set is chosen
//! by the client's address and port, which the client's packets carry as
//! their source and the backend's answers as their destination, so the
//! backend's SYN-ACK finds it without a second ("reply") entry.
//!
//! The fields that identify an entry and its choice are sealed with a
//! check word at creation (see [`crate::sets`]); the fields changed in
//! place afterwards (time, state, flags) are single words or bytes.

use crate::{
    conn::conn_flags,
    sets::{check, free_or_oldest, set_of, WAYS},
    Conn, FlowKey, NextHop, Settings,
};

/// The check word of an unconfirmed flow's fields that never change
/// (`ids`: backend id, VIP id, session client, backend generation).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
const fn seal_of(
    client_addr: u32,
    vip_addr: u32,
    backend_addr: u32,
    client_port: u16,
    vip_port: u16,
    backend_port: u16,
    proto: u8,
    ids: [u32; 4],
) -> u32 {
    check([
        client_addr,
        vip_addr,
        backend_addr,
        (client_port as u32) << 16 | vip_port as u32,
        (backend_port as u32) << 16 | proto as u32,
        ids[0] ^ ids[1].rotate_left(16),
        ids[2],
        ids[3],
    ])
}

/// An unconfirmed flow, whole: one way of `HALF_OPEN` (kept there as a
/// [`Tag`] and a [`Body`], see [`HandshakeSet`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    /// Monotonic clock (ns) of the last refresh; 0: a free way.
    pub last_seen_ns: u64,
    pub client_addr: u32,
    pub vip_addr: u32,
    pub backend_addr: u32,
    pub client_port: u16,
    pub vip_port: u16,
    pub backend_port: u16,
    pub proto: u8,
    /// One of [`crate::ConnState`].
    pub state: u8,
    /// Bits of [`conn_flags`] (never `REPLY`).
    pub flags: u8,
    pub _pad: [u8; 3],
    pub backend_id: u32,
    pub vip_id: u32,
    pub session_client: u32,
    pub backend_gen: u32,
    /// Seals the fields above that never change (see the module).
    pub check: u32,
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<Handshake>() == 56);

/// The part of an unconfirmed flow a lookup reads first: one 16-byte tag
/// per way, the four in one cache line (the set's first).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tag {
    /// 0: a free way.
    pub last_seen_ns: u64,
    pub client_addr: u32,
    pub client_port: u16,
    pub proto: u8,
    pub state: u8,
}
const _: () = assert!(core::mem::size_of::<Tag>() == 16);

/// The rest of an unconfirmed flow, read only when its tag matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Body {
    pub vip_addr: u32,
    pub backend_addr: u32,
    pub vip_port: u16,
    pub backend_port: u16,
    pub flags: u8,
    pub _pad: [u8; 3],
    pub backend_id: u32,
    pub vip_id: u32,
    pub session_client: u32,
    pub backend_gen: u32,
    pub check: u32,
    pub _pad2: [u32; 3],
}
const _: () = assert!(core::mem::size_of::<Body>() == 48);

/// A set of `HALF_OPEN`: the four tags in its first cache line, the four
/// bodies in the next three (the map's values start on a page, so every
/// set is line-aligned). A lookup that finds no tag of its client has read
/// one line; a new flow picks its way from the same line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeSet {
    pub tags: [Tag; WAYS],
    pub bodies: [Body; WAYS],
}
const _: () = assert!(core::mem::size_of::<HandshakeSet>() == 256);

impl HandshakeSet {
    /// Way `i`, whole.
    #[inline(always)]
    #[must_use]
    pub const fn get(&self, i: usize) -> Handshake {
        let (t, b) = (&self.tags[i], &self.bodies[i]);
        Handshake {
            last_seen_ns: t.last_seen_ns,
            client_addr: t.client_addr,
            vip_addr: b.vip_addr,
            backend_addr: b.backend_addr,
            client_port: t.client_port,
            vip_port: b.vip_port,
            backend_port: b.backend_port,
            proto: t.proto,
            state: t.state,
            flags: b.flags,
            _pad: [0; 3],
            backend_id: b.backend_id,
            vip_id: b.vip_id,
            session_client: b.session_client,
            backend_gen: b.backend_gen,
            check: b.check,
            _pad2: 0,
        }
    }

    /// Every way, whole (free ones included).
    pub fn ways(&self) -> impl Iterator<Item = Handshake> + '_ {
        (0..WAYS).map(|i| self.get(i))
    }

    /// Write `h` into way `i`.
    #[inline(always)]
    pub fn put(&mut self, i: usize, h: &Handshake) {
        self.bodies[i] = Body {
            vip_addr: h.vip_addr,
            backend_addr: h.backend_addr,
            vip_port: h.vip_port,
            backend_port: h.backend_port,
            flags: h.flags,
            _pad: [0; 3],
            backend_id: h.backend_id,
            vip_id: h.vip_id,
            session_client: h.session_client,
            backend_gen: h.backend_gen,
            check: h.check,
            _pad2: [0; 3],
        };
        self.tags[i] = Tag {
            last_seen_ns: h.last_seen_ns,
            client_addr: h.client_addr,
            client_port: h.client_port,
            proto: h.proto,
            state: h.state,
        };
    }

    /// Whether way `i` is in use by the client of `addr`:`port` (its tag
    /// alone: the body decides the rest).
    #[inline(always)]
    #[must_use]
    pub const fn client_at(&self, i: usize, addr: u32, port: u16, proto: u8) -> bool {
        let t = &self.tags[i];
        t.last_seen_ns != 0 && t.client_addr == addr && t.client_port == port && t.proto == proto
    }

    /// Whether way `i`, read in place, holds the flow whose client's
    /// packet to its VIP has `key`.
    #[inline(always)]
    #[must_use]
    pub const fn forward_at(&self, i: usize, key: &FlowKey) -> bool {
        let b = &self.bodies[i];
        self.client_at(i, key.src_addr, key.src_port, key.proto)
            && b.vip_addr == key.dst_addr
            && b.vip_port == key.dst_port
    }

    /// Whether way `i`, read in place, holds the flow whose backend's
    /// answer has `key` (never a direct-server-return flow).
    #[inline(always)]
    #[must_use]
    pub const fn reply_at(&self, i: usize, key: &FlowKey) -> bool {
        let b = &self.bodies[i];
        self.client_at(i, key.dst_addr, key.dst_port, key.proto)
            && b.flags & conn_flags::DSR == 0
            && b.backend_addr == key.src_addr
            && b.backend_port == key.src_port
    }

    /// Whether way `i`, read in place, is whole and not expired at `now`.
    #[inline(always)]
    #[must_use]
    pub fn live_at(&self, i: usize, settings: &Settings, now: u64) -> bool {
        let (t, b) = (&self.tags[i], &self.bodies[i]);
        t.last_seen_ns != 0
            && b.check
                == seal_of(
                    t.client_addr,
                    b.vip_addr,
                    b.backend_addr,
                    t.client_port,
                    b.vip_port,
                    b.backend_port,
                    t.proto,
                    [b.backend_id, b.vip_id, b.session_client, b.backend_gen],
                )
            && !crate::is_expired(t.last_seen_ns, settings.timeout_ns(t.state), now)
    }

    /// The way a new flow goes into, and whether it pushes a live flow
    /// out: a free or expired way, else the least recently used (from the
    /// tags only).
    #[inline(always)]
    #[must_use]
    pub fn victim(&self, settings: &Settings, now: u64) -> (usize, bool) {
        let t = &self.tags;
        let free = |t: &Tag| {
            t.last_seen_ns == 0
                || crate::is_expired(t.last_seen_ns, settings.timeout_ns(t.state), now)
        };
        free_or_oldest(
            [
                t[0].last_seen_ns,
                t[1].last_seen_ns,
                t[2].last_seen_ns,
                t[3].last_seen_ns,
            ],
            [free(&t[0]), free(&t[1]), free(&t[2]), free(&t[3])],
        )
    }
}

impl Handshake {
    /// The entry of a new flow: `key` is its forward key (client to VIP),
    /// `fwd` the forward half as `CONNS` will hold it once confirmed.
    #[inline(always)]
    #[must_use]
    pub const fn new(key: &FlowKey, fwd: &Conn) -> Self {
        let mut h = Self {
            last_seen_ns: fwd.last_seen_ns,
            client_addr: key.src_addr,
            vip_addr: key.dst_addr,
            backend_addr: fwd.nat_addr,
            client_port: key.src_port,
            vip_port: key.dst_port,
            backend_port: fwd.nat_port,
            proto: key.proto,
            state: fwd.state,
            flags: fwd.flags & !conn_flags::REPLY,
            _pad: [0; 3],
            backend_id: fwd.backend_id,
            vip_id: fwd.vip_id,
            session_client: fwd.session_client,
            backend_gen: fwd.backend_gen,
            check: 0,
            _pad2: 0,
        };
        h.check = h.seal();
        h
    }

    #[inline(always)]
    const fn seal(&self) -> u32 {
        seal_of(
            self.client_addr,
            self.vip_addr,
            self.backend_addr,
            self.client_port,
            self.vip_port,
            self.backend_port,
            self.proto,
            [
                self.backend_id,
                self.vip_id,
                self.session_client,
                self.backend_gen,
            ],
        )
    }

    /// Written whole (neither free nor mixed by two writers).
    #[inline(always)]
    #[must_use]
    pub const fn is_sealed(&self) -> bool {
        self.last_seen_ns != 0 && self.check == self.seal()
    }

    /// Written whole and not expired at `now`.
    #[inline(always)]
    #[must_use]
    pub fn is_live(&self, settings: &Settings, now: u64) -> bool {
        self.is_sealed()
            && !crate::is_expired(self.last_seen_ns, settings.timeout_ns(self.state), now)
    }

    /// Whether a packet with `key` is this flow's client to its VIP.
    #[inline(always)]
    #[must_use]
    pub const fn is_forward(&self, key: &FlowKey) -> bool {
        self.client_addr == key.src_addr
            && self.client_port == key.src_port
            && self.vip_addr == key.dst_addr
            && self.vip_port == key.dst_port
            && self.proto == key.proto
    }

    /// Whether a packet with `key` is this flow's backend answering its
    /// client (never for direct server return: the answer does not pass).
    #[inline(always)]
    #[must_use]
    pub const fn is_reply(&self, key: &FlowKey) -> bool {
        self.flags & conn_flags::DSR == 0
            && self.backend_addr == key.src_addr
            && self.backend_port == key.src_port
            && self.client_addr == key.dst_addr
            && self.client_port == key.dst_port
            && self.proto == key.proto
    }

    /// The forward key and half (client to VIP, DNAT to the backend).
    #[inline(always)]
    #[must_use]
    pub const fn forward(&self) -> (FlowKey, Conn) {
        (
            FlowKey {
                src_addr: self.client_addr,
                dst_addr: self.vip_addr,
                src_port: self.client_port,
                dst_port: self.vip_port,
                proto: self.proto,
                _pad: [0; 3],
            },
            self.half(self.backend_addr, self.backend_port, 0),
        )
    }

    /// The reply key and half (backend to client, SNAT back to the VIP).
    #[inline(always)]
    #[must_use]
    pub const fn reply(&self) -> (FlowKey, Conn) {
        (
            FlowKey {
                src_addr: self.backend_addr,
                dst_addr: self.client_addr,
                src_port: self.backend_port,
                dst_port: self.client_port,
                proto: self.proto,
                _pad: [0; 3],
            },
            self.half(self.vip_addr, self.vip_port, conn_flags::REPLY),
        )
    }

    #[inline(always)]
    const fn half(&self, nat_addr: u32, nat_port: u16, flags: u8) -> Conn {
        Conn {
            last_seen_ns: self.last_seen_ns,
            nat_addr,
            nat_port,
            state: self.state,
            flags: self.flags | flags,
            backend_id: self.backend_id,
            vip_id: self.vip_id,
            session_client: self.session_client,
            backend_gen: self.backend_gen,
            next_hop: NextHop {
                ifindex: 0,
                dmac: [0; 6],
                smac: [0; 6],
            },
        }
    }
}

/// The set of the unconfirmed flows whose client is `addr`:`port`.
#[inline(always)]
#[must_use]
pub const fn handshake_set(settings: &Settings, addr: u32, port: u16, proto: u8) -> u32 {
    set_of(
        settings.seed,
        addr,
        (port as u32) << 8 | proto as u32,
        settings.half_open_mask,
    )
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with explicit padding.
    unsafe impl aya::Pod for super::HandshakeSet {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnState, PROTO_TCP};

    fn settings() -> Settings {
        Settings {
            tcp_syn_ns: 100,
            tcp_established_ns: 1000,
            tcp_closing_ns: 10,
            udp_ns: 300,
            half_open_mask: 7,
            pending_mask: 3,
            seed: 42,
            _pad: 0,
        }
    }

    fn flow() -> (FlowKey, Conn) {
        let key = FlowKey {
            src_addr: u32::from_ne_bytes([198, 18, 0, 11]),
            dst_addr: u32::from_ne_bytes([198, 18, 0, 100]),
            src_port: 40000u16.to_be(),
            dst_port: 80u16.to_be(),
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        let fwd = Conn {
            last_seen_ns: 50,
            nat_addr: u32::from_ne_bytes([198, 18, 1, 12]),
            nat_port: 8080u16.to_be(),
            state: ConnState::TCP_SYN,
            flags: conn_flags::SESSION,
            backend_id: 3,
            vip_id: 1,
            session_client: key.src_addr,
            backend_gen: 7,
            next_hop: NextHop::default(),
        };
        (key, fwd)
    }

    #[test]
    fn one_entry_answers_both_directions() {
        let (key, fwd) = flow();
        let h = Handshake::new(&key, &fwd);
        assert_eq!(h.forward(), (key, fwd));
        let (rkey, rep) = h.reply();
        assert_eq!(rkey, fwd.twin_key(&key));
        assert_eq!(rep.twin_key(&rkey), key);
        assert!(rep.is_reply());
        assert_eq!((rep.nat_addr, rep.nat_port), (key.dst_addr, key.dst_port));
        assert!(h.is_forward(&key) && !h.is_reply(&key));
        assert!(h.is_reply(&rkey) && !h.is_forward(&rkey));
        // Both directions land in the same set.
        let s = settings();
        assert_eq!(
            handshake_set(&s, key.src_addr, key.src_port, key.proto),
            handshake_set(&s, rkey.dst_addr, rkey.dst_port, rkey.proto)
        );
        // Direct server return: no answer passes the balancer.
        let dsr = Handshake::new(
            &key,
            &Conn {
                flags: conn_flags::DSR,
                ..fwd
            },
        );
        assert!(!dsr.is_reply(&rkey));
    }

    #[test]
    fn liveness_needs_a_whole_unexpired_entry() {
        let (key, fwd) = flow();
        let s = settings();
        let h = Handshake::new(&key, &fwd);
        assert!(h.is_live(&s, 149));
        assert!(!h.is_live(&s, 150), "past the SYN timeout");
        assert!(!Handshake::default().is_live(&s, 60), "never written");
        // Two writers mixed: one field of another flow.
        let torn = Handshake {
            backend_addr: 1,
            ..h
        };
        assert!(!torn.is_live(&s, 60));
        // Fields changed in place do not unseal it.
        let moved = Handshake {
            state: ConnState::TCP_ESTABLISHED,
            flags: h.flags | conn_flags::ANSWERED,
            last_seen_ns: 120,
            ..h
        };
        assert!(moved.is_live(&s, 1000));
    }

    #[test]
    fn a_full_set_gives_up_its_least_recently_used_way() {
        let (key, fwd) = flow();
        let s = settings();
        let at = |t: u64| {
            Handshake::new(
                &key,
                &Conn {
                    last_seen_ns: t,
                    ..fwd
                },
            )
        };
        let mut set = HandshakeSet::default();
        for (i, t) in [40, 20, 60, 30].into_iter().enumerate() {
            set.put(i, &at(t));
        }
        assert_eq!(set.get(2), at(60), "a way reads back whole");
        assert!(set.client_at(2, key.src_addr, key.src_port, key.proto));
        assert!(!set.client_at(2, key.src_addr, key.src_port ^ 1, key.proto));
        assert_eq!(set.victim(&s, 110), (1, true));
        set.put(2, &Handshake::default());
        assert!(!set.client_at(2, key.src_addr, key.src_port, key.proto));
        assert_eq!(set.victim(&s, 110), (2, false), "a free way first");
        set.put(2, &at(60));
        set.put(3, &at(5)); // expired at 110 (SYN timeout 100)
        assert_eq!(set.victim(&s, 110), (3, false), "then an expired one");
        // A tag of one flow with the body of another fails the seal.
        let mut torn = set;
        torn.bodies[0].backend_addr ^= 1;
        assert!(!torn.get(0).is_sealed() && set.get(0).is_sealed());
    }
}
