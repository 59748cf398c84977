//! Pending sessions (`PENDING`): the backend chosen for a new client of an
//! `rr` VIP with persistence until one of its connections is confirmed, in
//! a fixed set-associative table of [`crate::sets`].

use crate::{
    sets::{check, free_or_oldest, set_of, WAYS},
    Session, SessionKey, Settings,
};

/// A pending session, whole: one way of `PENDING` (kept there as a
/// [`PendingTag`] and a [`PendingBody`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub key: SessionKey,
    /// `last_seen_ns` 0: a free way.
    pub session: Session,
    /// Seals the key and the choice (see [`crate::sets`]).
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
/// two (line-aligned like [`crate::handshake::HandshakeSet`]).
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
    unsafe impl aya::Pod for super::PendingSet {}
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
