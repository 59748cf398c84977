//! The connection table: one lookup per packet by its own tuple finds either
//! half of an established connection. State changes and refreshes (at most
//! once a second) are written in place through the looked-up pointer, and
//! mirrored to the other half and to the client's session.

use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use lb_common::{conn::conn_flags, needs_refresh, tcp_next_state, Conn, FlowKey, Settings};

use crate::{
    maps::{CONNS, SETTINGS},
    parse::Packet,
    select, Flow,
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

/// The live connection-table entry of this packet, if any, after recording
/// the packet in it. An expired entry counts as absent.
#[inline(always)]
pub fn lookup(pkt: &Packet, now: u64) -> Option<Flow> {
    let entry = CONNS.get_ptr_mut(&pkt.key)?;
    // SAFETY: a map value pointer stays valid for the rest of the program.
    let c = unsafe { &mut *entry };
    if c.is_expired(settings()?, now) {
        return None;
    }
    let state = if pkt.is_tcp {
        tcp_next_state(c.state, pkt.tcp_flags)
    } else {
        c.state
    };
    if state != c.state || needs_refresh(c.last_seen_ns, now) {
        c.state = state;
        c.last_seen_ns = now;
        // Look the next hop up again on this packet.
        c.next_hop.ifindex = 0;
        touch_twin(c, &pkt.key, state, now);
        if !c.is_reply() && c.flags & conn_flags::SESSION != 0 {
            select::keep_session(c, now);
        }
    }
    Some(Flow {
        reply: c.is_reply(),
        nat_addr: c.nat_addr,
        nat_port: c.nat_port,
        vip_id: c.vip_id,
        backend_id: c.backend_id,
        new: false,
        conn: entry,
    })
}

/// Keep the other half of the connection as fresh as this one, so a flow
/// that is busy in one direction only stays alive in both.
#[inline(always)]
fn touch_twin(c: &Conn, key: &FlowKey, state: u8, now: u64) {
    if let Some(twin) = CONNS.get_ptr_mut(&c.twin_key(key)) {
        // SAFETY: a map value pointer stays valid for the rest of the program.
        let twin = unsafe { &mut *twin };
        twin.state = state;
        // Its refresh happens here too, so its next hop is looked up again
        // as well: otherwise a half kept fresh only by the other half would
        // keep its cached next hop for ever.
        twin.next_hop.ifindex = 0;
        twin.last_seen_ns = now;
    }
}

/// Record both halves of a new connection; on failure none is kept.
#[inline(always)]
pub fn record(key: &FlowKey, fwd: &Conn, vip_addr: u32, vip_port: u16) -> Result<(), ()> {
    CONNS.insert(key, fwd, 0).map_err(|_| ())?;
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
