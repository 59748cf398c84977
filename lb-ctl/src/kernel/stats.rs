//! The data path's counters, summed over the CPUs.

use aya::maps::PerCpuValues;
use lb_common::{map_names as names, Counters, Reason};
use serde::{Deserialize, Serialize};

use super::{
    error::{map_err, Result},
    tables::Tables,
};
use crate::model::{
    endpoint::{Endpoint, VipId},
    services::Services,
};

/// Traffic counters summed over the CPUs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
}

/// The data path's own counters.
#[derive(Clone, Debug, Default)]
pub struct Counted {
    pub vips: Vec<(VipId, Option<String>, Traffic)>,
    pub backends: Vec<(VipId, Endpoint, Traffic)>,
    pub reasons: Vec<(String, u64)>,
    /// ICMP errors translated (by direction) and passed (by reason).
    pub icmp: Vec<(String, u64)>,
}

impl Tables {
    /// One reason counter, summed over the CPUs.
    ///
    /// # Errors
    /// When the map cannot be read.
    pub fn reason_total(&self, reason: u32) -> Result<u64> {
        Ok(self
            .reasons
            .get(&reason, 0)
            .map_err(map_err(names::REASONS))?
            .iter()
            .sum())
    }

    /// Counters summed over the CPUs.
    ///
    /// # Errors
    /// When a map cannot be read.
    pub fn stats(&self, services: &Services) -> Result<Counted> {
        let sum = |values: PerCpuValues<Counters>| {
            values.iter().fold(Traffic::default(), |a, c| Traffic {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
                new_conns: a.new_conns + c.new_conns,
            })
        };
        let mut vips = Vec::new();
        let mut backends = Vec::new();
        for v in services.vips() {
            let c = sum(self
                .vip_stats
                .get(&v.slot, 0)
                .map_err(map_err(names::VIP_STATS))?);
            vips.push((v.spec.id, v.spec.name.clone(), c));
            for b in &v.backends {
                let c = sum(self
                    .backend_stats
                    .get(&b.slot, 0)
                    .map_err(map_err(names::BACKEND_STATS))?);
                backends.push((v.spec.id, b.endpoint, c));
            }
        }
        let mut reasons = Vec::new();
        for (i, name) in Reason::NAMES.iter().enumerate() {
            let values = self
                .reasons
                .get(&(i as u32), 0)
                .map_err(map_err(names::REASONS))?;
            reasons.push(((*name).to_string(), values.iter().sum()));
        }
        let mut icmp = Vec::new();
        for (i, name) in lb_common::IcmpReason::NAMES.iter().enumerate() {
            let values = self
                .icmp_stats
                .get(&(i as u32), 0)
                .map_err(map_err(names::ICMP_STATS))?;
            icmp.push(((*name).to_string(), values.iter().sum()));
        }
        Ok(Counted {
            vips,
            backends,
            reasons,
            icmp,
        })
    }
}
