//! Which table a packet's flow is in. One lookup per packet by its own
//! tuple in the connection table ([`conns`], `CONNS`) finds either half
//! of a confirmed connection; a flow not confirmed yet (TCP half-open, UDP
//! unanswered) lives in the half-open table ([`handshake`], `HALF_OPEN`)
//! until the client confirms it after the backend's answer, and is then
//! moved to `CONNS`.

use lb_common::{
    conn::tcp_flags::{ACK, SYN},
    needs_refresh, Conn, ConnState, FlowKey, Settings,
};

use crate::{conns, flow::Flow, handshake, parse::Packet};

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
    let Some(settings) = conns::settings() else {
        return Ok(None);
    };
    let pure_syn = pkt.is_tcp && pkt.tcp_flags & (SYN | ACK) == SYN;
    let found = if pure_syn {
        None
    } else {
        conns::live(&pkt.key, settings, now)
    };
    if let Some(entry) = found {
        // SAFETY: a map value pointer stays valid for the rest of the program.
        let c = unsafe { &*entry };
        if (needs_refresh(c.last_seen_ns, now) || c.state == ConnState::TCP_CLOSING)
            && superseded(pkt, c, settings, now)
        {
            return handshake::lookup(pkt, to_vip, settings, now);
        }
        return Ok(Some(conns::track(pkt, entry, now)));
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
    let settings = conns::settings()?;
    conns::live(key, settings, now)
        // SAFETY: a map value pointer, copied out at once.
        .map(|entry| unsafe { *entry })
        .or_else(|| handshake::peek(key, settings, now))
}
