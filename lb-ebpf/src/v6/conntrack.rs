//! Which IPv6 table a packet's flow is in: the connection table (`CONNS6`,
//! two entries per confirmed connection, found by each packet's own
//! tuple), else the unconfirmed flows (`HALF_OPEN6`, an LRU table with one
//! entry per flow, keyed by the client's address and port, which both the
//! client's packets and the backend's answers carry). The rules are
//! IPv4's ([`crate::conntrack`]): a pure SYN skips `CONNS6`; the client's
//! ACK after the backend's SYN-ACK (UDP: its next datagram after the
//! answer) confirms the flow and records its session; a flood of spoofed
//! SYNs churns `HALF_OPEN6` only. Keys are put together in the scratch
//! area ([`Scratch6`]), entries changed in place.

use lb_common::{
    answers, confirms,
    conn::{
        conn_flags,
        tcp_flags::{ACK, SYN},
    },
    conn6::{client_key, Addr6, Conn6, HalfOpen6},
    needs_refresh, tcp_next_state, ConnState, Reason, Settings,
};

use super::{parse::Packet6, session, Scratch6};
use crate::{
    conns, filter,
    flow::{Cache, Flow},
    maps::{CONNS6, HALF_OPEN6},
    stats,
};

pub type Flow6 = Flow<Addr6>;

#[inline(always)]
fn next_state(pkt: &Packet6, state: u8) -> u8 {
    if pkt.is_tcp {
        tcp_next_state(state, pkt.tcp_flags)
    } else {
        state
    }
}

#[inline(always)]
pub fn flow(c: &Conn6, hop: Cache) -> Flow6 {
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

/// The live flow of this packet (key `s.key`), if any, after recording
/// the packet in it.
#[inline(always)]
pub fn lookup(
    pkt: &Packet6,
    s: &mut Scratch6,
    to_vip: bool,
    now: u64,
) -> Result<Option<Flow6>, u32> {
    let Some(settings) = conns::settings() else {
        return Ok(None);
    };
    let pure_syn = pkt.is_tcp && pkt.tcp_flags & (SYN | ACK) == SYN;
    if !pure_syn {
        if let Some(entry) = CONNS6.get_ptr_mut(&s.key) {
            // SAFETY: a map value pointer stays valid for the rest of the program.
            let c = unsafe { &mut *entry };
            if !c.is_expired(settings, now)
                && !((needs_refresh(c.last_seen_ns, now) || c.state == ConnState::TCP_CLOSING)
                    && pkt.is_tcp
                    && !c.is_reply()
                    && started_since(s, settings, now, c.last_seen_ns))
            {
                return Ok(Some(track(pkt, s, c, now)));
            }
        }
    }
    half_open(pkt, s, to_vip, settings, now)
}

/// Record this packet in its live entry `c`: a state change or a due
/// refresh is written in place, to the other half and to the session.
#[inline(always)]
fn track(pkt: &Packet6, s: &mut Scratch6, c: &mut Conn6, now: u64) -> Flow6 {
    let state = next_state(pkt, c.state);
    if state != c.state || needs_refresh(c.last_seen_ns, now) {
        c.state = state;
        c.last_seen_ns = now;
        c.next_hop.ifindex = 0;
        if c.flags & conn_flags::DSR == 0 {
            s.twin = c.twin_key(&s.key);
            if let Some(twin) = CONNS6.get_ptr_mut(&s.twin) {
                // SAFETY: a map value pointer stays valid for the rest of the program.
                let twin = unsafe { &mut *twin };
                twin.state = state;
                twin.next_hop.ifindex = 0;
                twin.last_seen_ns = now;
            }
        }
        if !c.is_reply() && c.flags & conn_flags::SESSION != 0 {
            session::keep_session(c, &mut s.session, now);
        }
    }
    let hop = Cache::conn(core::ptr::addr_of_mut!(c.next_hop));
    flow(c, hop)
}

/// The live unconfirmed flow of the client's end `s.client`, if it is the
/// flow of this packet (`reply`: a backend's answer).
#[inline(always)]
fn half(
    s: &Scratch6,
    settings: &Settings,
    now: u64,
    reply: bool,
) -> Option<&'static mut HalfOpen6> {
    let h = HALF_OPEN6.get_ptr_mut(&s.client)?;
    // SAFETY: a map value pointer stays valid for the rest of the program.
    let h = unsafe { &mut *h };
    let ours = if reply {
        h.is_reply(&s.key)
    } else {
        h.is_forward(&s.key)
    };
    (ours && !h.fwd.is_expired(settings, now)).then_some(h)
}

