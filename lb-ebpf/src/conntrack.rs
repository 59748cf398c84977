//! The connection tables. One lookup per packet by its own tuple in `CONNS`
//! finds either half of a confirmed connection; a flow not confirmed yet
//! (TCP half-open, UDP unanswered) lives in `HALF_OPEN` until the client
//! confirms it after the backend's answer, and is then moved to `CONNS`.
//! State changes and refreshes (at most once a second) are written in
//! place through the looked-up pointer, and mirrored to the other half and
//! to the client's session.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_coarse_ns,
    maps::{HashMap, LruHashMap},
};
use lb_common::{
    answers, confirms, conn::conn_flags, needs_refresh, tcp_next_state, Conn, FlowKey, Reason,
    Settings,
};

use crate::{
    maps::{CONNS, HALF_OPEN, SETTINGS},
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

/// The two flow tables, for code that works on either.
pub trait FlowTable {
    fn entry(&self, key: &FlowKey) -> Option<*mut Conn>;
    fn put(&self, key: &FlowKey, c: &Conn) -> Result<(), i32>;
    fn drop_entry(&self, key: &FlowKey);
}

/// Both map types have the same three calls.
macro_rules! flow_table {
    ($map:ident) => {
        impl FlowTable for $map<FlowKey, Conn> {
            #[inline(always)]
            fn entry(&self, key: &FlowKey) -> Option<*mut Conn> {
                self.get_ptr_mut(key)
            }
            #[inline(always)]
            fn put(&self, key: &FlowKey, c: &Conn) -> Result<(), i32> {
                self.insert(key, c, 0)
            }
            #[inline(always)]
            fn drop_entry(&self, key: &FlowKey) {
                let _ = self.remove(key);
            }
        }
    };
}
flow_table!(HashMap);
flow_table!(LruHashMap);

/// The live entry of this packet, if any, after recording the packet in
/// it: a confirmed connection, or an unconfirmed flow (which this packet
/// may confirm). An expired entry counts as absent. `Err` drops the packet.
#[inline(always)]
pub fn lookup(pkt: &Packet, now: u64) -> Result<Option<Flow>, u32> {
    let Some(settings) = settings() else {
        return Ok(None);
    };
    if let Some(entry) = CONNS.get_ptr_mut(&pkt.key) {
        // SAFETY: a map value pointer stays valid for the rest of the program.
        let c = unsafe { &mut *entry };
        if !c.is_expired(settings, now) {
            let state = next_state(pkt, c.state);
            if state != c.state || needs_refresh(c.last_seen_ns, now) {
                refresh(&CONNS, c, &pkt.key, state, now);
                if !c.is_reply() && c.flags & conn_flags::SESSION != 0 {
                    session::keep_session(c, now);
                }
            }
            return Ok(Some(flow(c, entry)));
        }
    }
    let Some(entry) = HALF_OPEN.get_ptr_mut(&pkt.key) else {
        return Ok(None);
    };
    // SAFETY: as above.
    let c = unsafe { &mut *entry };
    if c.is_expired(settings, now) {
        return Ok(None);
    }
    let state = next_state(pkt, c.state);
    if c.is_reply() {
        if answers(pkt.is_tcp, pkt.tcp_flags) {
            if let Some(twin) = HALF_OPEN.get_ptr_mut(&c.twin_key(&pkt.key)) {
                // SAFETY: as above.
                unsafe { (*twin).flags |= conn_flags::ANSWERED };
            }
        }
    } else if confirms(c, pkt.is_tcp, pkt.tcp_flags) {
        return confirm(pkt, c, state, now).map(Some);
    }
    if state != c.state || needs_refresh(c.last_seen_ns, now) {
        refresh(&HALF_OPEN, c, &pkt.key, state, now);
    }
    Ok(Some(flow(c, entry)))
}

/// A copy of the live entry of `key` in either flow table, without
/// touching it: no state change, no refresh (ICMP errors must neither keep
/// entries alive nor create them).
#[inline(always)]
pub fn peek(key: &FlowKey, now: u64) -> Option<Conn> {
    let settings = settings()?;
    // SAFETY: copied out at once.
    let live = |c: Option<&Conn>| c.copied().filter(|c| !c.is_expired(settings, now));
    live(unsafe { CONNS.get(key) }).or_else(|| live(unsafe { HALF_OPEN.get(key) }))
}

#[inline(always)]
fn next_state(pkt: &Packet, state: u8) -> u8 {
    if pkt.is_tcp {
        tcp_next_state(state, pkt.tcp_flags)
    } else {
        state
    }
}

#[inline(always)]
fn flow(c: &Conn, entry: *mut Conn) -> Flow {
    Flow {
        reply: c.is_reply(),
        nat_addr: c.nat_addr,
        nat_port: c.nat_port,
        vip_id: c.vip_id,
        backend_id: c.backend_id,
        new: false,
        dsr: c.flags & conn_flags::DSR != 0,
        conn: entry,
    }
}

/// Record a state change or a refresh in `c` and its other half, and look
/// the next hop up again on this packet.
#[inline(always)]
fn refresh<T: FlowTable>(table: &T, c: &mut Conn, key: &FlowKey, state: u8, now: u64) {
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
    if let Some(twin) = table.entry(&c.twin_key(key)) {
        // SAFETY: a map value pointer stays valid for the rest of the program.
        let twin = unsafe { &mut *twin };
        twin.state = state;
        twin.next_hop.ifindex = 0;
        twin.last_seen_ns = now;
    }
}

/// Move a flow the client has just confirmed from `HALF_OPEN` to `CONNS`
/// and record the client's session. When the connection table is full the
/// flow is dropped (it never reached the table established connections
/// live in).
#[inline(always)]
fn confirm(pkt: &Packet, c: &Conn, state: u8, now: u64) -> Result<Flow, u32> {
    let fwd = Conn {
        last_seen_ns: now,
        state,
        flags: c.flags & !conn_flags::ANSWERED,
        next_hop: lb_common::NextHop::default(),
        ..*c
    };
    let twin = c.twin_key(&pkt.key);
    let recorded = record(&CONNS, &pkt.key, &fwd, pkt.key.dst_addr, pkt.key.dst_port);
    HALF_OPEN.drop_entry(&pkt.key);
    HALF_OPEN.drop_entry(&twin);
    recorded.map_err(|()| Reason::DROP_CONN_TABLE_FULL)?;
    stats::reason(Reason::CONFIRMED);
    if fwd.flags & conn_flags::SESSION != 0 {
        session::confirm_session(&fwd, now);
    }
    Ok(Flow {
        reply: false,
        nat_addr: fwd.nat_addr,
        nat_port: fwd.nat_port,
        vip_id: fwd.vip_id,
        backend_id: fwd.backend_id,
        new: false,
        dsr: fwd.flags & conn_flags::DSR != 0,
        conn: core::ptr::null_mut(),
    })
}

/// Record both halves of a connection in `table`; on failure none is kept.
#[inline(always)]
pub fn record<T: FlowTable>(
    table: &T,
    key: &FlowKey,
    fwd: &Conn,
    vip_addr: u32,
    vip_port: u16,
) -> Result<(), ()> {
    table.put(key, fwd).map_err(|_| ())?;
    if fwd.flags & conn_flags::DSR != 0 {
        return Ok(()); // the backend answers the client directly
    }
    let reply = Conn {
        nat_addr: vip_addr,
        nat_port: vip_port,
        flags: fwd.flags | conn_flags::REPLY,
        ..*fwd
    };
    if table.put(&fwd.twin_key(key), &reply).is_err() {
        table.drop_entry(key);
        return Err(());
    }
    Ok(())
}
