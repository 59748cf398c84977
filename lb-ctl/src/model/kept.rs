//! What tables kept by an earlier controller say about ids, and how a new
//! model is moved onto them (or onto the ids in use at a reload), so that
//! kept connections and sessions stay valid.

use std::{net::Ipv4Addr, time::Duration};

use lb_common::{MAX_BACKENDS, MAX_VIPS};

use super::{
    endpoint::{Endpoint, VipId},
    sched::Scheduler,
    services::{rebuild, Backend, Forwarding, Mode, ServiceError, Services, Vip, VipSpec},
};

/// A VIP found in the tables an earlier controller left (`--keep-state`,
/// or a controller that died): the data path kept using them meanwhile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptVip {
    pub id: VipId,
    pub slot: u32,
    pub persistence_timeout: Duration,
    pub persistence_netmask: u8,
    pub persistence_netmask6: u8,
    pub max_lifetime: Duration,
    pub forwarding: Forwarding,
}

/// A backend slot found in kept tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptBackend {
    pub slot: u32,
    pub vip_slot: u32,
    pub endpoint: Endpoint,
    pub gen: u32,
    /// Still configured (not retired by a removal).
    pub active: bool,
}

/// Everything the kept tables say about ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub vips: Vec<KeptVip>,
    pub backends: Vec<KeptBackend>,
}

impl Kept {
    fn vip_slot(&self, id: &VipId) -> Option<u32> {
        self.vips.iter().find(|v| v.id == *id).map(|v| v.slot)
    }
}

impl Services {
    /// What this model says about ids, as kept tables would (every slot
    /// ever used, with its last generation).
    #[must_use]
    pub fn as_kept(&self) -> Kept {
        let mut kept = Kept {
            vips: self
                .vips()
                .map(|v| KeptVip {
                    id: v.spec.id,
                    slot: v.slot,
                    persistence_timeout: v.spec.persistence_timeout,
                    persistence_netmask: v.spec.persistence_netmask,
                    persistence_netmask6: v.spec.persistence_netmask6,
                    max_lifetime: v.spec.max_lifetime,
                    forwarding: v.spec.forwarding,
                })
                .collect(),
            backends: Vec::new(),
        };
        for (&slot, &gen) in &self.backend_gens {
            let live = self
                .vips()
                .find_map(|v| v.backends.iter().find(|b| b.slot == slot).map(|b| (v, b)));
            kept.backends.push(match live {
                Some((v, b)) => KeptBackend {
                    slot,
                    vip_slot: v.slot,
                    endpoint: b.endpoint,
                    gen: b.gen,
                    active: true,
                },
                None => KeptBackend {
                    slot,
                    vip_slot: u32::MAX,
                    endpoint: Endpoint {
                        addr: Ipv4Addr::UNSPECIFIED.into(),
                        port: 0,
                    },
                    gen,
                    active: false,
                },
            });
        }
        kept
    }

    /// This model (a reloaded config) moved onto the ids of `current`, the
    /// running one: as after a restart, kept VIPs and backends keep their
    /// ids, and backends that stay keep their health and drain state.
    ///
    /// # Errors
    /// When the ids run out.
    pub fn on_current_ids(&self, current: &Self) -> Result<Self, ServiceError> {
        let mut next = self.on_kept_ids(&current.as_kept())?;
        for v in next.vips.values_mut() {
            let Some(was) = current.vip(&v.spec.id) else {
                continue;
            };
            for b in &mut v.backends {
                if let Some(old) = was.backends.iter().find(|o| o.endpoint == b.endpoint) {
                    b.down = old.down;
                    b.drain = old.drain;
                }
            }
            rebuild(v)?;
        }
        Ok(next)
    }

