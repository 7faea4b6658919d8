//! Locking `std::sync` locks, with pa-auth's one policy for a poisoned lock: recover it
//! ([`PoisonError::into_inner`]) and carry on. Never skip the work, never turn it into a
//! request error. (The HTTP layer, which imports nothing from the rest of the crate, has
//! its own copy in `http::sync` with the same policy.)
//!
//! Why recovery is right here:
//! - Every lock guards either nothing (`Mutex<()>` / `RwLock<()>` gates that only order
//!   writes) or state that is consistent between statements (maps, counters, caches). No
//!   lock is held across a multi-step update that a panic could leave half-done, so the
//!   data behind a poisoned lock is as good as any other.
//! - The panic that poisoned it was already caught and logged where it happened (the
//!   request pool's `catch_unwind` answers 500 and logs).
//! - Refusing every later request because one request once panicked turns one bug into an
//!   outage; skipping the work (a durable-state write, a cache clear, a session removal, a
//!   token's removal from the index) turns it into a silent integrity or security loss.
//!
//! A new lock must keep the first point true: what it guards is consistent after every
//! statement that changes it. A lock that cannot promise that needs a redesign, not a
//! second poison policy.

use std::sync::{
    Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::Duration;

/// Locks `m`, recovering it if poisoned.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `l`'s read lock, recovering it if poisoned.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `l`'s write lock, recovering it if poisoned.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// [`Condvar::wait`], recovering the lock if poisoned.
pub fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

/// [`Condvar::wait_timeout`], recovering the lock if poisoned (whether it timed out is
/// not needed by any caller: they all re-check their own condition and clock).
pub fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    cv.wait_timeout(guard, timeout)
        .unwrap_or_else(PoisonError::into_inner)
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Panics in a thread while `hold` holds the lock, so the lock is poisoned.
    fn poison_with(hold: impl FnOnce() + Send + 'static) {
        let joined = std::thread::spawn(hold).join();
        assert!(joined.is_err(), "the holder panicked");
    }

    #[test]
    fn a_poisoned_mutex_is_recovered_with_its_data() {
        let m = Arc::new(Mutex::new(vec![1, 2]));
        let held = Arc::clone(&m);
        poison_with(move || {
            let mut v = held.lock().unwrap();
            v.push(3);
            panic!("poison the mutex");
        });
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), [1, 2, 3]);
        lock(&m).push(4);
        assert_eq!(*lock(&m), [1, 2, 3, 4]);
    }

    #[test]
    fn a_poisoned_rwlock_is_recovered_with_its_data() {
        let l = Arc::new(RwLock::new(String::from("a")));
        let held = Arc::clone(&l);
        poison_with(move || {
            let mut w = held.write().unwrap();
            w.push('b');
            panic!("poison the rwlock");
        });
        assert!(l.is_poisoned());
        assert_eq!(*read(&l), "ab");
        write(&l).push('c');
        assert_eq!(*read(&l), "abc");
    }

    #[test]
    fn waits_on_a_poisoned_mutex_return_its_guard() {
        let m = Arc::new(Mutex::new(7));
        let held = Arc::clone(&m);
        poison_with(move || {
            let _g = held.lock().unwrap();
            panic!("poison the mutex");
        });
        let cv = Condvar::new();
        let g = wait_timeout(&cv, lock(&m), Duration::from_millis(1));
        assert_eq!(*g, 7);
    }
}
