//! The sweeper: expired connections, unconfirmed flows and sessions
//! deleted in batches, off the controller; what is live, per backend.

use std::{
    collections::HashMap as StdHashMap,
    time::{Duration, Instant},
};

use lb_common::{
    conn::conn_flags,
    conn6::{ClientKey6, Conn6, FlowKey6, HalfOpen6, SessionKey6},
    is_expired, map_names as names, Conn, FlowKey, Session, SessionKey, Settings,
};
use serde::{Deserialize, Serialize};

use super::{
    batch::{delete_where, dup_fd},
    clock::now_ns,
    error::{map_err, Result},
    fixed::{array_fd, handshakes, pendings, sets},
    tables::{nanos, Tables},
};
use crate::model::services::Services;

impl Tables {
    /// Delete expired connections (both halves together) and sessions.
    ///
    /// # Errors
    /// When the clock or the settings cannot be read.
    pub fn sweep(&mut self, services: &Services) -> Result<SweepReport> {
        self.sweeper(services, StdHashMap::new())?.run()
    }

    /// A [`Sweeper`] over these tables: it holds its own references to the
    /// two tables and what it needs of the model, so it runs without the
    /// controller (the control socket answers while a large sweep runs).
    ///
    /// `share` names the VIP slots whose sessions used since the given
    /// time the sweep hands back for publication (`cluster:`).
    ///
    /// # Errors
    /// When the settings cannot be read or a map reference cannot be had.
    pub fn sweeper(&self, services: &Services, share: StdHashMap<u32, u64>) -> Result<Sweeper> {
        let dup = dup_fd;
        Ok(Sweeper {
            share,
            conns: dup(Self::fd(&self.conns), names::CONNS)?,
            half_open: dup(array_fd(&self.half_open), names::HALF_OPEN)?,
            sessions: dup(Self::fd(&self.sessions), names::SESSIONS)?,
            pending: dup(array_fd(&self.pending), names::PENDING)?,
            conns6: dup(Self::fd(&self.v6.conns), names::CONNS6)?,
            half_open6: dup(Self::fd(&self.v6.half_open), names::HALF_OPEN6)?,
            sessions6: dup(Self::fd(&self.v6.sessions), names::SESSIONS6)?,
            pending6: dup(Self::fd(&self.v6.pending), names::PENDING6)?,
            settings: self.settings.get(&0, 0).map_err(map_err(names::SETTINGS))?,
            liveness: Liveness::new(services),
        })
    }

    /// Live connections and sessions per backend (slot, generation).
    ///
    /// # Errors
    /// When the clock, the settings or a table cannot be read.
    pub fn live(&self, services: &Services) -> Result<StdHashMap<(u32, u32), Live>> {
        let settings = self.settings.get(&0, 0).map_err(map_err(names::SETTINGS))?;
        let now = now_ns()?;
        let liveness = Liveness::new(services);
        let mut live = StdHashMap::new();
        for (_, c) in self
            .conn_entries()?
            .into_iter()
            .chain(self.half_open_entries()?)
        {
            liveness.conn(&c, &settings, now, &mut live);
        }
        for (k, s) in self.session_entries()? {
            liveness.session(k.vip_id, &s, now, &mut live);
        }
        for (_, c) in Self::entries(&self.v6.conns, names::CONNS6)? {
            liveness.conn6(&c, &settings, now, &mut live);
        }
        for (_, h) in Self::entries(&self.v6.half_open, names::HALF_OPEN6)? {
            liveness.conn6(&h.fwd, &settings, now, &mut live);
        }
        for (k, s) in Self::entries(&self.v6.sessions, names::SESSIONS6)? {
            liveness.session(k.vip_id, &s, now, &mut live);
        }
        Ok(live)
    }
}

