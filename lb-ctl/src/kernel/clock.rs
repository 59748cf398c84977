//! The clock the data path stamps its tables with.

use super::error::{DataplaneError, Result};

/// Monotonic time as the data path reads it (`bpf_ktime_get_coarse_ns`).
///
/// # Errors
/// When the clock cannot be read.
pub fn now_ns() -> Result<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map_err(DataplaneError::Clock)?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}
