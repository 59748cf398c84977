//! Backend selection for a new IPv6 flow, as [`crate::select`] for IPv4:
//! the client prefix's live session (`SESSIONS6`), else its pending one
//! (`PENDING6`, round robin), else the VIP's selection table, which IPv6
//! VIPs share with IPv4 ones (`RING`, `MAGLEV`, `BACKENDS`: the same
//! turns, weights and hashes, the client prefix folded into one word).

use lb_common::{
    conn::conn_flags,
    conn6::{client_key, Addr6, SessionKey6, VipKey6},
    ipv6::{fold, masked},
    maps::vip_flags,
    tcp_next_state, BackendInfo, ConnState, NextHop, Reason, Session, VipInfo,
};

use super::{conntrack::Flow6, parse::Packet6, Scratch6};
use crate::{
    flow::{Cache, Flow},
    maps::{BACKEND_ADDRS6, HALF_OPEN6, PENDING6, SESSIONS6, VIPS6},
    select::{maglev_pick, pick, pick_hashed, serving, stateless},
    stats,
};

/// A new flow to an IPv6 VIP (key `s.key`): its backend chosen, the flow
/// recorded in `HALF_OPEN6` (put together in the scratch area).
#[inline(always)]
pub fn new_flow(pkt: &Packet6, s: &mut Scratch6, now: u64) -> Result<Flow6, u32> {
    s.vip = VipKey6 {
        addr: s.key.dst_addr,
        port: s.key.dst_port,
        proto: s.key.proto,
        _pad: 0,
    };
    // SAFETY: a map value, read only.
    let vip6 = unsafe { VIPS6.get(&s.vip) }.ok_or(Reason::PASS_NOT_VIP)?;
    // A copy: the selection divides by `ring_len`, which must be the one
    // checked here.
    let vip: &VipInfo = &{ vip6.info };
    if vip.ring_len == 0 {
        return Err(Reason::DROP_NO_BACKEND);
    }
    let client = masked(s.key.src_addr, vip6.client_mask);
    let persistent = vip.persist_timeout_ns != 0;
    s.session.vip_id = vip.id;
    s.session.client = client;
    let sticky = if persistent {
        session_backend(vip, &s.session, now)
    } else {
        None
    };
    let (backend_id, backend, from_session) = match sticky {
        Some(hit) => hit,
        None => {
            let k = &s.key;
            let picked = if vip.maglev != 0 {
                if persistent {
                    maglev_pick(vip, fold(client), 0, 0, 0)
                } else {
                    maglev_pick(
                        vip,
                        fold(k.src_addr),
                        fold(k.dst_addr),
                        (u32::from(k.src_port) << 16) | u32::from(k.dst_port),
                        k.proto,
                    )
                }
            } else if persistent && vip.flags & vip_flags::HASH_FIRST != 0 {
                pick_hashed(vip, fold(client))
            } else {
                pick(vip)
            }
            .ok_or(Reason::DROP_NO_BACKEND)?;
            if persistent && !stateless(vip) {
                let session = Session {
                    last_seen_ns: now,
                    backend_id: picked.0,
                    backend_gen: picked.1.gen,
                    created_ns: now,
                };
                let _ = PENDING6.insert(&s.session, &session, 0);
            }
            (picked.0, picked.1, false)
        }
    };
    let addr: Addr6 = *BACKEND_ADDRS6
        .get(backend_id)
        .ok_or(Reason::DROP_NO_BACKEND)?;
    let flags = match (persistent, from_session) {
        (false, _) => 0,
        (true, false) => conn_flags::SESSION,
        (true, true) => conn_flags::SESSION | conn_flags::FROM_SESSION,
    } | if vip.flags & vip_flags::DSR != 0 {
        conn_flags::DSR
    } else {
        0
    } | if vip.flags & vip_flags::SHARED != 0 {
        conn_flags::SHARED
    } else {
        0
    };
    let f = &mut s.half.fwd;
    f.last_seen_ns = now;
    f.nat_addr = addr;
    f.nat_port = backend.port;
    f.state = if pkt.is_tcp {
        tcp_next_state(ConnState::NONE, pkt.tcp_flags)
    } else {
        ConnState::UDP
    };
    f.flags = flags;
    f.backend_id = backend_id;
    f.vip_id = vip.id;
    f.backend_gen = backend.gen;
    f.session_client = client;
    f.next_hop = NextHop::default();
    s.half.vip_addr = s.key.dst_addr;
    s.half.vip_port = s.key.dst_port;
    s.half._pad = [0; 6];
    s.client = client_key(&s.key, false);
    HALF_OPEN6
        .insert(&s.client, &s.half, 0)
        .map_err(|_| Reason::DROP_CONN_TABLE_FULL)?;
    stats::reason(Reason::NEW_CONN);
    Ok(Flow {
        reply: false,
        nat_addr: addr,
        nat_port: backend.port,
        vip_id: vip.id,
        backend_id,
        new: true,
        dsr: flags & conn_flags::DSR != 0,
        hop: Cache::backend(backend_id, backend.gen, now),
    })
}

/// The backend of the client's live session, else of its pending one, if
/// it still serves the VIP (the session is renewed then).
#[inline(always)]
fn session_backend(vip: &VipInfo, key: &SessionKey6, now: u64) -> Option<(u32, BackendInfo, bool)> {
    if let Some(entry) = SESSIONS6.get_ptr_mut(key) {
        // SAFETY: a map value pointer stays valid for the rest of the program.
        let s = unsafe { &mut *entry };
        if let Some(b) = serving(s, vip, now) {
            s.last_seen_ns = now;
            stats::reason(Reason::SESSION_HIT);
            return Some((s.backend_id, b, true));
        }
    }
    if stateless(vip) {
        return None;
    }
    // SAFETY: as above.
    let s = unsafe { &mut *PENDING6.get_ptr_mut(key)? };
    let b = serving(s, vip, now)?;
    s.last_seen_ns = now;
    stats::reason(Reason::PENDING_HIT);
    Some((s.backend_id, b, false))
}
