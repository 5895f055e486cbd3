//! Progressive lockout of an (account, client address) pair, and the bucket of an
//! account's failure ceiling over all addresses.

use std::time::Duration;

use crate::store::LockState;

/// The bucket of an account's failures over all addresses (its lockout key).
pub fn ceiling_bucket(lock_key: &str) -> String {
    format!("acct_fail:{lock_key}")
}

/// Progressive lockout: `threshold` consecutive failures lock for the first
/// duration; a failure after a lock ends locks again for the next (the last
/// repeats); a success or an admin unlock resets everything.
#[derive(Debug, Clone)]
pub struct LockoutPolicy {
    /// Failures that trigger the first lock.
    pub threshold: u32,
    /// Lock durations, escalating.
    pub durations: Vec<Duration>,
}

/// Without failures for this long, an email's lock history is forgotten.
const LOCK_MEMORY_MS: i64 = 24 * 3600 * 1000;

/// What reserving an attempt decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Locked until this time (milliseconds): refuse without hashing.
    Locked(i64),
    /// As many attempts as may be in flight already are: refuse for now, unlocked.
    Busy,
    /// Go ahead and check the password; the attempt is counted as a failure until a
    /// success clears it.
    Granted,
}

impl LockoutPolicy {
    fn decayed(prior: LockState, now: i64) -> LockState {
        if now - prior.last_failure_at > LOCK_MEMORY_MS { LockState::default() } else { prior }
    }

    /// Attempts that may be checked at once: the threshold, or one right after a
    /// lock ended (whose failure escalates at once).
    fn in_flight(&self, s: &LockState) -> i64 {
        if s.lock_level > 0 { 1 } else { i64::from(self.threshold) }
    }

    /// Counts an attempt before its password is hashed, so attempts in flight can
    /// never outnumber what the lock allows. `None` means: write nothing.
    pub fn reserve(&self, prior: LockState, now: i64) -> (Reservation, Option<LockState>) {
        if let Some(until) = prior.locked_until.filter(|u| *u > now) {
            return (Reservation::Locked(until), None);
        }
        let mut s = Self::decayed(prior, now);
        s.failures += 1;
        s.last_failure_at = now;
        if s.failures > self.in_flight(&s) {
            return (Reservation::Busy, None);
        }
        (Reservation::Granted, Some(s))
    }

    /// The state after a reserved attempt turned out wrong: lock when the threshold
    /// is reached; the first failure after a lock ended escalates to the next
    /// duration (the last repeats).
    /// A failure that held no reservation (a wrong second-factor code counted
    /// against the password lockout): counted, then judged as [`Self::after_failure`].
    pub fn unreserved_failure(&self, prior: LockState, now: i64) -> LockState {
        let mut s = Self::decayed(prior, now);
        if s.locked_until.is_some_and(|u| u > now) {
            return s;
        }
        s.failures += 1;
        self.after_failure(s, now)
    }

    pub fn after_failure(&self, s: LockState, now: i64) -> LockState {
        let mut s = s;
        let lock_for = |level: i64| {
            let idx = usize::try_from(level.saturating_sub(1)).unwrap_or(0).min(self.durations.len().saturating_sub(1));
            let d = self.durations.get(idx).copied().unwrap_or(Duration::from_secs(900));
            now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        if s.locked_until.is_some_and(|u| u > now) {
            return s;
        }
        if s.lock_level > 0 || s.failures >= i64::from(self.threshold) {
            s.lock_level += 1;
            s.locked_until = Some(lock_for(s.lock_level));
            s.failures = 0;
        }
        s.last_failure_at = now;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_escalates_and_repeats_the_last_duration() {
        let p = LockoutPolicy { threshold: 3, durations: vec![Duration::from_secs(10), Duration::from_secs(60)] };
        let fail = |s: LockState, now: i64| {
            let (r, reserved) = p.reserve(s, now);
            assert_eq!(r, Reservation::Granted, "{s:?}");
            p.after_failure(reserved.unwrap(), now)
        };
        let mut s = LockState::default();
        for i in 0..2 {
            s = fail(s, 1000 + i);
            assert_eq!(s.locked_until, None);
        }
        s = fail(s, 2000);
        assert_eq!(s.locked_until, Some(12_000));
        assert_eq!(p.reserve(s, 5000).0, Reservation::Locked(12_000));
        // After the lock ends, a single failure locks for the next duration.
        s = fail(s, 13_000);
        assert_eq!(s.locked_until, Some(73_000));
        s = fail(s, 80_000);
        assert_eq!(s.locked_until, Some(140_000), "the last duration repeats");
        // A day of quiet forgets the history.
        let s = fail(s, 80_000 + LOCK_MEMORY_MS + 1);
        assert_eq!((s.failures, s.lock_level, s.locked_until), (1, 0, None));
    }

    #[test]
    fn unreserved_failures_count_and_lock() {
        let p = LockoutPolicy { threshold: 2, durations: vec![Duration::from_secs(10)] };
        let s = p.unreserved_failure(LockState::default(), 0);
        assert_eq!((s.failures, s.locked_until), (1, None));
        let s = p.unreserved_failure(s, 1);
        assert_eq!(s.locked_until, Some(10_001));
        assert_eq!(p.unreserved_failure(s, 2), s, "a lock in force is not extended");
    }

    #[test]
    fn attempts_in_flight_are_bounded_without_locking() {
        let p = LockoutPolicy { threshold: 2, durations: vec![Duration::from_secs(10)] };
        let (r1, s1) = p.reserve(LockState::default(), 0);
        let (r2, s2) = p.reserve(s1.unwrap(), 1);
        let (r3, s3) = p.reserve(s2.unwrap(), 2);
        assert_eq!((r1, r2, r3), (Reservation::Granted, Reservation::Granted, Reservation::Busy));
        assert!(s3.is_none(), "a busy refusal changes nothing");
        assert_eq!(s2.unwrap().locked_until, None, "reservations never lock by themselves");
    }
}
