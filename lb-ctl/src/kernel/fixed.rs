//! The fixed tables of the new-flow path (`HALF_OPEN`, `PENDING`: sets
//! of ways, `lb_common::handshake`) seen from the controller: read whole
//! in batches, sized at load, seeded once. The data path reuses expired
//! ways itself, so nothing sweeps them; a VIP's removal clears its ways.

use std::os::fd::RawFd;

use aya::maps::{Array, MapData};
use lb_common::{
    handshake::{Handshake, HandshakeSet},
    map_names as names,
    pending::{Pending, PendingSet},
    sets::{sets_for, WAYS},
    Conn, FlowKey, Session, SessionKey, Settings,
};

use super::{
    error::{map_err, DataplaneError, Result},
    tables::Tables,
};

/// The raw descriptor of an array map.
pub(crate) fn array_fd<V: aya::Pod>(map: &Array<MapData, V>) -> RawFd {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    aya::maps::IterableMap::map(map).fd().as_fd().as_raw_fd()
}

/// Every set of the array behind `fd`, read in batches.
pub(crate) fn sets<V: aya::Pod + Default>(fd: RawFd, name: &'static str) -> Result<Vec<V>> {
    let mut all = Vec::new();
    crate::kernel::batch::for_each::<u32, V>(fd, |_, v| all.extend_from_slice(v))
        .map_err(|source| DataplaneError::Batch { name, source })?;
    Ok(all)
}

/// The forward halves of the unconfirmed flows in `sets` (written whole;
/// expired ones included).
pub(crate) fn handshakes(sets: &[HandshakeSet]) -> impl Iterator<Item = (FlowKey, Conn)> + '_ {
    sets.iter()
        .flat_map(HandshakeSet::ways)
        .filter(Handshake::is_sealed)
        .map(|h| h.forward())
}

/// The pending sessions in `sets` (written whole; expired ones included).
pub(crate) fn pendings(sets: &[PendingSet]) -> impl Iterator<Item = (SessionKey, Session)> + '_ {
    sets.iter()
        .flat_map(PendingSet::ways)
        .filter(Pending::is_sealed)
        .map(|p| (p.key, p.session))
}

/// Entries (ways) of a fixed table asked to hold at least `entries`.
#[must_use]
pub fn capacity(entries: u32) -> u32 {
    sets_for(entries).saturating_mul(WAYS as u32)
}

/// A seed for the sets' hash: random, never 0.
fn fresh_seed() -> u32 {
    let mut b = [0u8; 4];
    // Without the system's randomness the sets still work; only their
    // spread is then guessable.
    let _ = getrandom::fill(&mut b);
    u32::from_ne_bytes(b) | 1
}

impl Tables {
    /// Every written way of the half-open table (expired ones included).
    ///
    /// # Errors
    /// When the kernel refuses the read.
    pub fn half_open_ways(&self) -> Result<Vec<Handshake>> {
        let all = sets::<HandshakeSet>(array_fd(&self.half_open), names::HALF_OPEN)?;
        Ok(all
            .iter()
            .flat_map(HandshakeSet::ways)
            .filter(Handshake::is_sealed)
            .collect())
    }

    /// Every unconfirmed flow, forward half (expired ones included).
    ///
    /// # Errors
    /// When the kernel refuses the read.
    pub fn half_open_entries(&self) -> Result<Vec<(FlowKey, Conn)>> {
        let all = sets::<HandshakeSet>(array_fd(&self.half_open), names::HALF_OPEN)?;
        Ok(handshakes(&all).collect())
    }

    /// The half of an unconfirmed flow that packets with `key` belong to
    /// (forward or reply; expired or not), if a way holds one.
    ///
    /// # Errors
    /// When the kernel refuses the read.
    pub fn half_open_entry(&self, key: &FlowKey) -> Result<Option<Conn>> {
        Ok(self.half_open_ways()?.iter().find_map(|h| {
            if h.is_forward(key) {
                Some(h.forward().1)
            } else {
                h.is_reply(key).then(|| h.reply().1)
            }
        }))
    }

    /// Every pending session (expired ones included).
    ///
    /// # Errors
    /// When the kernel refuses the read.
    pub fn pending_entries(&self) -> Result<Vec<(SessionKey, Session)>> {
        let all = sets::<PendingSet>(array_fd(&self.pending), names::PENDING)?;
        Ok(pendings(&all).collect())
    }

    /// `settings` with the fixed tables' geometry and the seed they were
    /// created with (a new one for new tables).
    pub(crate) fn with_geometry(&self, settings: &Settings) -> Settings {
        let seed = self
            .settings
            .get(&0, 0)
            .ok()
            .map(|s| s.seed)
            .filter(|&s| s != 0)
            .unwrap_or_else(fresh_seed);
        Settings {
            half_open_mask: sets_for(self.max_half_open) - 1,
            pending_mask: sets_for(self.max_half_open) - 1,
            seed,
            _pad: 0,
            ..*settings
        }
    }

    /// Free the ways of the VIPs `gone` selects. A way the data path
    /// writes at the same instant may be lost with them: one handshake,
    /// which the client retransmits.
    ///
    /// # Errors
    /// When the kernel refuses a read or a write.
    pub fn clear_ways(&mut self, gone: &impl Fn(u32) -> bool) -> Result<()> {
        let all = sets::<HandshakeSet>(array_fd(&self.half_open), names::HALF_OPEN)?;
        for (i, set) in all.iter().enumerate() {
            if set.ways().any(|h| h.is_sealed() && gone(h.vip_id)) {
                let mut set = *set;
                for w in 0..WAYS {
                    if gone(set.get(w).vip_id) {
                        set.put(w, &Handshake::default());
                    }
                }
                self.half_open
                    .set(i as u32, set, 0)
                    .map_err(map_err(names::HALF_OPEN))?;
            }
        }
        let all = sets::<PendingSet>(array_fd(&self.pending), names::PENDING)?;
        for (i, set) in all.iter().enumerate() {
            if set.ways().any(|p| p.is_sealed() && gone(p.key.vip_id)) {
                let mut set = *set;
                for w in 0..WAYS {
                    if gone(set.get(w).key.vip_id) {
                        set.put(w, &Pending::default());
                    }
                }
                self.pending
                    .set(i as u32, set, 0)
                    .map_err(map_err(names::PENDING))?;
            }
        }
        Ok(())
    }
}
