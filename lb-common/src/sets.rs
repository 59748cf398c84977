//! Fixed set-associative tables, the new-flow path's storage: unconfirmed
//! flows ([`crate::handshake`]) and pending sessions ([`crate::pending`]).
//!
//! Each is an array of sets of [`WAYS`] entries, preallocated at load. A
//! key's set is a seeded hash of it; a new entry takes a free or expired
//! way of its set, else the least recently used one. A lookup reads one
//! set and an insert writes into the set the lookup has just read: no
//! lock, no free list, no allocation, so a SYN costs one cold set instead
//! of the two LRU inserts (bucket lock, free-list pop, cold node) an LRU
//! hash table takes. A flood can only shorten how long an unconfirmed
//! entry lives; confirmed connections and sessions live in `CONNS` and
//! `SESSIONS`, which only confirmed flows reach.
//!
//! Ways are written without a lock: two CPUs writing one way at the same
//! instant could mix two entries. The fields that identify an entry and
//! its choice are sealed with a [`check`] word at creation; a way whose
//! check does not match counts as free.

/// Ways per set.
pub const WAYS: usize = 4;

/// Sets of a table that holds at least `entries`: a power of two.
#[must_use]
pub const fn sets_for(entries: u32) -> u32 {
    let sets = entries.div_ceil(WAYS as u32);
    if sets <= 1 {
        1
    } else {
        sets.next_power_of_two()
    }
}

/// The set of (`a`, `b`) in a table of `mask + 1` sets: murmur3's 64-bit
/// finalizer over the seeded pair. The seed is chosen at random when the
/// tables are created, so that nobody outside can aim at one set.
#[inline(always)]
#[must_use]
pub const fn set_of(seed: u32, a: u32, b: u32, mask: u32) -> u32 {
    let mut h = ((a as u64) << 32 | b as u64) ^ ((seed as u64) << 16 | seed as u64);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h as u32) & mask
}

/// A check word over `words`: a cheap mix, different for any single
/// changed word (sealing, not security).
#[inline(always)]
pub(crate) const fn check(words: [u32; 8]) -> u32 {
    let mut h: u32 = 0x9e37_79b9;
    let mut i = 0;
    while i < words.len() {
        h = (h ^ words[i]).wrapping_mul(0x0100_0193).rotate_left(13);
        i += 1;
    }
    // Never 0: an all-zero (never written) way is never sealed.
    h | 1
}

/// The way a new entry of a set goes into, and whether it pushes a live
/// one out: the first `free` way, else the one least recently used by
/// `stamps` (as the least recently used entry of a full LRU table goes).
#[inline(always)]
pub(crate) const fn free_or_oldest(stamps: [u64; WAYS], free: [bool; WAYS]) -> (usize, bool) {
    let mut oldest = 0;
    let mut i = 0;
    while i < WAYS {
        if free[i] {
            return (i, false);
        }
        if stamps[i] < stamps[oldest] {
            oldest = i;
        }
        i += 1;
    }
    (oldest, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_powers_of_two_and_spread() {
        assert_eq!(sets_for(0), 1);
        assert_eq!(sets_for(4), 1);
        assert_eq!(sets_for(5), 2);
        assert_eq!(sets_for(131_072), 32_768);
        assert_eq!(sets_for(100_000), 32_768);
        let mut seen = [0u32; 16];
        for i in 0..4096u32 {
            let set = set_of(
                9,
                u32::from_ne_bytes([198, 18, (i >> 8) as u8, i as u8]),
                6,
                1023,
            );
            assert!(set <= 1023);
            seen[(set / 64) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (150..370).contains(&n)), "{seen:?}");
        assert_ne!(
            set_of(1, 5, 6, u32::MAX),
            set_of(2, 5, 6, u32::MAX),
            "seeded"
        );
    }
}
