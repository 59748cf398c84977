//! Pending sessions (`PENDING`): the backend chosen for a client whose
//! first connection is not confirmed yet, in sets of four ways
//! (`lb_common::handshake`), so that the client's parallel first
//! connections go to one backend without an insert into a locked table.

use lb_common::{
    handshake::{find, pending_set, victim, Pending, PendingSet},
    Session, SessionKey, Settings,
};

use crate::maps::PENDING;

#[inline(always)]
fn set(settings: &Settings, key: &SessionKey) -> Option<&'static mut PendingSet> {
    let set = PENDING.get_ptr_mut(pending_set(settings, key))?;
    // SAFETY: a map value pointer stays valid for the rest of the program.
    Some(unsafe { &mut *set })
}

/// The pending session of `key` (whether it is still live is the
/// caller's to judge, with the VIP's timeouts).
#[inline(always)]
pub fn get(settings: &Settings, key: &SessionKey) -> Option<*mut Session> {
    let set = set(settings, key)?;
    let i = find(set, |p| p.holds(key))?;
    set.get_mut(i).map(|p| &mut p.session as *mut Session)
}

/// Record the pending session of `key` in a way of its set: the way it
/// already has, a free one, else the set's least recently used (as the
/// least recently used entry of a full LRU table would go).
#[inline(always)]
pub fn put(settings: &Settings, key: &SessionKey, session: &Session) {
    let Some(set) = set(settings, key) else {
        return;
    };
    let i = match find(set, |p| p.holds(key)) {
        Some(i) => i,
        None => victim(set, Pending::is_sealed).0,
    };
    if let Some(way) = set.get_mut(i) {
        *way = Pending::new(key, session);
    }
}