    /// The model the kept tables describe, as far as they tell: VIPs with
    /// their slots and active backends (weights and selection tables are
    /// not needed to move the tables on from it).
    #[must_use]
    pub fn from_kept(kept: &Kept) -> Self {
        let mut s = Self::default();
        for b in &kept.backends {
            s.backend_gens.insert(b.slot, b.gen);
        }
        for v in &kept.vips {
            let backends = kept
                .backends
                .iter()
                .filter(|b| b.active && b.vip_slot == v.slot)
                .map(|b| Backend::new(b.endpoint, 1, b.slot, b.gen))
                .collect();
            s.vips.insert(
                v.id,
                Vip {
                    spec: VipSpec {
                        name: None,
                        id: v.id,
                        scheduler: Scheduler::Rr,
                        persistence_timeout: v.persistence_timeout,
                        persistence_netmask: v.persistence_netmask,
                        persistence_netmask6: v.persistence_netmask6,
                        max_lifetime: v.max_lifetime,
                        health_check: None,
                        mode: Mode::Tcp,
                        cookie: None,
                        forwarding: v.forwarding,
                        tls: None,
                    },
                    slot: v.slot,
                    backends,
                    table: Vec::new(),
                    maglev_slot: None,
                },
            );
        }
        s
    }

    /// This model with its ids moved onto the kept tables': a VIP keeps the
    /// slot it had, a backend that still serves the same VIP keeps its slot
    /// and generation (so kept sessions and connections stay valid whatever
    /// order the config lists things in), and everything new takes slots
    /// the kept tables do not use, with a generation above the slot's last.
    ///
    /// # Errors
    /// When the ids run out.
    pub fn on_kept_ids(&self, kept: &Kept) -> Result<Self, ServiceError> {
        let mut out = Self::default();
        for b in &kept.backends {
            out.backend_gens.insert(b.slot, b.gen);
        }
        let kept_vip_slots: Vec<u32> = kept.vips.iter().map(|v| v.slot).collect();
        let mut vip_slots: Vec<u32> = Vec::new();
        // New backends take slots no kept active backend holds (its
        // connections may still be draining); kept ones are reused.
        let mut backend_slots: Vec<u32> = kept
            .backends
            .iter()
            .filter(|k| k.active)
            .map(|k| k.slot)
            .collect();
        // First the VIPs that keep their slot, then the others.
        let mut order: Vec<&Vip> = self.vips.values().collect();
        order.sort_by_key(|v| kept.vip_slot(&v.spec.id).is_none());
        for v in order {
            let slot = match kept.vip_slot(&v.spec.id) {
                Some(s) => s,
                None => (0..MAX_VIPS)
                    .find(|s| !vip_slots.contains(s) && !kept_vip_slots.contains(s))
                    .or_else(|| (0..MAX_VIPS).find(|s| !vip_slots.contains(s)))
                    .ok_or(ServiceError::TooManyVips)?,
            };
            vip_slots.push(slot);
            let maglev_slot = out.free_maglev_slot(&v.spec)?;
            let mut nv = Vip {
                spec: v.spec.clone(),
                slot,
                backends: Vec::with_capacity(v.backends.len()),
                table: Vec::new(),
                maglev_slot,
            };
            for b in &v.backends {
                let reuse = kept.backends.iter().find(|k| {
                    k.active
                        && kept.vip_slot(&v.spec.id) == Some(k.vip_slot)
                        && k.endpoint == b.endpoint
                });
                let (slot, gen) = match reuse {
                    Some(k) => (k.slot, k.gen),
                    None => {
                        let slot = (0..MAX_BACKENDS)
                            .find(|s| !backend_slots.contains(s))
                            .ok_or(ServiceError::TooManyBackends)?;
                        backend_slots.push(slot);
                        let gen = out.backend_gens.get(&slot).map_or(1, |g| g.wrapping_add(1));
                        out.backend_gens.insert(slot, gen);
                        (slot, gen)
                    }
                };
                nv.backends.push(Backend {
                    slot,
                    gen,
                    ..b.clone()
                });
            }
            rebuild(&mut nv)?;
            out.vips.insert(v.spec.id, nv);
        }
        Ok(out)
    }
}