/// Whether the client of this forward packet has a live unconfirmed flow
/// on its tuple that saw a packet at or after `since`: the newer flow wins
/// over an idle or closing entry of `CONNS6`.
#[inline(always)]
fn started_since(s: &mut Scratch6, settings: &Settings, now: u64, since: u64) -> bool {
    s.client = client_key(&s.key, false);
    half(s, settings, now, false).is_some_and(|h| h.fwd.last_seen_ns >= since)
}

/// Record a packet that moves an unconfirmed flow to `state`.
#[inline(always)]
fn refresh(c: &mut Conn6, state: u8, now: u64) {
    if state != c.state || needs_refresh(c.last_seen_ns, now) {
        c.state = state;
        c.last_seen_ns = now;
    }
}

/// The unconfirmed flow of this packet, if any, after recording the packet
/// in it; the client's confirmation moves it to `CONNS6`.
#[inline(always)]
fn half_open(
    pkt: &Packet6,
    s: &mut Scratch6,
    to_vip: bool,
    settings: &Settings,
    now: u64,
) -> Result<Option<Flow6>, u32> {
    if to_vip {
        s.client = client_key(&s.key, false);
        if let Some(h) = half(s, settings, now, false) {
            let state = next_state(pkt, h.fwd.state);
            if confirms(h.fwd.flags, pkt.is_tcp, pkt.tcp_flags) {
                return confirm(s, h, state, now).map(Some);
            }
            refresh(&mut h.fwd, state, now);
            let hop = Cache::backend(h.fwd.backend_id, h.fwd.backend_gen, now);
            return Ok(Some(flow(&h.fwd, hop)));
        }
    }
    if !to_vip || filter::from_backend6(&s.key) {
        s.client = client_key(&s.key, true);
        if let Some(h) = half(s, settings, now, true) {
            if answers(pkt.is_tcp, pkt.tcp_flags) {
                h.fwd.flags |= conn_flags::ANSWERED;
            }
            let state = next_state(pkt, h.fwd.state);
            refresh(&mut h.fwd, state, now);
            let mut f = flow(&h.fwd, Cache::none());
            f.reply = true;
            f.nat_addr = h.vip_addr;
            f.nat_port = h.vip_port;
            return Ok(Some(f));
        }
    }
    Ok(None)
}

/// Move the flow `h` (of client end `s.client`, key `s.key`), confirmed
/// now in `state`, to `CONNS6` (a DSR flow has its forward half only) and
/// record the client's session; a full table drops the packet and keeps
/// neither half.
#[inline(always)]
fn confirm(s: &mut Scratch6, h: &mut HalfOpen6, state: u8, now: u64) -> Result<Flow6, u32> {
    h.fwd.last_seen_ns = now;
    h.fwd.state = state;
    h.fwd.flags &= !conn_flags::ANSWERED;
    // The reply half, put together in the scratch area.
    s.half.fwd = h.fwd;
    s.half.fwd.nat_addr = h.vip_addr;
    s.half.fwd.nat_port = h.vip_port;
    s.half.fwd.flags |= conn_flags::REPLY;
    s.twin = h.fwd.twin_key(&s.key);
    let result = (|| {
        CONNS6.insert(&s.key, &h.fwd, 0).map_err(|_| ())?;
        if h.fwd.flags & conn_flags::DSR == 0 && CONNS6.insert(&s.twin, &s.half.fwd, 0).is_err() {
            let _ = CONNS6.remove(&s.key);
            return Err(());
        }
        Ok(())
    })();
    let f = flow(
        &h.fwd,
        Cache::backend(h.fwd.backend_id, h.fwd.backend_gen, now),
    );
    if result.is_ok() {
        stats::reason(Reason::CONFIRMED);
        if h.fwd.flags & conn_flags::SESSION != 0 {
            session::confirm_session(&h.fwd, &mut s.session, now);
        }
    }
    let _ = HALF_OPEN6.remove(&s.client);
    result
        .map(|()| f)
        .map_err(|()| Reason::DROP_CONN_TABLE_FULL)
}
