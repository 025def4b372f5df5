//! Locking shared state.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`. A poisoned lock only means another task panicked while holding it; the data is
/// still the best there is (a transcript, a registry), so it is used rather than lost.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
