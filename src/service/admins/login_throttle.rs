//! Login throttling per client (an IPv4 address or an IPv6 /64, [`crate::client_net::host`]:
//! counted per IPv6 address, one /64 had 2^64 times the guesses): at most `FREE_FAILURES`
//! guesses per client before it must wait, doubling from 30 s up to 15 min (429 with Retry-After). Guesses still being
//! checked count too: an attempt is reserved before Argon2 runs, so concurrent guesses cannot
//! slip past the limit while earlier ones are still hashing. A success clears the address.
//! Other addresses are unaffected. Applies to the login route, HTTP Basic and any other
//! credential sent to admin routes, and the current-password check.
//!
//! The map is consistent after every statement that changes it, so a poisoned lock (a panic
//! elsewhere while holding it) is recovered rather than failing open or closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Guesses (failed or in flight) an address gets before it must wait.
pub const FREE_FAILURES: u32 = 5;
const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Retry-After for an attempt refused only because earlier ones from the same address are
/// still being checked (an Argon2 check takes well under a second).
pub const IN_FLIGHT_RETRY_SECS: u64 = 1;
/// Failures older than this are forgotten.
pub const MEMORY: Duration = Duration::from_secs(60 * 60);
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Attempts reserved and not yet recorded as success or failure.
    in_flight: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failed-login bookkeeping.
#[derive(Default)]
pub struct LoginThrottle {
    by_addr: Mutex<HashMap<IpAddr, Failures>>,
}

/// One reserved guess. Record its outcome with [`LoginAttempt::success`] or
/// [`LoginAttempt::failure`]; dropped without either (an error before the check finished),
/// it just gives its place back.
#[must_use = "an attempt records its outcome or gives its place back when dropped"]
pub struct LoginAttempt<'a> {
    throttle: &'a LoginThrottle,
    addr: IpAddr,
    open: bool,
}

impl LoginAttempt<'_> {
    /// The credential was right: the address starts afresh.
    pub fn success(mut self) {
        self.open = false;
        let mut map = self.throttle.map();
        if let Some(f) = map.get_mut(&self.addr) {
            f.in_flight = f.in_flight.saturating_sub(1);
            if f.in_flight == 0 {
                map.remove(&self.addr);
            } else {
                f.count = 0;
                f.locked_until = None;
            }
        }
    }

    /// The credential was wrong; returns the lockout (seconds) it starts, if any.
    pub fn failure(mut self, now: Instant) -> Option<u64> {
        self.open = false;
        let mut map = self.throttle.map();
        let f = map.get_mut(&self.addr)?;
        f.in_flight = f.in_flight.saturating_sub(1);
        f.count = f.count.saturating_add(1);
        f.last = now;
        let lockout = lockout_after(f.count)?;
        f.locked_until = Some(now + lockout);
        Some(lockout.as_secs())
    }
}

/// The lockout that `failures` failed guesses in a row earn: none for the first
/// `FREE_FAILURES - 1`, then 30 s doubling up to 15 min.
pub fn lockout_after(failures: u32) -> Option<Duration> {
    let exponent = failures.checked_sub(FREE_FAILURES)?.min(10);
    Some((FIRST_LOCKOUT * 2u32.pow(exponent)).min(MAX_LOCKOUT))
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if self.open {
            let mut map = self.throttle.map();
            if let Some(f) = map.get_mut(&self.addr) {
                f.in_flight = f.in_flight.saturating_sub(1);
            }
        }
    }
}