/// One sweep of the two tables, runnable on its own thread.
pub struct Sweeper {
    /// VIP slot -> sessions used after this time are handed back.
    share: StdHashMap<u32, u64>,
    conns: std::os::fd::OwnedFd,
    half_open: std::os::fd::OwnedFd,
    sessions: std::os::fd::OwnedFd,
    pending: std::os::fd::OwnedFd,
    conns6: std::os::fd::OwnedFd,
    half_open6: std::os::fd::OwnedFd,
    sessions6: std::os::fd::OwnedFd,
    pending6: std::os::fd::OwnedFd,
    settings: Settings,
    liveness: Liveness,
}

/// Live connections and sessions of one backend.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Live {
    pub connections: u64,
    pub sessions: u64,
}

/// Tells live entries from expired ones, counting the live ones per
/// backend (slot, generation).
struct Liveness {
    /// Persistence timeout and session lifetime (ns) per VIP slot.
    persistence: StdHashMap<u32, (u64, u64)>,
}

impl Liveness {
    fn new(services: &Services) -> Self {
        Self {
            persistence: services
                .vips()
                .map(|v| {
                    (
                        v.slot,
                        (
                            nanos(v.spec.persistence_timeout),
                            nanos(v.spec.max_lifetime),
                        ),
                    )
                })
                .collect(),
        }
    }

    /// Whether `c` has expired; a live forward half is counted.
    fn conn(
        &self,
        c: &Conn,
        settings: &Settings,
        now: u64,
        live: &mut StdHashMap<(u32, u32), Live>,
    ) -> bool {
        let expired = c.is_expired(settings, now);
        Self::count_conn(expired, c.flags, (c.backend_id, c.backend_gen), live);
        expired
    }

    /// [`Self::conn`] for an IPv6 entry.
    fn conn6(
        &self,
        c: &Conn6,
        settings: &Settings,
        now: u64,
        live: &mut StdHashMap<(u32, u32), Live>,
    ) -> bool {
        let expired = c.is_expired(settings, now);
        Self::count_conn(expired, c.flags, (c.backend_id, c.backend_gen), live);
        expired
    }

    fn count_conn(
        expired: bool,
        flags: u8,
        backend: (u32, u32),
        live: &mut StdHashMap<(u32, u32), Live>,
    ) {
        if !expired && flags & conn_flags::REPLY == 0 {
            live.entry(backend).or_default().connections += 1;
        }
    }

    /// Whether `s` is idle past its VIP's timeout (the sweeper deletes
    /// those); a live one is counted. A session past its lifetime is not
    /// live but is left in place: the client's long-lived connection would
    /// otherwise recreate it as a new one, and its next connection
    /// replaces it anyway.
    fn session(
        &self,
        vip_id: u32,
        s: &Session,
        now: u64,
        live: &mut StdHashMap<(u32, u32), Live>,
    ) -> bool {
        let (timeout, lifetime) = self.persistence.get(&vip_id).copied().unwrap_or((0, 0));
        if s.is_live(timeout, lifetime, now) {
            live.entry((s.backend_id, s.backend_gen))
                .or_default()
                .sessions += 1;
        }
        is_expired(s.last_seen_ns, timeout, now)
    }
}

