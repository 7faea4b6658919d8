//! Login throttling per client address: after `FREE_FAILURES` consecutive failures an address
//! must wait, doubling from 30 s up to 15 min, before its next attempt is even checked (429
//! with Retry-After). A success clears the address. Other addresses are unaffected. Applies to
//! the login route, HTTP Basic on admin routes and the current-password check.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FREE_FAILURES: u32 = 5;
const FIRST_LOCKOUT: Duration = Duration::from_secs(30);
const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Failures older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(60 * 60);
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failed-login bookkeeping.
#[derive(Default)]
pub struct LoginThrottle {
    by_addr: Mutex<HashMap<IpAddr, Failures>>,
}

impl LoginThrottle {
    /// `Err(seconds)` if this address must wait before trying again.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        let Ok(map) = self.by_addr.lock() else {
            return Ok(());
        };
        match map.get(&addr).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err((until - now).as_secs().max(1)),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns the lockout (seconds) it starts, if any.
    pub fn failure(&self, addr: IpAddr, now: Instant) -> Option<u64> {
        let mut map = self.by_addr.lock().ok()?;
        if map.len() >= MAX_TRACKED {
            map.retain(|_, f| now.saturating_duration_since(f.last) < MEMORY);
        }
        let f = map.entry(addr).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        if now.saturating_duration_since(f.last) >= MEMORY {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        if f.count >= FREE_FAILURES {
            let exponent = (f.count - FREE_FAILURES).min(10);
            let lockout = (FIRST_LOCKOUT * 2u32.pow(exponent)).min(MAX_LOCKOUT);
            f.locked_until = Some(now + lockout);
            return Some(lockout.as_secs());
        }
        None
    }

    pub fn success(&self, addr: IpAddr) {
        if let Ok(mut map) = self.by_addr.lock() {
            map.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_repeated_failures_per_address() {
        let t = LoginThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(t.failure(a, now), None);
            assert!(t.check(a, now).is_ok());
        }
        assert_eq!(t.failure(a, now), Some(30));
        assert_eq!(t.check(a, now), Err(30));
        assert!(t.check(b, now).is_ok(), "other addresses unaffected");
        assert!(t.check(a, now + Duration::from_secs(31)).is_ok());
        assert_eq!(
            t.failure(a, now + Duration::from_secs(31)),
            Some(60),
            "doubles"
        );
        t.success(a);
        assert!(t.check(a, now + Duration::from_secs(32)).is_ok());
    }
}
