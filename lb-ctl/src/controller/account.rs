//! What the sweeps tell about the tables: their sizes, and the
//! unconfirmed flows pushed out of a full set.

use crate::kernel::sweeper::SweepReport;

/// The four state tables, in the order of the sweeps' figures.
pub const TABLES: [&str; 4] = ["connections", "half_open", "sessions", "pending"];

/// What the sweeps tell about the tables.
#[derive(Clone, Copy, Debug, Default)]
pub struct TableAccount {
    /// Entries in each table after the last sweep: live connection
    /// entries (two per connection), unconfirmed flows, sessions and
    /// pending sessions.
    pub connections: u64,
    pub half_open: u64,
    pub sessions: u64,
    pub pending: u64,
    /// Unconfirmed flows pushed out of a full set so far (the data path
    /// counts them).
    pub evicted: u64,
}

impl TableAccount {
    /// Account one sweep, and the data path's eviction count.
    pub fn sweep(&mut self, r: &SweepReport, evicted: u64) {
        self.connections = r.connections.left();
        self.half_open = r.half_open.left();
        self.sessions = r.sessions.left();
        self.pending = r.pending.left();
        self.evicted = evicted;
    }
}
