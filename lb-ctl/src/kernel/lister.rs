//! Listings of the connections and sessions for `lb-ctl conns` and
//! `lb-ctl sessions`: read in batches, off the controller.

use std::{net::Ipv4Addr, time::Duration};

use lb_common::{
    conn::conn_flags, map_names as names, Conn, ConnState, FlowKey, Session, SessionKey, Settings,
};
use serde::{Deserialize, Serialize};

use super::{
    batch::dup_fd,
    clock::now_ns,
    error::{map_err, DataplaneError, Result},
    fixed::{array_fd, handshakes, sets},
    tables::{addr, nanos, Tables},
};
use crate::model::{
    endpoint::{Endpoint, Protocol},
    services::Services,
};

impl Tables {
    /// What a listing needs, to run without the controller: its own
    /// references to the tables, the timeouts and a copy of the model.
    ///
    /// # Errors
    /// When the settings cannot be read or a map reference cannot be had.
    pub fn lister(&self, services: &Services) -> Result<Lister> {
        Ok(Lister {
            conns: dup_fd(Self::fd(&self.conns), names::CONNS)?,
            half_open: dup_fd(array_fd(&self.half_open), names::HALF_OPEN)?,
            sessions: dup_fd(Self::fd(&self.sessions), names::SESSIONS)?,
            settings: self.settings.get(&0, 0).map_err(map_err(names::SETTINGS))?,
            services: services.clone(),
        })
    }
}

/// Listings of the connections and sessions, read in batches and handed
/// on batch by batch (a million entries never sit in memory at once).
pub struct Lister {
    conns: std::os::fd::OwnedFd,
    half_open: std::os::fd::OwnedFd,
    sessions: std::os::fd::OwnedFd,
    settings: Settings,
    services: Services,
}

impl Lister {
    /// The live connections (forward halves; confirmed ones, then those
    /// not confirmed yet), a batch at a time to `each`, which returns
    /// false to stop.
    ///
    /// # Errors
    /// When the clock cannot be read or the kernel refuses a read.
    pub fn connections(&self, each: &mut dyn FnMut(Vec<ConnView>) -> bool) -> Result<()> {
        use std::os::fd::AsRawFd as _;
        let now = now_ns()?;
        let mut go = true;
        crate::kernel::batch::for_each::<FlowKey, Conn>(self.conns.as_raw_fd(), |keys, values| {
            if go {
                go = self.hand_on(
                    keys.iter().zip(values).map(|(k, c)| (*k, *c)),
                    true,
                    now,
                    each,
                );
            }
        })
        .map_err(|source| DataplaneError::Batch {
            name: names::CONNS,
            source,
        })?;
        if go {
            let sets = sets(self.half_open.as_raw_fd(), names::HALF_OPEN)?;
            self.hand_on(handshakes(&sets), false, now, each);
        }
        Ok(())
    }

    /// Hand the live forward halves of `entries` to `each`; false: stop.
    fn hand_on(
        &self,
        entries: impl Iterator<Item = (FlowKey, Conn)>,
        confirmed: bool,
        now: u64,
        each: &mut dyn FnMut(Vec<ConnView>) -> bool,
    ) -> bool {
        let rows: Vec<ConnView> = entries
            .filter(|(_, c)| c.flags & conn_flags::REPLY == 0 && !c.is_expired(&self.settings, now))
            .map(|(k, c)| self.conn_view(&k, &c, confirmed, now))
            .collect();
        rows.is_empty() || each(rows)
    }

    fn conn_view(&self, k: &FlowKey, c: &Conn, confirmed: bool, now: u64) -> ConnView {
        ConnView {
            confirmed,
            client: Endpoint {
                addr: addr(k.src_addr).into(),
                port: u16::from_be(k.src_port),
            },
            vip: Endpoint {
                addr: addr(k.dst_addr).into(),
                port: u16::from_be(k.dst_port),
            },
            vip_name: self
                .services
                .vip_by_slot(c.vip_id)
                .and_then(|v| v.spec.name.clone()),
            backend: Endpoint {
                addr: addr(c.nat_addr).into(),
                port: u16::from_be(c.nat_port),
            },
            protocol: Protocol::from_number(k.proto).unwrap_or_default(),
            state: ConnState::name(c.state).to_string(),
            idle: Duration::from_nanos(now.saturating_sub(c.last_seen_ns)),
            expires_in: Duration::from_nanos(
                (c.last_seen_ns + self.settings.timeout_ns(c.state)).saturating_sub(now),
            ),
        }
    }

    /// The live sessions, a batch at a time to `each`, which returns false
    /// to stop.
    ///
    /// # Errors
    /// When the clock cannot be read or the kernel refuses a read.
    pub fn sessions(&self, each: &mut dyn FnMut(Vec<SessionView>) -> bool) -> Result<()> {
        use std::os::fd::AsRawFd as _;
        let now = now_ns()?;
        let mut go = true;
        crate::kernel::batch::for_each::<SessionKey, Session>(
            self.sessions.as_raw_fd(),
            |keys, values| {
                if !go {
                    return;
                }
                let rows: Vec<SessionView> = keys
                    .iter()
                    .zip(values)
                    .filter_map(|(k, s)| self.session_view(k, s, now))
                    .collect();
                if !rows.is_empty() {
                    go = each(rows);
                }
            },
        )
        .map_err(|source| DataplaneError::Batch {
            name: names::SESSIONS,
            source,
        })
    }

    fn session_view(&self, k: &SessionKey, s: &Session, now: u64) -> Option<SessionView> {
        let v = self.services.vip_by_slot(k.vip_id)?;
        let timeout = nanos(v.spec.persistence_timeout);
        if !s.is_live(timeout, nanos(v.spec.max_lifetime), now) {
            return None;
        }
        let backend = v
            .backends
            .iter()
            .find(|b| b.slot == s.backend_id && b.gen == s.backend_gen);
        Some(SessionView {
            client: addr(k.client),
            netmask: v.spec.persistence_netmask,
            vip: v.spec.id.endpoint,
            protocol: v.spec.id.protocol,
            backend: backend.map(|b| b.endpoint),
            time_left: Duration::from_nanos((s.last_seen_ns + timeout).saturating_sub(now)),
            age: Duration::from_nanos(now.saturating_sub(s.created_ns)),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnView {
    /// In the connection table; else an unconfirmed flow (TCP handshake in
    /// progress, UDP not yet answered and continued).
    #[serde(default)]
    pub confirmed: bool,
    pub client: Endpoint,
    pub vip: Endpoint,
    pub vip_name: Option<String>,
    pub backend: Endpoint,
    pub protocol: Protocol,
    pub state: String,
    pub idle: Duration,
    pub expires_in: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionView {
    pub client: Ipv4Addr,
    pub netmask: u8,
    pub vip: Endpoint,
    pub protocol: Protocol,
    /// `None` when the backend was removed (the client moves on its next
    /// connection).
    pub backend: Option<Endpoint>,
    pub time_left: Duration,
    /// Since the client was pinned to this backend.
    #[serde(default)]
    pub age: Duration,
}
