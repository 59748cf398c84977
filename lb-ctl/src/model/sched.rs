//! Selection tables. The data path walks a VIP's table with one cursor for
//! the whole balancer, so the table alone decides how new connections
//! spread:
//! - `rr`: each backend once, in order;
//! - `wrr`: each backend in proportion to its weight, smoothly interleaved
//!   (the smooth weighted round robin of nginx), weights reduced by their
//!   greatest common divisor to keep the table short;
//! - `maglev`: the Maglev lookup table, indexed by a hash of the client (or
//!   of the connection) instead of a cursor.

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
    /// Maglev consistent hashing: a client (or, without persistence, a
    /// connection) is hashed onto a lookup table of 65 537 slots, built
    /// alike on every host for the same backends; a backend change moves
    /// few other clients.
    Maglev,
}

impl Scheduler {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Maglev => "maglev",
        }
    }
}

/// Largest weight a backend may have.
pub const MAX_WEIGHT: u32 = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SchedError {
    #[error("a maglev table is built from the backends' addresses (build_maglev)")]
    NeedsKeys,
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
        Scheduler::Maglev => Err(SchedError::NeedsKeys),
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

/// FNV-1a, 64 bits, from `seed`: the same on every host and build.
fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The Maglev lookup table (Eisenbud et al., NSDI'16) of `size` slots
/// (a prime) for `backends` (id, weight, key): each backend's preference
/// order is a permutation derived from its key (its address and port), and
/// the backends take turns claiming their next free preferred slot, each as
/// many turns per round as its weight (reduced by the weights' GCD). The
/// backends are taken in the order of their keys, so the table does not
/// depend on the order a config lists them in. With equal weights every
/// backend holds ⌊size/n⌋ or ⌈size/n⌉ slots.
#[must_use]
pub fn build_maglev(backends: &[(u32, u32, String)], size: u32) -> Vec<u32> {
    if backends.is_empty() {
        return Vec::new();
    }
    let mut sorted: Vec<&(u32, u32, String)> = backends.iter().collect();
    sorted.sort_by(|a, b| a.2.cmp(&b.2));
    let divisor = sorted.iter().fold(0, |g, b| gcd(g, b.1)).max(1);
    let m = u64::from(size);
    let perms: Vec<(u64, u64)> = sorted
        .iter()
        .map(|b| {
            let offset = fnv(0xcbf2_9ce4_8422_2325, b.2.as_bytes()) % m;
            let skip = fnv(0x8422_2325_cbf2_9ce4, b.2.as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; sorted.len()];
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    loop {
        for (i, b) in sorted.iter().enumerate() {
            for _ in 0..(b.1 / divisor).max(1) {
                let (offset, skip) = perms[i];
                let mut c = (offset + next[i] * skip) % m;
                while table[c as usize] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c as usize] = b.0;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    return table;
                }
            }
        }
    }
}

/// The slots of a selection table that a change from `before` to `after`
/// must write, with their new values: only those that differ (a slot past
/// the end of `before` differs). Writing no other keeps a Maglev table
/// swap under traffic from sending any packet anywhere but to its old or
/// its new backend.
pub fn changed_slots<'a>(
    before: &'a [u32],
    after: &'a [u32],
) -> impl Iterator<Item = (usize, u32)> + 'a {
    after
        .iter()
        .enumerate()
        .filter(move |(i, slot)| before.get(*i) != Some(slot))
        .map(|(i, slot)| (i, *slot))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_change_writes_only_the_slots_that_change() {
        let ten: Vec<(u32, u32, String)> = (0..10)
            .map(|i| (i, 1, format!("198.18.1.{i}:80")))
            .collect();
        let before = super::build_maglev(&ten, lb_common::MAGLEV_SIZE);
        let after = super::build_maglev(&ten[1..], lb_common::MAGLEV_SIZE);
        let written: Vec<(usize, u32)> = super::changed_slots(&before, &after).collect();
        let differing = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(written.len(), differing);
        assert!(written
            .iter()
            .all(|&(i, v)| after[i] == v && before[i] != v));
        // About a tenth moved (backend 0's slots), nothing else.
        assert!(written.len() < before.len() / 9, "{}", written.len());
        assert_eq!(super::changed_slots(&after, &after).count(), 0);
        // A new table (nothing before) is written whole.
        assert_eq!(super::changed_slots(&[], &after).count(), after.len());
    }

    use super::*;

    fn keyed(n: u32) -> Vec<(u32, u32, String)> {
        (0..n)
            .map(|i| (i, 1, format!("198.18.4.{}:80", 21 + i)))
            .collect()
    }

    #[test]
    fn maglev_shares_are_even_and_independent_of_order() {
        let m = lb_common::MAGLEV_SIZE;
        for n in [1, 3, 10, 100] {
            let t = build_maglev(&keyed(n), m);
            assert_eq!(t.len(), m as usize);
            for id in 0..n {
                let count = t.iter().filter(|&&b| b == id).count() as u32;
                assert!(
                    count == m / n || count == m.div_ceil(n),
                    "n {n}: backend {id} holds {count}"
                );
            }
        }
        let mut reversed = keyed(10);
        reversed.reverse();
        assert_eq!(build_maglev(&reversed, m), build_maglev(&keyed(10), m));
        assert!(build_maglev(&[], m).is_empty());
    }

    #[test]
    fn maglev_removal_moves_few_other_slots() {
        let m = lb_common::MAGLEV_SIZE;
        let all = keyed(10);
        let before = build_maglev(&all, m);
        let after = build_maglev(&all[1..], m);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != 0 && b != a)
            .count();
        let others = before.iter().filter(|&&b| b != 0).count();
        assert!(
            (moved as f64) <= 0.005 * others as f64 + 1.0,
            "{moved} of {others} slots of the other backends moved"
        );
        assert!(after.iter().all(|&b| b != 0));
    }

    #[test]
    fn maglev_weights_scale_shares() {
        let m = lb_common::MAGLEV_SIZE;
        let b = vec![
            (0, 2, "198.18.4.21:80".to_string()),
            (1, 1, "198.18.4.22:80".to_string()),
        ];
        let t = build_maglev(&b, m);
        let heavy = t.iter().filter(|&&x| x == 0).count() as f64;
        assert!((heavy / f64::from(m) - 2.0 / 3.0).abs() < 0.01, "{heavy}");
    }

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
