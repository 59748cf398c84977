//! The new-flow path's two fixed tables: unconfirmed flows (`HALF_OPEN`,
//! TCP handshakes in progress and UDP flows not answered yet) and pending
//! sessions (`PENDING`, the backend chosen for a new client until one of
//! its connections is confirmed).
//!
//! Each is an array of sets of [`WAYS`] entries, preallocated at load. A
//! key's set is a seeded hash of it; a new entry takes a free or expired
//! way of its set, else the least recently used one. A lookup reads one
//! set and an insert writes into the set the lookup has just read: no
//! lock, no free list, no allocation, so a SYN costs one cold set instead
//! of the two LRU inserts (bucket lock, free-list pop, cold node) an LRU
//! hash table takes. A flood can only shorten how long an unconfirmed
//! entry lives; confirmed connections and sessions live in `CONNS` and
//! `SESSIONS`, which only confirmed flows reach.
//!
//! An unconfirmed flow is one entry for both directions: its set is chosen
//! by the client's address and port, which the client's packets carry as
//! their source and the backend's answers as their destination, so the
//! backend's SYN-ACK finds it without a second ("reply") entry.
//!
//! Ways are written without a lock: two CPUs writing one way at the same
//! instant could mix two entries. The fields that identify an entry and
//! its choice are sealed with a check word at creation; a way whose check
//! does not match counts as free. The fields changed in place afterwards
//! (time, state, flags) are single words or bytes.

use crate::{conn::conn_flags, Conn, FlowKey, NextHop, Session, SessionKey, Settings};

/// Ways per set.
pub const WAYS: usize = 4;

/// Sets of a table that holds at least `entries`: a power of two.
#[must_use]
pub const fn sets_for(entries: u32) -> u32 {
    let sets = entries.div_ceil(WAYS as u32);
    if sets <= 1 {
        1
    } else {
        sets.next_power_of_two()
    }
}

/// The set of (`a`, `b`) in a table of `mask + 1` sets: murmur3's 64-bit
/// finalizer over the seeded pair. The seed is chosen at random when the
/// tables are created, so that nobody outside can aim at one set.
#[inline(always)]
#[must_use]
pub const fn set_of(seed: u32, a: u32, b: u32, mask: u32) -> u32 {
    let mut h = ((a as u64) << 32 | b as u64) ^ ((seed as u64) << 16 | seed as u64);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h as u32) & mask
}

/// A check word over `words`: a cheap mix, different for any single
/// changed word (sealing, not security).
#[inline(always)]
const fn check(words: [u32; 8]) -> u32 {
    let mut h: u32 = 0x9e37_79b9;
    let mut i = 0;
    while i < words.len() {
        h = (h ^ words[i]).wrapping_mul(0x0100_0193).rotate_left(13);
        i += 1;
    }
    // Never 0: an all-zero (never written) way is never sealed.
    h | 1
}

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

/// The way a new entry of a set goes into, and whether it pushes a live
/// one out: the first `free` way, else the one least recently used by
/// `stamps` (as the least recently used entry of a full LRU table goes).
#[inline(always)]
const fn free_or_oldest(stamps: [u64; WAYS], free: [bool; WAYS]) -> (usize, bool) {
    let mut oldest = 0;
    let mut i = 0;
    while i < WAYS {
        if free[i] {
            return (i, false);
        }
        if stamps[i] < stamps[oldest] {
            oldest = i;
        }
        i += 1;
    }
    (oldest, true)
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

/// A pending session, whole: one way of `PENDING` (kept there as a
/// [`PendingTag`] and a [`PendingBody`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub key: SessionKey,
    /// `last_seen_ns` 0: a free way.
    pub session: Session,
    /// Seals the key and the choice (see the module).
    pub check: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Pending>() == 40);

/// A pending session's tag: the four of a set in its first cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingTag {
    /// 0: a free way.
    pub last_seen_ns: u64,
    pub key: SessionKey,
}
const _: () = assert!(core::mem::size_of::<PendingTag>() == 16);

/// The rest of a pending session.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingBody {
    pub created_ns: u64,
    pub backend_id: u32,
    pub backend_gen: u32,
    pub check: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<PendingBody>() == 24);

/// A set of `PENDING`: tags in the first cache line, bodies in the next
/// two (line-aligned like [`HandshakeSet`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingSet {
    pub tags: [PendingTag; WAYS],
    pub bodies: [PendingBody; WAYS],
    pub _pad: [u64; 4],
}
const _: () = assert!(core::mem::size_of::<PendingSet>() == 192);

impl PendingSet {
    /// Way `i`, whole.
    #[inline(always)]
    #[must_use]
    pub const fn get(&self, i: usize) -> Pending {
        let (t, b) = (&self.tags[i], &self.bodies[i]);
        Pending {
            key: t.key,
            session: Session {
                last_seen_ns: t.last_seen_ns,
                backend_id: b.backend_id,
                backend_gen: b.backend_gen,
                created_ns: b.created_ns,
            },
            check: b.check,
            _pad: 0,
        }
    }

