//! The connection table. One lookup per packet by its own tuple in `CONNS`
//! finds either half of a confirmed connection; a flow not confirmed yet
//! (TCP half-open, UDP unanswered) lives in `HALF_OPEN` ([`handshake`])
//! until the client confirms it after the backend's answer, and is then
//! moved to `CONNS`.
//! State changes and refreshes (at most once a second) are written in
//! place through the looked-up pointer, and mirrored to the other half and
//! to the client's session.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use lb_common::{
    conn::{
        conn_flags,
        tcp_flags::{ACK, SYN},
    },
    needs_refresh, tcp_next_state, Conn, ConnState, FlowKey, Reason, Settings,
};

use crate::{
    forward::Cache,
    handshake,
    maps::{CONNS, SETTINGS},
    parse::Packet,
    session, stats, Flow,
};

/// The monotonic clock the tables are stamped with (CLOCK_MONOTONIC, coarse).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get(0)
}

/// The live entry of this packet, if any, after recording the packet in
/// it: a confirmed connection, or an unconfirmed flow (which this packet
/// may confirm). An expired entry counts as absent. `Err` drops the packet.
///
/// A pure SYN starts a connection: it skips `CONNS` (Katran's shortcut,
/// one cold lookup less per new connection) and goes to the unconfirmed
/// flows. A client that reuses the tuple of an entry still in `CONNS`
/// (closed, or idle since its client went away) thus has its new flow in
/// `HALF_OPEN` while the old entry lives on; the newer flow wins (see
/// [`superseded`]).
#[inline(always)]
pub fn lookup(pkt: &Packet, to_vip: bool, now: u64) -> Result<Option<Flow>, u32> {
    let Some(settings) = settings() else {
        return Ok(None);
    };
    let pure_syn = pkt.is_tcp && pkt.tcp_flags & (SYN | ACK) == SYN;
    if let Some(entry) = if pure_syn {
        None
    } else {
        CONNS.get_ptr_mut(&pkt.key)
    } {
        // SAFETY: a map value pointer stays valid for the rest of the program.
        let c = unsafe { &mut *entry };
        if !c.is_expired(settings, now) {
            let state = next_state(pkt, c.state);
            let due = needs_refresh(c.last_seen_ns, now);
            if due || c.state == ConnState::TCP_CLOSING {
                if superseded(pkt, c, settings, now) {
                    return handshake::lookup(pkt, to_vip, settings, now);
                }
            }
            if state != c.state || due {
                refresh(c, &pkt.key, state, now);
                if !c.is_reply() && c.flags & conn_flags::SESSION != 0 {
                    session::keep_session(c, now);
                }
            }
            return Ok(Some(flow(c, Cache::Conn(entry))));
        }
    }
    handshake::lookup(pkt, to_vip, settings, now)
}

/// Whether the client has started a new flow on the tuple of `c` (a
/// closing entry, or one idle for a refresh interval: a live connection's
/// client does not reuse its tuple) since `c` last saw a packet: its
/// packets then belong to the new flow. Asked only then, so established
/// traffic does not pay for it.
#[inline(always)]
fn superseded(pkt: &Packet, c: &Conn, settings: &Settings, now: u64) -> bool {
    pkt.is_tcp && !c.is_reply() && handshake::started_since(&pkt.key, settings, now, c.last_seen_ns)
}

/// A copy of the live entry of `key` in either flow table, without
/// touching it: no state change, no refresh (ICMP errors must neither keep
/// entries alive nor create them).
#[inline(always)]
pub fn peek(key: &FlowKey, now: u64) -> Option<Conn> {
    let settings = settings()?;
    // SAFETY: copied out at once.
    let live = |c: Option<&Conn>| c.copied().filter(|c| !c.is_expired(settings, now));
    live(unsafe { CONNS.get(key) }).or_else(|| handshake::peek(key, settings, now))
}

#[inline(always)]
pub fn next_state(pkt: &Packet, state: u8) -> u8 {
    if pkt.is_tcp {
        tcp_next_state(state, pkt.tcp_flags)
    } else {
        state
    }
}

#[inline(always)]
pub fn flow(c: &Conn, hop: Cache) -> Flow {
    Flow {
        reply: c.is_reply(),
        nat_addr: c.nat_addr,
        nat_port: c.nat_port,
        vip_id: c.vip_id,
        backend_id: c.backend_id,
        new: false,
        dsr: c.flags & conn_flags::DSR != 0,
        hop,
    }
}

/// Record a state change or a refresh in `c` and its other half, and look
/// the next hop up again on this packet.
#[inline(always)]
fn refresh(c: &mut Conn, key: &FlowKey, state: u8, now: u64) {
    c.state = state;
    c.last_seen_ns = now;
    c.next_hop.ifindex = 0;
    if c.flags & conn_flags::DSR != 0 {
        return; // one direction only: no other half
    }
    // Keep the other half as fresh as this one, so a flow that is busy in
    // one direction only stays alive in both; its next hop is looked up
    // again too, else a half kept fresh only by the other would keep its
    // cached next hop for ever.
    if let Some(twin) = CONNS.get_ptr_mut(&c.twin_key(key)) {
        // SAFETY: a map value pointer stays valid for the rest of the program.
        let twin = unsafe { &mut *twin };
        twin.state = state;
        twin.next_hop.ifindex = 0;
        twin.last_seen_ns = now;
    }
}

/// Record a flow the client has just confirmed (its forward half `c`,
/// taken out of `HALF_OPEN` by the caller) in `CONNS`, and the client's
/// session. When the connection table is full the flow is dropped (it
/// never reached the table established connections live in).
#[inline(always)]
pub fn confirm(pkt: &Packet, c: &Conn, state: u8, now: u64) -> Result<Flow, u32> {
    let fwd = Conn {
        last_seen_ns: now,
        state,
        flags: c.flags & !conn_flags::ANSWERED,
        next_hop: lb_common::NextHop::default(),
        ..*c
    };
    record(&pkt.key, &fwd, pkt.key.dst_addr, pkt.key.dst_port)
        .map_err(|()| Reason::DROP_CONN_TABLE_FULL)?;
    stats::reason(Reason::CONFIRMED);
    if fwd.flags & conn_flags::SESSION != 0 {
        session::confirm_session(&fwd, now);
    }
    Ok(flow(
        &fwd,
        Cache::Backend(fwd.backend_id, fwd.backend_gen, now),
    ))
}

/// Record both halves of a connection in `CONNS`; on failure none is kept.
#[inline(always)]
fn record(key: &FlowKey, fwd: &Conn, vip_addr: u32, vip_port: u16) -> Result<(), ()> {
    CONNS.insert(key, fwd, 0).map_err(|_| ())?;
    if fwd.flags & conn_flags::DSR != 0 {
        return Ok(()); // the backend answers the client directly
    }
    let reply = Conn {
        nat_addr: vip_addr,
        nat_port: vip_port,
        flags: fwd.flags | conn_flags::REPLY,
        ..*fwd
    };
    if CONNS.insert(&fwd.twin_key(key), &reply, 0).is_err() {
        let _ = CONNS.remove(key);
        return Err(());
    }
    Ok(())
}
