//! Pending sessions (`PENDING`): the backend chosen for a client whose
//! first connection is not confirmed yet, in sets of four ways
//! (`lb_common::pending`, `lb_common::sets`), so that the client's parallel first
//! connections go to one backend without an insert into a locked table.

use lb_common::{
    pending::{pending_set, Pending, PendingSet},
    sets::WAYS,
    Session, SessionKey, Settings,
};

use crate::maps::PENDING;

#[inline(always)]
fn set(settings: &Settings, key: &SessionKey) -> Option<&'static mut PendingSet> {
    let set = PENDING.get_ptr_mut(pending_set(settings, key))?;
    // SAFETY: a map value pointer stays valid for the rest of the program.
    Some(unsafe { &mut *set })
}

/// Read the tag line of `key`'s set, for nothing but to have it in the
/// cache by the time [`get`] needs it.
#[inline(always)]
pub fn touch(settings: &Settings, key: &SessionKey) {
    if let Some(set) = set(settings, key) {
        // SAFETY: a map value, read once.
        let _ = unsafe { core::ptr::read_volatile(&set.tags[0].last_seen_ns) };
    }
}

/// A pending session found: a copy of it, and where its time is kept.
pub struct Found {
    pub session: Session,
    stamp: *mut u64,
}

impl Found {
    /// The client used it again at `now`.
    #[inline(always)]
    pub fn renew(&self, now: u64) {
        // SAFETY: a map value (the way's tag) stays valid for the rest of
        // the program.
        unsafe { *self.stamp = now };
    }
}

/// The pending session of `key` (whether it is still live is the
/// caller's to judge, with the VIP's timeouts): its set's tags are read
/// first (one cache line), a matching way's body only then.
#[inline(always)]
pub fn get(settings: &Settings, key: &SessionKey) -> Option<Found> {
    let set = set(settings, key)?;
    let i = set.find(key)?;
    let session = set.get(i).session;
    let stamp = &mut set.tags.get_mut(i)?.last_seen_ns as *mut u64;
    Some(Found { session, stamp })
}

/// Record the pending session of `key` in a way of its set: the way it
/// already has, a free one, else the set's least recently used (as the
/// least recently used entry of a full LRU table would go).
#[inline(always)]
pub fn put(settings: &Settings, key: &SessionKey, session: &Session) {
    let Some(set) = set(settings, key) else {
        return;
    };
    let i = set.find(key).unwrap_or_else(|| set.victim());
    if i < WAYS {
        set.put(i, &Pending::new(key, session));
    }
}
