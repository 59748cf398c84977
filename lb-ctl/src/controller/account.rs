//! What the sweeps tell about the tables: their sizes, and the
//! unconfirmed flows the LRU evicted (estimated from the counters).

use crate::kernel::sweeper::SweepReport;

/// The four state tables, in the order of the sweeps' figures.
pub const TABLES: [&str; 4] = ["connections", "half_open", "sessions", "pending"];

/// What the sweeps tell about the tables.
#[derive(Clone, Copy, Debug, Default)]
pub struct TableAccount {
    /// Entries left in each table after the last sweep.
    pub connections: u64,
    pub half_open: u64,
    pub sessions: u64,
    pub pending: u64,
    /// Counters at the last sweep: new flows, confirmed flows, drops.
    pub new_flows: u64,
    pub confirmed: u64,
    pub dropped_full: u64,
    /// Unconfirmed flows evicted by the LRU so far (estimated).
    pub evicted: u64,
}

impl TableAccount {
    /// Account one sweep: an unconfirmed flow that was created since the
    /// last one and was neither confirmed, nor dropped, nor swept as
    /// expired, nor is still in the table, was evicted to make room.
    pub fn sweep(&mut self, r: &SweepReport, new_flows: u64, confirmed: u64, dropped_full: u64) {
        let before = self.half_open / 2;
        let after = r.half_open.left() / 2;
        let gone = new_flows
            .saturating_sub(self.new_flows)
            .saturating_sub(confirmed.saturating_sub(self.confirmed))
            .saturating_sub(dropped_full.saturating_sub(self.dropped_full))
            .saturating_sub(r.half_open.deleted / 2);
        self.evicted += gone.saturating_sub(after.saturating_sub(before));
        self.connections = r.connections.left();
        self.half_open = r.half_open.left();
        self.sessions = r.sessions.left();
        self.pending = r.pending.left();
        self.new_flows = new_flows;
        self.confirmed = confirmed;
        self.dropped_full = dropped_full;
    }
}
