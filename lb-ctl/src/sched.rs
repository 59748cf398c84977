//! Selection tables. The data path walks a VIP's table with a per-CPU
//! cursor, so the table alone decides how new connections spread:
//! - `rr`: each backend once, in order;
//! - `wrr`: each backend in proportion to its weight, smoothly interleaved
//!   (the smooth weighted round robin of nginx), weights reduced by their
//!   greatest common divisor to keep the table short.

use lb_common::RING_SIZE;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin: backends take turns; weights are ignored.
    #[default]
    Rr,
    /// Weighted round robin: turns in proportion to the weights.
    Wrr,
}

impl Scheduler {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
        }
    }
}

/// Largest weight a backend may have.
pub const MAX_WEIGHT: u32 = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedError {
    #[error(
        "the weights need a selection table of {needed} slots, more than the {max} a VIP has; \
         use smaller weights or ones with a common divisor"
    )]
    TableTooLarge { needed: u64, max: u32 },
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The selection table of `backends` (id, weight) under `scheduler`.
///
/// # Errors
/// When the table would not fit in [`RING_SIZE`] slots.
pub fn build_table(scheduler: Scheduler, backends: &[(u32, u32)]) -> Result<Vec<u32>, SchedError> {
    match scheduler {
        Scheduler::Rr => {
            if backends.len() > RING_SIZE as usize {
                return Err(SchedError::TableTooLarge {
                    needed: backends.len() as u64,
                    max: RING_SIZE,
                });
            }
            Ok(backends.iter().map(|&(id, _)| id).collect())
        }
        Scheduler::Wrr => {
            let divisor = backends.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
            let weights: Vec<i64> = backends
                .iter()
                .map(|&(_, w)| i64::from(w / divisor))
                .collect();
            let total: i64 = weights.iter().sum();
            if total > i64::from(RING_SIZE) {
                return Err(SchedError::TableTooLarge {
                    needed: total as u64,
                    max: RING_SIZE,
                });
            }
            let mut current = vec![0i64; backends.len()];
            let mut table = Vec::with_capacity(total as usize);
            for _ in 0..total {
                for (c, w) in current.iter_mut().zip(&weights) {
                    *c += w;
                }
                let best = (0..current.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i)));
                let Some(best) = best else { break };
                current[best] -= total;
                table.push(backends[best].0);
            }
            Ok(table)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rr_lists_each_backend_once_ignoring_weights() {
        assert_eq!(
            build_table(Scheduler::Rr, &[(7, 1), (3, 5), (9, 2)]),
            Ok(vec![7, 3, 9])
        );
        assert_eq!(build_table(Scheduler::Rr, &[]), Ok(vec![]));
    }

    #[test]
    fn wrr_is_proportional_and_interleaved() {
        let t = build_table(Scheduler::Wrr, &[(1, 5), (2, 1), (3, 1)]).unwrap();
        assert_eq!(t, vec![1, 1, 2, 1, 3, 1, 1]);
        let t = build_table(Scheduler::Wrr, &[(1, 2), (2, 1)]).unwrap();
        assert_eq!(t, vec![1, 2, 1]);
    }

    #[test]
    fn wrr_reduces_weights_by_gcd() {
        let t = build_table(Scheduler::Wrr, &[(1, 100), (2, 200)]).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.iter().filter(|&&b| b == 2).count(), 2);
    }

    #[test]
    fn wrr_counts_match_weights() {
        let backends = [(10, 3), (11, 7), (12, 11)];
        let t = build_table(Scheduler::Wrr, &backends).unwrap();
        for (id, w) in backends {
            assert_eq!(t.iter().filter(|&&b| b == id).count(), w as usize);
        }
        // No backend with weight <= half the total appears twice in a row.
        assert!(t.windows(2).all(|p| p[0] != p[1] || p[0] == 12));
    }

    #[test]
    fn wrr_refuses_tables_that_do_not_fit() {
        let err = build_table(
            Scheduler::Wrr,
            &[(1, 256), (2, 255), (3, 254), (4, 253), (5, 252)],
        );
        assert!(matches!(err, Err(SchedError::TableTooLarge { .. })));
    }
}
