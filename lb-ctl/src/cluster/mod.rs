//! Sticky state shared between balancer hosts (`cluster:`).
//!
//! Every host announces the sessions its data path records and, on a
//! refresh pass, the ones still in use; every host installs the other
//! hosts' sessions into its own persistence table. A client whose packets
//! move to another host (the router rehashed, a host died) keeps its
//! backend there, even after the backend set changed.
//!
//! The store is a Redis stream (`XADD … MAXLEN ~`), read by every host with
//! `XREAD` from the last entry it saw. A stream, not keys with TTLs,
//! because it is a log: a host reads what it missed during an outage from
//! where it stopped, entries arrive in order with one round trip per batch,
//! and its length bounds its memory. Keys with TTLs would give the current
//! state but no way to learn of new ones short of scanning or keyspace
//! notifications, which are lost while a host is disconnected.
//!
//! What travels is addresses, never ids: the VIP (`198.18.0.100:80/tcp`),
//! the client prefix, the backend (`198.18.1.11:80`), and the wall-clock
//! times of creation and last use. Each host translates them to its own
//! ids and its own monotonic clock ([`Directory`]). Expiry stays local: a
//! session is installed only while it is live by the receiving host's own
//! timeout, the newest `last_seen` wins ([`merge`]), and an expired one is
//! never brought back.
//!
//! Here: the pure decisions, tested on the host. [`store`]: the tasks that
//! read the data path's announcements and talk to Redis.

pub mod store;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use lb_common::{Session, SessionEvent, SessionKey};

use crate::model::{
    endpoint::{Endpoint, Protocol, VipId},
    services::{Mode, Services},
};

/// One session as published: what any host needs to install it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The publishing controller (random at each start): a host skips its
    /// own records, whatever node names say.
    pub instance: u64,
    /// The publishing host's name, for logs.
    pub node: String,
    pub vip: VipId,
    /// The client address masked by the VIP's persistence netmask.
    pub client: IpAddr,
    pub backend: Endpoint,
    /// Wall clock (ms since the Unix epoch) of the client's last traffic.
    pub last_seen_ms: u64,
    /// Wall clock (ms since the Unix epoch) when the session began.
    pub created_ms: u64,
    /// Announced by the data path as it was created (else a refresh pass
    /// re-published it): only these measure the publication lag.
    pub new: bool,
}

/// Why a stream entry could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("field {0:?} is missing")]
    Missing(&'static str),
    #[error("field {field:?}: {value:?} is not {what}")]
    Bad {
        field: &'static str,
        value: String,
        what: &'static str,
    },
}

impl Record {
    /// The stream entry's fields.
    #[must_use]
    pub fn fields(&self) -> [(&'static str, String); 8] {
        [
            ("i", format!("{:016x}", self.instance)),
            ("n", self.node.clone()),
            ("v", self.vip.to_string()),
            ("c", self.client.to_string()),
            ("b", self.backend.to_string()),
            ("s", self.last_seen_ms.to_string()),
            ("t", self.created_ms.to_string()),
            ("k", if self.new { "new" } else { "refresh" }.to_string()),
        ]
    }

    /// A record from a stream entry's fields (`get` gives a field's value).
    ///
    /// # Errors
    /// Naming the field that is missing or malformed.
    pub fn parse<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, RecordError> {
        let field = |name: &'static str| get(name).ok_or(RecordError::Missing(name));
        let bad = |field: &'static str, value: &str, what: &'static str| RecordError::Bad {
            field,
            value: value.to_string(),
            what,
        };
        let instance = field("i")?;
        let vip = field("v")?;
        let client = field("c")?;
        let backend = field("b")?;
        let last_seen = field("s")?;
        let created = field("t")?;
        Ok(Self {
            instance: u64::from_str_radix(instance, 16)
                .map_err(|_| bad("i", instance, "an instance id"))?,
            node: field("n")?.to_string(),
            vip: parse_vip(vip).ok_or_else(|| bad("v", vip, "ADDRESS:PORT/PROTOCOL"))?,
            client: client
                .parse()
                .map_err(|_| bad("c", client, "an IP address"))?,
            backend: backend
                .parse()
                .map_err(|_| bad("b", backend, "ADDRESS:PORT"))?,
            last_seen_ms: last_seen
                .parse()
                .map_err(|_| bad("s", last_seen, "milliseconds"))?,
            created_ms: created
                .parse()
                .map_err(|_| bad("t", created, "milliseconds"))?,
            new: get("k") == Some("new"),
        })
    }
}

fn parse_vip(s: &str) -> Option<VipId> {
    let (endpoint, protocol) = s.rsplit_once('/')?;
    let protocol = [Protocol::Tcp, Protocol::Udp]
        .into_iter()
        .find(|p| p.as_str() == protocol)?;
    Some(VipId {
        endpoint: endpoint.parse().ok()?,
        protocol,
    })
}

/// The two clocks at one moment: the data path's monotonic one and the
/// wall clock that hosts share (kept in step by NTP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clocks {
    pub mono_ns: u64,
    pub wall_ms: u64,
}

