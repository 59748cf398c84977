//! Locking shared state.

use std::sync::{Mutex, MutexGuard};

/// Lock, also after a panic elsewhere (the state stays usable).
pub fn lock<T>(c: &Mutex<T>) -> MutexGuard<'_, T> {
    c.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
