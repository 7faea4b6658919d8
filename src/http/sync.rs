//! Locking for the HTTP layer, with the crate's one poisoned-lock policy (see `crate::sync`,
//! which this layer may not import): a poisoned lock is recovered and the work goes on. The
//! locks here guard counts, queues and the current TLS config, each consistent between
//! statements; the panic that poisoned one was caught and logged by the request pool. Giving
//! up instead would stop a worker, drop an answer or refuse every later connection.

use std::sync::{
    Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::Duration;

/// Locks `m`, recovering it if poisoned.
pub(super) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `l`'s read lock, recovering it if poisoned.
pub(super) fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `l`'s write lock, recovering it if poisoned.
pub(super) fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// [`Condvar::wait_timeout`], recovering the lock if poisoned.
pub(super) fn wait_timeout<'a, T>(
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

    #[test]
    fn poisoned_locks_are_recovered_with_their_data() {
        let m = Arc::new(Mutex::new(1));
        let l = Arc::new(RwLock::new(1));
        let (held_m, held_l) = (Arc::clone(&m), Arc::clone(&l));
        let joined = std::thread::spawn(move || {
            let (mut a, mut b) = (held_m.lock().unwrap(), held_l.write().unwrap());
            (*a, *b) = (2, 2);
            panic!("poison both");
        })
        .join();
        assert!(joined.is_err() && m.is_poisoned() && l.is_poisoned());
        assert_eq!(*lock(&m), 2);
        assert_eq!(*read(&l), 2);
        *write(&l) = 3;
        assert_eq!(*read(&l), 3);
        let g = wait_timeout(&Condvar::new(), lock(&m), Duration::from_millis(1));
        assert_eq!(*g, 2);
    }
}