impl LoginThrottle {
    fn map(&self) -> MutexGuard<'_, HashMap<IpAddr, Failures>> {
        crate::sync::lock(&self.by_addr)
    }

    /// Locks `addr` out until `until` (a longer lock stays): what another node decided, seen
    /// in a shared store, so this node's early checks refuse too.
    pub fn lock(&self, addr: IpAddr, until: Instant, now: Instant) {
        let addr = crate::client_net::host(addr);
        let mut map = self.map();
        let f = map.entry(addr).or_insert(Failures {
            count: 0,
            in_flight: 0,
            last: now,
            locked_until: None,
        });
        f.last = now;
        f.locked_until = f.locked_until.max(Some(until));
    }

    /// `Err(seconds)` if this address is locked out. Reserves nothing: for answers that need
    /// no guess checked (a cached Basic credential still waits out a lockout).
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        let addr = crate::client_net::host(addr);
        match self.map().get(&addr).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err((until - now).as_secs().max(1)),
            _ => Ok(()),
        }
    }

    /// Reserves one guess for `addr`, or `Err(seconds to wait)` when the address is locked
    /// out or its failures plus guesses in flight already reach `FREE_FAILURES`.
    pub fn reserve(&self, addr: IpAddr, now: Instant) -> Result<LoginAttempt<'_>, u64> {
        let addr = crate::client_net::host(addr);
        let mut map = self.map();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, f| f.in_flight > 0 || now.saturating_duration_since(f.last) < MEMORY);
        }
        let f = map.entry(addr).or_insert(Failures {
            count: 0,
            in_flight: 0,
            last: now,
            locked_until: None,
        });
        if let Some(until) = f.locked_until.filter(|&until| until > now) {
            return Err((until - now).as_secs().max(1));
        }
        if now.saturating_duration_since(f.last) >= MEMORY {
            f.count = 0;
        }
        // After a lockout ends, one guess at a time (each failure doubles the next lockout).
        let allowed = if f.count >= FREE_FAILURES {
            1
        } else {
            FREE_FAILURES - f.count
        };
        if f.in_flight >= allowed {
            return Err(IN_FLIGHT_RETRY_SECS);
        }
        f.in_flight += 1;
        f.last = now;
        Ok(LoginAttempt {
            throttle: self,
            addr,
            open: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(t: &LoginThrottle, a: IpAddr, now: Instant) -> Option<u64> {
        t.reserve(a, now).unwrap().failure(now)
    }

    #[test]
    fn locks_after_repeated_failures_per_address() {
        let t = LoginThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(fail(&t, a, now), None);
            assert!(t.check(a, now).is_ok());
        }
        assert_eq!(fail(&t, a, now), Some(30));
        assert_eq!(t.check(a, now), Err(30));
        assert_eq!(t.reserve(a, now).err(), Some(30));
        assert!(t.check(b, now).is_ok(), "other addresses unaffected");
        assert!(t.check(a, now + Duration::from_secs(31)).is_ok());
        assert_eq!(
            fail(&t, a, now + Duration::from_secs(31)),
            Some(60),
            "doubles"
        );
        t.reserve(a, now + Duration::from_secs(92))
            .unwrap()
            .success();
        assert!(t.check(a, now + Duration::from_secs(92)).is_ok());
        for _ in 0..4 {
            assert_eq!(fail(&t, a, now + Duration::from_secs(93)), None, "cleared");
        }
    }

    /// Seventh outside attack (medium): twelve addresses of one IPv6 /64 got five guesses
    /// each. A /64 is one client; another /64 is not affected.
    #[test]
    fn one_ipv6_64_shares_one_budget() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let in_64 = |i: u16| -> IpAddr { format!("fd00:0:0:1::{i:x}").parse().unwrap() };
        for i in 1..=4 {
            assert_eq!(fail(&t, in_64(i), now), None);
        }
        assert_eq!(fail(&t, in_64(5), now), Some(30));
        assert_eq!(t.reserve(in_64(99), now).err(), Some(30));
        let other: IpAddr = "fd00:0:0:2::1".parse().unwrap();
        assert!(
            t.reserve(other, now).is_ok(),
            "another /64 is another client"
        );
    }

    #[test]
    fn regression_issue_14_concurrent_guesses_are_reserved_before_checking() {
        let t = LoginThrottle::default();
        let a: IpAddr = "10.0.0.3".parse().unwrap();
        let now = Instant::now();
        // Sixty guesses arrive before any has been checked: five get a place.
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..60 {
            match t.reserve(a, now) {
                Ok(attempt) => held.push(attempt),
                Err(secs) => {
                    assert_eq!(secs, IN_FLIGHT_RETRY_SECS);
                    refused += 1;
                }
            }
        }
        assert_eq!((held.len(), refused), (5, 55));
        // A place given back unused (an error mid-check) is free again.
        drop(held.pop());
        let again = t.reserve(a, now).unwrap();
        held.push(again);
        let lockouts: Vec<_> = held.into_iter().map(|h| h.failure(now)).collect();
        assert_eq!(lockouts.last(), Some(&Some(30)));
        assert_eq!(t.reserve(a, now).err(), Some(30));
        // After the lockout, one guess at a time.
        let later = now + Duration::from_secs(31);
        let one = t.reserve(a, later).unwrap();
        assert_eq!(t.reserve(a, later).err(), Some(IN_FLIGHT_RETRY_SECS));
        drop(one);
    }

    #[test]
    fn regression_issue_14_threads_racing_get_at_most_five_guesses() {
        let t = std::sync::Arc::new(LoginThrottle::default());
        let a: IpAddr = "10.0.0.4".parse().unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(32));
        let checked: usize = (0..32)
            .map(|_| {
                let (t, barrier) = (t.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let now = Instant::now();
                    match t.reserve(a, now) {
                        Ok(attempt) => {
                            std::thread::sleep(Duration::from_millis(50));
                            let _ = attempt.failure(now);
                            1
                        }
                        Err(_) => 0,
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(checked, 5);
    }
}
