//! An IPv6 client's session (`SESSIONS6`), as [`crate::session`] keeps an
//! IPv4 client's: recorded when a connection of it is confirmed, renewed
//! by the connection's refreshes, announced when the VIP's sessions are
//! shared (`cluster:`, family 6).

use lb_common::{
    conn::conn_flags,
    conn6::{Conn6, SessionKey6},
    Reason, Session, SessionEvent,
};

use crate::{
    maps::{SESSIONS6, SESSION_EVENTS, SESSION_EVENTS_LOST},
    stats,
};

/// The session key of `c`, written to `key` (the scratch area's).
#[inline(always)]
fn key<'a>(c: &Conn6, key: &'a mut SessionKey6) -> &'a SessionKey6 {
    key.vip_id = c.vip_id;
    key.client = c.session_client;
    key
}

/// A connection of the client was confirmed: renew the session it came
/// from, or record a new one on its backend.
#[inline(always)]
pub fn confirm_session(c: &Conn6, k: &mut SessionKey6, now: u64) {
    if c.flags & conn_flags::FROM_SESSION != 0 {
        keep_session(c, k, now);
    } else {
        pin(c, k, now);
    }
}

#[inline(always)]
fn pin(c: &Conn6, k: &mut SessionKey6, now: u64) {
    let session = Session {
        last_seen_ns: now,
        backend_id: c.backend_id,
        backend_gen: c.backend_gen,
        created_ns: now,
    };
    if SESSIONS6.insert(key(c, k), &session, 0).is_err() {
        stats::reason(Reason::SESSION_TABLE_FULL);
        return;
    }
    if c.flags & conn_flags::SHARED != 0 {
        let event = SessionEvent {
            vip_id: c.vip_id,
            backend_id: c.backend_id,
            backend_gen: c.backend_gen,
            family: 6,
            _pad: [0; 3],
            client: c.session_client,
            created_ns: now,
            last_seen_ns: now,
        };
        if SESSION_EVENTS.output::<SessionEvent>(&event, 0).is_err() {
            if let Some(lost) = SESSION_EVENTS_LOST.get_ptr_mut(0) {
                // SAFETY: a per-CPU value, only this CPU writes it.
                unsafe { *lost += 1 };
            }
        }
    }
}

/// The client is still talking: its session stays alive (recreated if it
/// was swept; left alone if it now points elsewhere).
#[inline(always)]
pub fn keep_session(c: &Conn6, k: &mut SessionKey6, now: u64) {
    match SESSIONS6.get_ptr_mut(key(c, k)) {
        Some(entry) => {
            // SAFETY: a map value pointer stays valid for the rest of the program.
            let s = unsafe { &mut *entry };
            if s.backend_id == c.backend_id && s.backend_gen == c.backend_gen {
                s.last_seen_ns = now;
            }
        }
        None => pin(c, k, now),
    }
}