    /// Every way, whole (free ones included).
    pub fn ways(&self) -> impl Iterator<Item = Pending> + '_ {
        (0..WAYS).map(|i| self.get(i))
    }

    /// Write `p` into way `i`.
    #[inline(always)]
    pub fn put(&mut self, i: usize, p: &Pending) {
        self.bodies[i] = PendingBody {
            created_ns: p.session.created_ns,
            backend_id: p.session.backend_id,
            backend_gen: p.session.backend_gen,
            check: p.check,
            _pad: 0,
        };
        self.tags[i] = PendingTag {
            last_seen_ns: p.session.last_seen_ns,
            key: p.key,
        };
    }

    /// The way that holds `key` (its tag, then its seal), if any.
    #[inline(always)]
    #[must_use]
    pub fn find(&self, key: &SessionKey) -> Option<usize> {
        let mut i = 0;
        while i < WAYS {
            let t = &self.tags[i];
            if t.last_seen_ns != 0
                && t.key.vip_id == key.vip_id
                && t.key.client == key.client
                && self.get(i).is_sealed()
            {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// The way a new pending session goes into: a free one, else the
    /// least recently used (as a full LRU table would give up).
    #[inline(always)]
    #[must_use]
    pub fn victim(&self) -> usize {
        let stamps = [
            self.tags[0].last_seen_ns,
            self.tags[1].last_seen_ns,
            self.tags[2].last_seen_ns,
            self.tags[3].last_seen_ns,
        ];
        free_or_oldest(
            stamps,
            [
                stamps[0] == 0,
                stamps[1] == 0,
                stamps[2] == 0,
                stamps[3] == 0,
            ],
        )
        .0
    }
}

impl Pending {
    #[inline(always)]
    #[must_use]
    pub const fn new(key: &SessionKey, session: &Session) -> Self {
        let mut p = Self {
            key: *key,
            session: *session,
            check: 0,
            _pad: 0,
        };
        p.check = p.seal();
        p
    }

    #[inline(always)]
    const fn seal(&self) -> u32 {
        check([
            self.key.vip_id,
            self.key.client,
            self.session.backend_id,
            self.session.backend_gen,
            self.session.created_ns as u32,
            (self.session.created_ns >> 32) as u32,
            0,
            0,
        ])
    }

    /// Written whole, for `key`.
    #[inline(always)]
    #[must_use]
    pub const fn holds(&self, key: &SessionKey) -> bool {
        self.session.last_seen_ns != 0
            && self.key.vip_id == key.vip_id
            && self.key.client == key.client
            && self.check == self.seal()
    }

    /// Written whole, whatever its key.
    #[inline(always)]
    #[must_use]
    pub const fn is_sealed(&self) -> bool {
        self.session.last_seen_ns != 0 && self.check == self.seal()
    }
}

/// The set of the pending session `key`.
#[inline(always)]
#[must_use]
pub const fn pending_set(settings: &Settings, key: &SessionKey) -> u32 {
    set_of(settings.seed, key.client, key.vip_id, settings.pending_mask)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers with explicit padding.
    unsafe impl aya::Pod for super::HandshakeSet {}
    unsafe impl aya::Pod for super::PendingSet {}
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

    #[test]
    fn pending_ways_hold_their_key_only_when_whole() {
        let key = SessionKey {
            vip_id: 2,
            client: 99,
        };
        let p = Pending::new(
            &key,
            &Session {
                last_seen_ns: 5,
                backend_id: 4,
                backend_gen: 1,
                created_ns: 5,
            },
        );
        assert!(p.holds(&key));
        assert!(!p.holds(&SessionKey { client: 98, ..key }));
        let mut torn = p;
        torn.session.backend_id = 5;
        assert!(!torn.holds(&key) && !torn.is_sealed());
        assert!(!Pending::default().is_sealed());
        let mut set = PendingSet::default();
        assert_eq!(set.victim(), 0);
        set.put(1, &p);
        assert_eq!(set.get(1), p);
        assert_eq!(set.find(&key), Some(1));
        assert_eq!(set.find(&SessionKey { client: 98, ..key }), None);
        set.bodies[1].backend_id = 5;
        assert_eq!(set.find(&key), None, "torn: not whole");
        for i in 0..WAYS {
            set.put(
                i,
                &Pending::new(
                    &key,
                    &Session {
                        last_seen_ns: 10 - i as u64,
                        ..p.session
                    },
                ),
            );
        }
        assert_eq!(set.victim(), 3, "the least recently used");
    }

    #[test]
    fn sets_are_powers_of_two_and_spread() {
        assert_eq!(sets_for(0), 1);
        assert_eq!(sets_for(4), 1);
        assert_eq!(sets_for(5), 2);
        assert_eq!(sets_for(131_072), 32_768);
        assert_eq!(sets_for(100_000), 32_768);
        let mut seen = [0u32; 16];
        for i in 0..4096u32 {
            let set = set_of(
                9,
                u32::from_ne_bytes([198, 18, (i >> 8) as u8, i as u8]),
                6,
                1023,
            );
            assert!(set <= 1023);
            seen[(set / 64) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (150..370).contains(&n)), "{seen:?}");
        assert_ne!(
            set_of(1, 5, 6, u32::MAX),
            set_of(2, 5, 6, u32::MAX),
            "seeded"
        );
    }
}