impl Clocks {
    /// Now.
    ///
    /// # Errors
    /// When the monotonic clock cannot be read.
    pub fn now() -> Result<Self, crate::kernel::error::DataplaneError> {
        let mono_ns = crate::kernel::clock::now_ns()?;
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(Self { mono_ns, wall_ms })
    }

    /// The wall-clock time of monotonic time `mono_ns`.
    #[must_use]
    pub const fn wall_of(&self, mono_ns: u64) -> u64 {
        self.wall_ms
            .saturating_sub(self.mono_ns.saturating_sub(mono_ns) / 1_000_000)
    }

    /// The monotonic time of wall-clock time `wall_ms`; a time ahead of
    /// this host's clock counts as now.
    #[must_use]
    pub const fn mono_of(&self, wall_ms: u64) -> u64 {
        self.mono_ns.saturating_sub(
            self.wall_ms
                .saturating_sub(wall_ms)
                .saturating_mul(1_000_000),
        )
    }
}

/// What to do with a record that arrived for a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Write it: nothing is known here, or it was used more recently.
    Install,
    /// This host's entry was used as recently or later: it stays.
    KeepLocal,
    /// It is not live by this host's timeout or lifetime: never brought
    /// back.
    Expired,
}

/// The newest `last_seen` wins; an expired session is never installed.
/// Whether `incoming` is live is decided on the ages the wall clocks give
/// (a session idle longer than this host has been up is still judged
/// right); a local entry that is no longer live counts as absent.
#[must_use]
pub fn merge(local: Option<&Session>, incoming: &Placement, now_ns: u64) -> Merge {
    let p = incoming;
    if p.idle_ns >= p.timeout_ns || (p.lifetime_ns != 0 && p.age_ns >= p.lifetime_ns) {
        return Merge::Expired;
    }
    match local {
        Some(l)
            if l.is_live(p.timeout_ns, p.lifetime_ns, now_ns)
                && l.last_seen_ns >= p.session.last_seen_ns =>
        {
            Merge::KeepLocal
        }
        _ => Merge::Install,
    }
}

/// A VIP whose sessions are shared, as this host numbers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SharedVip {
    slot: u32,
    timeout_ns: u64,
    lifetime_ns: u64,
    /// Backends that keep sessions: address -> (slot, generation).
    backends: HashMap<Endpoint, (u32, u32)>,
    /// The same, the other way.
    by_id: HashMap<(u32, u32), Endpoint>,
}

/// Translation between this host's ids and the addresses that travel:
/// rebuilt from the model after every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    vips: HashMap<VipId, SharedVip>,
    /// VIP slot -> VIP.
    by_slot: HashMap<u32, VipId>,
}

/// Where a record goes in this host's persistence table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub key: SessionKey,
    /// On this host's ids and clock (a time before this host's boot
    /// becomes 0: such a session lives here up to the timeout after boot).
    pub session: Session,
    pub timeout_ns: u64,
    pub lifetime_ns: u64,
    /// Since its last use and since its creation, by the wall clocks.
    pub idle_ns: u64,
    pub age_ns: u64,
}

