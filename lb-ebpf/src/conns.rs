//! The connection table (`CONNS`): confirmed connections, two entries
//! each (forward and reply), found by each packet's own tuple. State
//! changes and refreshes (at most once a second) are written in place
//! through the looked-up pointer, and mirrored to the other half and to
//! the client's session; a flow the client has just confirmed is recorded
//! here. [`crate::conntrack`] decides which table a packet's flow is in.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use lb_common::{conn::conn_flags, needs_refresh, tcp_next_state, Conn, FlowKey, Reason, Settings};

use crate::{
    flow::{Cache, Flow},
    maps::{CONNS, SETTINGS},
    parse::Packet,
    session, stats,
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

/// The live entry of `key`, if any (an expired one counts as absent).
#[inline(always)]
pub fn live(key: &FlowKey, settings: &Settings, now: u64) -> Option<*mut Conn> {
    let entry = CONNS.get_ptr_mut(key)?;
    // SAFETY: a map value pointer stays valid for the rest of the program.
    (!unsafe { &*entry }.is_expired(settings, now)).then_some(entry)
}

/// Record this packet in its live entry `c` (at `entry`): a state change
/// or a due refresh is written in place, to the other half and to the
/// client's session.
#[inline(always)]
pub fn track(pkt: &Packet, entry: *mut Conn, now: u64) -> Flow {
    // SAFETY: a map value pointer stays valid for the rest of the program.
    let c = unsafe { &mut *entry };
    let state = next_state(pkt, c.state);
    if state != c.state || needs_refresh(c.last_seen_ns, now) {
        refresh(c, &pkt.key, state, now);
        if !c.is_reply() && c.flags & conn_flags::SESSION != 0 {
            session::keep_session(c, now);
        }
    }
    let hop = Cache::conn(core::ptr::addr_of_mut!(c.next_hop));
    flow(c, hop)
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
        Cache::backend(fwd.backend_id, fwd.backend_gen, now),
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
