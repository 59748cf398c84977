//! The benchmark (`lb-bench`, run by `cargo xtask bench`): per-packet cost
//! through BPF_PROG_TEST_RUN ([`prog`]), and throughput and connection rate
//! through the veth lab against nftables and HAProxy ([`lab`]). Every
//! variant is measured in rounds, the variants alternating within a round,
//! after a discarded warm-up round; [`report`] keeps every sample and writes
//! medians with min and max.
pub mod cluster;
pub mod lab;
pub mod prog;
pub mod report;

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Measured rounds (after one discarded warm-up round).
    pub rounds: usize,
    /// BPF_PROG_TEST_RUN repetitions per measurement.
    pub repeat: u32,
    /// Single-shot runs per new-flow measurement.
    pub new_flows: usize,
    /// Seconds per lab traffic run.
    pub seconds: u64,
    /// Largest table size for the scale curve.
    pub max_entries: u32,
}

impl Plan {
    #[must_use]
    pub const fn full() -> Self {
        Self {
            rounds: 5,
            repeat: 2_000_000,
            new_flows: 20_000,
            seconds: 5,
            max_entries: 1_000_000,
        }
    }

    #[must_use]
    pub const fn quick() -> Self {
        Self {
            rounds: 5,
            repeat: 300_000,
            new_flows: 5_000,
            seconds: 2,
            max_entries: 1_000_000,
        }
    }
}