impl Sweeper {
    /// Delete expired connections (both halves together) and sessions.
    ///
    /// # Errors
    /// When the clock cannot be read or the kernel refuses a batch.
    pub fn run(self) -> Result<SweepReport> {
        use std::os::fd::AsRawFd as _;
        let start = Instant::now();
        let now = now_ns()?;
        let settings = self.settings;
        let mut live = StdHashMap::new();
        let connections =
            sweep_map::<FlowKey, Conn>(self.conns.as_raw_fd(), names::CONNS, |_, c| {
                self.liveness.conn(c, &settings, now, &mut live)
            })?;
        let connections_elapsed = start.elapsed();
        // The fixed tables are read, not swept: the data path reuses
        // expired ways itself.
        let half_open = count(
            handshakes(&sets(self.half_open.as_raw_fd(), names::HALF_OPEN)?),
            |(_, c)| self.liveness.conn(&c, &settings, now, &mut live),
        );
        let mut to_share = Vec::new();
        let sessions = sweep_map::<SessionKey, Session>(
            self.sessions.as_raw_fd(),
            names::SESSIONS,
            |k, s| {
                let expired = self.liveness.session(k.vip_id, s, now, &mut live);
                if !expired
                    && self
                        .share
                        .get(&k.vip_id)
                        .is_some_and(|&t| s.last_seen_ns > t)
                {
                    to_share.push((*k, *s));
                }
                expired
            },
        )?;
        // Pending sessions are not counted as live ones.
        let pending = count(
            pendings(&sets(self.pending.as_raw_fd(), names::PENDING)?),
            |(k, s)| {
                self.liveness
                    .session(k.vip_id, &s, now, &mut StdHashMap::new())
            },
        );
        // The IPv6 tables: hash maps, swept alike (the LRU ones too, so
        // that no expired entry waits for eviction).
        let connections6 =
            sweep_map::<FlowKey6, Conn6>(self.conns6.as_raw_fd(), names::CONNS6, |_, c| {
                self.liveness.conn6(c, &settings, now, &mut live)
            })?;
        let half_open6 = sweep_map::<ClientKey6, HalfOpen6>(
            self.half_open6.as_raw_fd(),
            names::HALF_OPEN6,
            |_, h| self.liveness.conn6(&h.fwd, &settings, now, &mut live),
        )?;
        let sessions6 = sweep_map::<SessionKey6, Session>(
            self.sessions6.as_raw_fd(),
            names::SESSIONS6,
            |k, s| self.liveness.session(k.vip_id, s, now, &mut live),
        )?;
        let pending6 = sweep_map::<SessionKey6, Session>(
            self.pending6.as_raw_fd(),
            names::PENDING6,
            |k, s| {
                self.liveness
                    .session(k.vip_id, s, now, &mut StdHashMap::new())
            },
        )?;
        Ok(SweepReport {
            live,
            to_share,
            connections: connections.plus(connections6),
            half_open: half_open.plus(half_open6),
            sessions: sessions.plus(sessions6),
            pending: pending.plus(pending6),
            connections_elapsed,
            elapsed: start.elapsed(),
        })
    }
}

/// What one sweep did to one table.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Swept {
    /// Entries read (the fixed tables: live ways, one per unconfirmed
    /// flow or pending session).
    pub scanned: u64,
    /// Expired entries deleted (the fixed tables: none; the data path
    /// reuses expired ways).
    pub deleted: u64,
}

/// The live entries of a fixed table (those `expired` does not find
/// expired); nothing is deleted.
fn count<T>(entries: impl Iterator<Item = T>, mut expired: impl FnMut(T) -> bool) -> Swept {
    let mut swept = Swept::default();
    for e in entries {
        swept.scanned += u64::from(!expired(e));
    }
    swept
}

impl Swept {
    /// Both families' tables of one kind together.
    #[must_use]
    pub const fn plus(self, other: Self) -> Self {
        Self {
            scanned: self.scanned + other.scanned,
            deleted: self.deleted + other.deleted,
        }
    }

    /// Entries left in the table.
    #[must_use]
    pub const fn left(&self) -> u64 {
        self.scanned.saturating_sub(self.deleted)
    }
}

/// Read the hash map behind `fd` in batches and delete the entries
/// `expired` selects.
fn sweep_map<K: aya::Pod + Default, V: aya::Pod + Default>(
    fd: std::os::fd::RawFd,
    name: &'static str,
    expired: impl FnMut(&K, &V) -> bool,
) -> Result<Swept> {
    let (scanned, deleted) = delete_where(fd, name, expired)?;
    Ok(Swept { scanned, deleted })
}

#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    /// Live connections and sessions per backend (slot, generation).
    pub live: StdHashMap<(u32, u32), Live>,
    /// Sessions to publish to the other hosts (see [`Tables::sweeper`]).
    pub to_share: Vec<(SessionKey, Session)>,
    pub connections: Swept,
    pub half_open: Swept,
    pub sessions: Swept,
    pub pending: Swept,
    /// Time spent on the connection table.
    pub connections_elapsed: Duration,
    /// Time spent on both tables.
    pub elapsed: Duration,
}