/// Why a record has no place here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unplaced {
    /// No such VIP here, or it has no persistence.
    Vip,
    /// The backend is not one of the VIP's here, or it takes no sessions
    /// (down, or drained with re-pinning).
    Backend,
    /// A client address of another family than the VIP's.
    Client,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Directory {
    /// The VIPs of `services` whose sessions are shared: those the data
    /// path serves with persistence.
    #[must_use]
    pub fn new(services: &Services) -> Self {
        let mut d = Self::default();
        for v in services
            .vips()
            .filter(|v| v.spec.mode == Mode::Tcp && !v.spec.persistence_timeout.is_zero())
        {
            d.by_slot.insert(v.slot, v.spec.id);
            d.vips.insert(
                v.spec.id,
                SharedVip {
                    slot: v.slot,
                    timeout_ns: nanos(v.spec.persistence_timeout),
                    lifetime_ns: nanos(v.spec.max_lifetime),
                    backends: v
                        .backends
                        .iter()
                        .filter(|b| b.keeps_sessions())
                        .map(|b| (b.endpoint, (b.slot, b.gen)))
                        .collect(),
                    by_id: v
                        .backends
                        .iter()
                        .filter(|b| b.keeps_sessions())
                        .map(|b| ((b.slot, b.gen), b.endpoint))
                        .collect(),
                },
            );
        }
        d
    }

    /// The record of a session of this host's table, if its VIP is shared
    /// and its backend still one of the VIP's.
    #[must_use]
    pub fn record(
        &self,
        key: &SessionKey,
        s: &Session,
        clocks: &Clocks,
        (instance, node): (u64, &str),
    ) -> Option<Record> {
        let vip = self.by_slot.get(&key.vip_id)?;
        let backend = *self
            .vips
            .get(vip)?
            .by_id
            .get(&(s.backend_id, s.backend_gen))?;
        Some(Record {
            instance,
            node: node.to_string(),
            vip: *vip,
            client: IpAddr::V4(Ipv4Addr::from(key.client.to_ne_bytes())),
            backend,
            last_seen_ms: clocks.wall_of(s.last_seen_ns),
            created_ms: clocks.wall_of(s.created_ns),
            new: false,
        })
    }

    /// The record of a session the data path announced.
    #[must_use]
    pub fn record_of_event(
        &self,
        e: &SessionEvent,
        clocks: &Clocks,
        me: (u64, &str),
    ) -> Option<Record> {
        if e.family != 4 {
            return None;
        }
        let record = self.record(
            &SessionKey {
                vip_id: e.vip_id,
                client: e.client[0],
            },
            &Session {
                last_seen_ns: e.last_seen_ns,
                backend_id: e.backend_id,
                backend_gen: e.backend_gen,
                created_ns: e.created_ns,
            },
            clocks,
            me,
        )?;
        Some(Record {
            new: true,
            ..record
        })
    }

    /// Where `r` goes here, on this host's ids and clock.
    ///
    /// # Errors
    /// Why it has no place here.
    pub fn place(&self, r: &Record, clocks: &Clocks) -> Result<Placement, Unplaced> {
        let vip = self.vips.get(&r.vip).ok_or(Unplaced::Vip)?;
        let &(backend_id, backend_gen) = vip.backends.get(&r.backend).ok_or(Unplaced::Backend)?;
        let IpAddr::V4(client) = r.client else {
            return Err(Unplaced::Client);
        };
        Ok(Placement {
            key: SessionKey {
                vip_id: vip.slot,
                client: u32::from_ne_bytes(client.octets()),
            },
            session: Session {
                last_seen_ns: clocks.mono_of(r.last_seen_ms),
                backend_id,
                backend_gen,
                created_ns: clocks.mono_of(r.created_ms),
            },
            timeout_ns: vip.timeout_ns,
            lifetime_ns: vip.lifetime_ns,
            idle_ns: clocks
                .wall_ms
                .saturating_sub(r.last_seen_ms)
                .saturating_mul(1_000_000),
            age_ns: clocks
                .wall_ms
                .saturating_sub(r.created_ms)
                .saturating_mul(1_000_000),
        })
    }

    /// The persistence timeout of each shared VIP, by slot.
    pub fn timeouts(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.vips.values().map(|v| (v.slot, v.timeout_ns))
    }
}

/// Which sessions the next sweep re-publishes: per shared VIP, those used
/// since the VIP's last pass, once a quarter of its timeout has gone by.
/// The other hosts' copies are then never more than a quarter of the
/// timeout (plus a sweep interval) older than the session, and a client
/// that keeps talking to one host stays alive on all of them.
#[derive(Clone, Debug, Default)]
pub struct Passes {
    /// VIP slot -> monotonic time of its last pass.
    last: HashMap<u32, u64>,
}

impl Passes {
    /// The VIPs due at `now`, each with the time after which a session
    /// counts as used since the last pass (0: every live session).
    pub fn due(&mut self, directory: &Directory, now_ns: u64) -> HashMap<u32, u64> {
        let mut due = HashMap::new();
        for (slot, timeout) in directory.timeouts() {
            let since = self.last.get(&slot).copied();
            if since.is_none_or(|t| now_ns.saturating_sub(t) >= timeout / 4) {
                due.insert(slot, since.unwrap_or(0));
                self.last.insert(slot, now_ns);
            }
        }
        due
    }

    /// Forget every pass: the next sweep publishes every live session (after
    /// the store was unreachable, or at start).
    pub fn reset(&mut self) {
        self.last.clear();
    }
}

#[cfg(test)]
mod tests;
