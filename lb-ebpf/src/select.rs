//! Backend selection for a new flow: the client's live session if its backend
//! still serves the VIP, else its pending session (a first connection not
//! confirmed yet), else the VIP's selection table. The controller builds
//! the tables (rr or weighted); this side only indexes them.
//!
//! A session is recorded in `SESSIONS` only when a connection of the client
//! is confirmed (`session::confirm_session`); until then a round-robin
//! choice waits in the fixed `PENDING` ([`pending`]), so spoofed SYNs
//! cannot fill the persistence table. A Maglev VIP's choice for a client
//! is a hash of the client: its parallel first connections agree without
//! any state.

use lb_common::{
    conn::conn_flags, maps::vip_flags, tcp_next_state, BackendInfo, Conn, ConnState, FlowKey,
    NextHop, Reason, Session, SessionKey, Settings, VipInfo, VipKey, RING_SIZE,
};

use crate::{
    conns,
    flow::{Cache, Flow},
    handshake,
    maps::{BACKENDS, CURSORS, MAGLEV, RING, SESSIONS, VIPS},
    parse::Packet,
    pending, stats,
};

#[inline(always)]
pub fn new_flow(pkt: &Packet, now: u64) -> Result<Flow, u32> {
    let vip_key = VipKey {
        addr: pkt.key.dst_addr,
        port: pkt.key.dst_port,
        proto: pkt.key.proto,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    let vip = *unsafe { VIPS.get(&vip_key) }.ok_or(Reason::PASS_NOT_VIP)?;
    if vip.ring_len == 0 {
        return Err(Reason::DROP_NO_BACKEND);
    }
    let settings = conns::settings().ok_or(Reason::PASS_NOT_VIP)?;
    let client = pkt.key.src_addr & vip.client_mask;
    let persistent = vip.persist_timeout_ns != 0;
    let key = SessionKey {
        vip_id: vip.id,
        client,
    };
    if persistent && !stateless(&vip) {
        // Start the pending set's (cold) line on its way now, so that its
        // miss overlaps the session table's lookup instead of following
        // it.
        pending::touch(settings, &key);
    }
    let sticky = if persistent {
        session_backend(settings, &vip, &key, now)
    } else {
        None
    };
    let (backend_id, backend, from_session) = match sticky {
        Some(hit) => hit,
        None => {
            let picked = if vip.maglev != 0 {
                pick_maglev(&vip, &pkt.key, client, persistent)
            } else if persistent && vip.flags & vip_flags::HASH_FIRST != 0 {
                pick_hashed(&vip, client)
            } else {
                pick(&vip)
            }
            .ok_or(Reason::DROP_NO_BACKEND)?;
            if persistent && !stateless(&vip) {
                let session = Session {
                    last_seen_ns: now,
                    backend_id: picked.0,
                    backend_gen: picked.1.gen,
                    created_ns: now,
                };
                pending::put(settings, &key, &session);
            }
            (picked.0, picked.1, false)
        }
    };
    let fwd = Conn {
        last_seen_ns: now,
        nat_addr: backend.addr,
        nat_port: backend.port,
        state: if pkt.is_tcp {
            tcp_next_state(ConnState::NONE, pkt.tcp_flags)
        } else {
            ConnState::UDP
        },
        flags: match (persistent, from_session) {
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
        },
        backend_id,
        vip_id: vip.id,
        session_client: client,
        backend_gen: backend.gen,
        next_hop: NextHop::default(),
    };
    handshake::record(&pkt.key, &fwd, settings, now)?;
    stats::reason(Reason::NEW_CONN);
    Ok(Flow {
        reply: false,
        nat_addr: backend.addr,
        nat_port: backend.port,
        vip_id: vip.id,
        backend_id,
        new: true,
        dsr: fwd.flags & conn_flags::DSR != 0,
        hop: Cache::backend(backend_id, backend.gen, now),
    })
}

/// The backend of the client's live session, else of its pending one
/// (round robin: a Maglev VIP's choice for a client needs none), if it
/// still serves the VIP.
#[inline(always)]
fn session_backend(
    settings: &Settings,
    vip: &VipInfo,
    key: &SessionKey,
    now: u64,
) -> Option<(u32, BackendInfo, bool)> {
    if let Some((id, b)) = live_backend(SESSIONS.get_ptr_mut(key), vip, now) {
        stats::reason(Reason::SESSION_HIT);
        return Some((id, b, true));
    }
    if stateless(vip) {
        return None;
    }
    let found = pending::get(settings, key)?;
    let b = serving(&found.session, vip, now)?;
    found.renew(now);
    stats::reason(Reason::PENDING_HIT);
    Some((found.session.backend_id, b, false))
}

/// The backend of `entry` if the session is live and its backend still
/// serves the VIP; the session is refreshed then.
#[inline(always)]
fn live_backend(
    entry: Option<*mut Session>,
    vip: &VipInfo,
    now: u64,
) -> Option<(u32, BackendInfo)> {
    // SAFETY: a map value pointer stays valid for the rest of the program.
    let s = unsafe { &mut *entry? };
    let backend = serving(s, vip, now)?;
    s.last_seen_ns = now;
    Some((s.backend_id, backend))
}

/// The backend of session `s` if the session is live and its backend
/// still serves the VIP.
#[inline(always)]
pub fn serving(s: &Session, vip: &VipInfo, now: u64) -> Option<BackendInfo> {
    if !s.is_live(vip.persist_timeout_ns, vip.max_lifetime_ns, now) {
        return None;
    }
    let backend = *BACKENDS.get(s.backend_id)?;
    backend.serves(vip.id, s.backend_gen).then_some(backend)
}

/// The backend a mid-flow packet of `key` (client to a `forwarding: dsr`
/// VIP) would go to, found without recording or refreshing anything: the
/// client's live or pending session, else the VIP's hashed choice (Maglev, or
/// weighted with persistence). `None`
/// when `key` is not to a DSR VIP, or when only a round-robin turn could
/// choose (which would be a guess). For ICMP errors about DSR flows the
/// connection table does not hold.
#[inline(always)]
pub fn dsr_backend(key: &FlowKey, now: u64) -> Option<BackendInfo> {
    let vip_key = VipKey {
        addr: key.dst_addr,
        port: key.dst_port,
        proto: key.proto,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    let vip = *unsafe { VIPS.get(&vip_key) }?;
    if vip.flags & vip_flags::DSR == 0 {
        return None;
    }
    let client = key.src_addr & vip.client_mask;
    let persistent = vip.persist_timeout_ns != 0;
    if persistent {
        let skey = SessionKey {
            vip_id: vip.id,
            client,
        };
        // SAFETY: map values, only read here.
        let live = |s: Option<&Session>| s.and_then(|s| serving(s, &vip, now));
        let pending = || {
            let settings = conns::settings()?;
            let found = pending::get(settings, &skey)?;
            serving(&found.session, &vip, now)
        };
        // SAFETY: as above.
        if let Some(b) = live(unsafe { SESSIONS.get(&skey) }).or_else(pending) {
            return Some(b);
        }
    }
    if vip.ring_len == 0 {
        return None;
    }
    if vip.maglev != 0 {
        return pick_maglev(&vip, key, client, persistent).map(|(_, b)| b);
    }
    if persistent && vip.flags & vip_flags::HASH_FIRST != 0 {
        return pick_hashed(&vip, client).map(|(_, b)| b);
    }
    None
}

/// Whether the VIP's choice for a new client is a hash of the client
/// (Maglev, or weighted with `HASH_FIRST`): its parallel first connections
/// agree without a pending session.
#[inline(always)]
pub fn stateless(vip: &VipInfo) -> bool {
    vip.maglev != 0 || vip.flags & vip_flags::HASH_FIRST != 0
}

/// The slot of the VIP's selection table for `client`.
#[inline(always)]
pub fn pick_hashed(vip: &VipInfo, client: u32) -> Option<(u32, BackendInfo)> {
    let slot = vip.id * RING_SIZE + lb_common::ring_slot(vip.id, client, vip.ring_len);
    let id = *RING.get(slot)?;
    Some((id, *BACKENDS.get(id)?))
}

/// The next slot of the VIP's selection table. One cursor per VIP for the
/// whole balancer, advanced with an atomic fetch-and-add, so that new
/// connections take turns across all CPUs.
#[inline(always)]
pub fn pick(vip: &VipInfo) -> Option<(u32, BackendInfo)> {
    let cursor = CURSORS.get_ptr_mut(vip.id)?;
    // SAFETY: a map value pointer is valid, aligned and lives for the rest
    // of the program; every access to it, from any CPU, is this atomic add
    // (BPF_ATOMIC | BPF_FETCH: ISA v3, see scripts/bpf-linker-v3; the BPF
    // target has no `AtomicU32`; LLVM emits the fetch form for SeqCst).
    let pos = unsafe {
        core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::SeqCst }>(
            cursor, 1,
        )
    };
    let slot = vip.id * RING_SIZE + pos % vip.ring_len;
    let id = *RING.get(slot)?;
    Some((id, *BACKENDS.get(id)?))
}

/// The Maglev table's backend for this client (with persistence) or this
/// connection: the same on every host, also for a flow that moved here
/// mid-way.
#[inline(always)]
fn pick_maglev(
    vip: &VipInfo,
    k: &FlowKey,
    client: u32,
    persistent: bool,
) -> Option<(u32, BackendInfo)> {
    if persistent {
        maglev_pick(vip, client, 0, 0, 0)
    } else {
        maglev_pick(
            vip,
            k.src_addr,
            k.dst_addr,
            (u32::from(k.src_port) << 16) | u32::from(k.dst_port),
            k.proto,
        )
    }
}

/// The Maglev table's backend for the hash of (`a`, `b`, `ports`, `proto`)
/// (`lb_common::maglev_slot`).
#[inline(always)]
pub fn maglev_pick(
    vip: &VipInfo,
    a: u32,
    b: u32,
    ports: u32,
    proto: u8,
) -> Option<(u32, BackendInfo)> {
    let slot = lb_common::maglev_slot(vip.id, a, b, ports, proto);
    let id = *MAGLEV.get((vip.maglev - 1) * lb_common::MAGLEV_SIZE + slot)?;
    Some((id, *BACKENDS.get(id)?))
}
