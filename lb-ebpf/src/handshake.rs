//! Unconfirmed flows (`HALF_OPEN`): one way of a set per flow, found by
//! the client's packets (forward) and by the backend's answers (reply)
//! alike, since both carry the client's address and port
//! (`lb_common::handshake`). The client's confirmation moves the flow to
//! `CONNS` and frees its way.

use lb_common::{
    answers, confirms,
    handshake::{handshake_set, Handshake, HandshakeSet},
    needs_refresh,
    sets::WAYS,
    Conn, FlowKey, Reason, Settings,
};

use crate::{
    conns, filter,
    flow::{Cache, Flow},
    maps::HALF_OPEN,
    parse::Packet,
    stats,
};

/// The set of the flows whose client is `addr`:`port`.
#[inline(always)]
fn set(settings: &Settings, addr: u32, port: u16, proto: u8) -> Option<&'static mut HandshakeSet> {
    let set = HALF_OPEN.get_ptr_mut(handshake_set(settings, addr, port, proto))?;
    // SAFETY: a map value pointer stays valid for the rest of the program.
    Some(unsafe { &mut *set })
}

/// One way of a set.
struct Way {
    set: &'static mut HandshakeSet,
    i: usize,
}

impl Way {
    #[inline(always)]
    fn get(&self) -> Handshake {
        self.set.get(self.i)
    }

    /// Record a packet that moves the flow to `state` at `now`.
    #[inline(always)]
    fn refresh(&mut self, state: u8, now: u64) {
        let t = &mut self.set.tags[self.i];
        if state != t.state || needs_refresh(t.last_seen_ns, now) {
            t.state = state;
            t.last_seen_ns = now;
        }
    }
}

/// The live way of the flow `key` is a packet of: its client's forward
/// packet (`reply` false: the set of its source) or its backend's answer
/// (`reply` true: the set of its destination). The tags (one cache line)
/// first, a matching tag's body only then. A plain loop: LLVM keeps a
/// searching closure's body out of line here, and the call costs more than
/// the search.
#[inline(always)]
fn live_way(settings: &Settings, key: &FlowKey, reply: bool, now: u64) -> Option<Way> {
    let (addr, port) = if reply {
        (key.dst_addr, key.dst_port)
    } else {
        (key.src_addr, key.src_port)
    };
    let set = set(settings, addr, port, key.proto)?;
    let mut i = 0;
    while i < WAYS {
        let matches = if reply {
            set.reply_at(i, key)
        } else {
            set.forward_at(i, key)
        };
        if matches && set.live_at(i, settings, now) {
            break;
        }
        i += 1;
    }
    (i < WAYS).then_some(Way { set, i })
}

/// The unconfirmed flow of this packet, if any, after recording the
/// packet in it; the client's confirmation moves it to `CONNS`. `to_vip`:
/// the address filter says the packet may be a client's (else it is a
/// backend's).
#[inline(always)]
pub fn lookup(
    pkt: &Packet,
    to_vip: bool,
    settings: &Settings,
    now: u64,
) -> Result<Option<Flow>, u32> {
    if to_vip {
        if let Some(mut w) = live_way(settings, &pkt.key, false, now) {
            let h = w.get();
            let state = conns::next_state(pkt, h.state);
            let (_, fwd) = h.forward();
            if confirms(fwd.flags, pkt.is_tcp, pkt.tcp_flags) {
                w.set.tags[w.i].last_seen_ns = 0; // the way is free again
                return conns::confirm(pkt, &fwd, state, now).map(Some);
            }
            w.refresh(state, now);
            return Ok(Some(conns::flow(
                &fwd,
                Cache::backend(fwd.backend_id, fwd.backend_gen, now),
            )));
        }
    }
    if !to_vip || filter::from_backend(&pkt.key) {
        if let Some(mut w) = live_way(settings, &pkt.key, true, now) {
            if answers(pkt.is_tcp, pkt.tcp_flags) {
                w.set.bodies[w.i].flags |= lb_common::conn::conn_flags::ANSWERED;
            }
            let h = w.get();
            w.refresh(conns::next_state(pkt, h.state), now);
            let (_, rep) = h.reply();
            return Ok(Some(conns::flow(&rep, Cache::none())));
        }
    }
    Ok(None)
}

/// Record a new flow (`key` forward, `fwd` its forward half) in its set:
/// in a free or expired way, else in place of the set's least recently
/// used flow (counted).
#[inline(always)]
pub fn record(key: &FlowKey, fwd: &Conn, settings: &Settings, now: u64) -> Result<(), u32> {
    let set =
        set(settings, key.src_addr, key.src_port, key.proto).ok_or(Reason::DROP_CONN_TABLE_FULL)?;
    let (i, evicts) = set.victim(settings, now);
    if i >= WAYS {
        return Err(Reason::DROP_CONN_TABLE_FULL);
    }
    set.put(i, &Handshake::new(key, fwd));
    if evicts {
        stats::reason(Reason::HALF_OPEN_EVICTED);
    }
    Ok(())
}

/// Whether the client of `key` (a forward packet) has a live unconfirmed
/// flow on this tuple that saw a packet at or after `since`, when a
/// connection-table entry saw its last (the coarse clock ticks in
/// milliseconds: a SYN right after that packet may share its tick).
#[inline(always)]
pub fn started_since(key: &FlowKey, settings: &Settings, now: u64, since: u64) -> bool {
    live_way(settings, key, false, now).is_some_and(|w| w.set.tags[w.i].last_seen_ns >= since)
}

/// A copy of the half of an unconfirmed flow that `key` is a packet of,
/// without touching it (for ICMP errors).
#[inline(always)]
pub fn peek(key: &FlowKey, settings: &Settings, now: u64) -> Option<Conn> {
    if let Some(w) = live_way(settings, key, false, now) {
        return Some(w.get().forward().1);
    }
    live_way(settings, key, true, now).map(|w| w.get().reply().1)
}
