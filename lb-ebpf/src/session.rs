//! The client's session, once a connection of it is confirmed: recorded
//! (pinned to the connection's backend), renewed by the connection's
//! refreshes, and announced for the other hosts when the VIP's sessions
//! are shared (`cluster:`).

use lb_common::{conn::conn_flags, Conn, Reason, Session, SessionEvent, SessionKey};

use crate::{
    maps::{SESSIONS, SESSION_EVENTS, SESSION_EVENTS_LOST},
    stats,
};

/// A connection of the client was confirmed: renew the session it came
/// from, or record a new one on its backend.
#[inline(always)]
pub fn confirm_session(c: &Conn, now: u64) {
    if c.flags & conn_flags::FROM_SESSION != 0 {
        keep_session(c, now);
    } else {
        pin(c, now);
    }
}

/// Pin (or re-pin) the client of `c` to its backend, and announce the
/// session when the VIP's sessions are shared.
#[inline(always)]
fn pin(c: &Conn, now: u64) {
    let session = Session {
        last_seen_ns: now,
        backend_id: c.backend_id,
        backend_gen: c.backend_gen,
        created_ns: now,
    };
    let key = SessionKey {
        vip_id: c.vip_id,
        client: c.session_client,
    };
    if SESSIONS.insert(&key, &session, 0).is_err() {
        stats::reason(Reason::SESSION_TABLE_FULL);
        return;
    }
    if c.flags & conn_flags::SHARED != 0 {
        let event = SessionEvent {
            vip_id: c.vip_id,
            backend_id: c.backend_id,
            backend_gen: c.backend_gen,
            family: 4,
            _pad: [0; 3],
            client: [c.session_client, 0, 0, 0],
            created_ns: now,
            last_seen_ns: now,
        };
        // A full ring (the controller is behind) loses the announcement
        // only; counted, so that the controller publishes every live
        // session at its next sweep.
        if SESSION_EVENTS.output::<SessionEvent>(&event, 0).is_err() {
            if let Some(lost) = SESSION_EVENTS_LOST.get_ptr_mut(0) {
                // SAFETY: a per-CPU value, only this CPU writes it.
                unsafe { *lost += 1 };
            }
        }
    }
}

/// Called by a connection's periodic refresh: the client is still talking,
/// so its session stays alive. A session that was swept meanwhile is
/// recreated; one that now points elsewhere is left alone.
#[inline(always)]
pub fn keep_session(c: &Conn, now: u64) {
    let key = SessionKey {
        vip_id: c.vip_id,
        client: c.session_client,
    };
    match SESSIONS.get_ptr_mut(&key) {
        Some(entry) => {
            // SAFETY: a map value pointer stays valid for the rest of the program.
            let s = unsafe { &mut *entry };
            if s.backend_id == c.backend_id && s.backend_gen == c.backend_gen {
                s.last_seen_ns = now;
            }
        }
        None => pin(c, now),
    }
}
