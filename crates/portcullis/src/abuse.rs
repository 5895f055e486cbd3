//! Abuse protection: per-client rate limits and progressive account lockout, both
//! kept in the database so every node enforces the same numbers, and the client
//! address as seen through trusted proxies only.
//!
//! Rate limits use a sliding window (the current fixed window plus the previous one
//! weighted by how much of it still overlaps), counted with one atomic upsert. Once a
//! client is over the limit, this node remembers it until `Retry-After` ([`Blocks`]),
//! so a flood costs one database write per window, not one per request, and leaves
//! one summary audit record per address and route instead of one per request.
//!
//! Lockout is keyed by (normalised email, client address), not by account: an
//! attacker's failures lock out the attacker's address, never the owner (OWASP ASVS
//! 2.2.1), and an unknown email locks exactly like a real one, so lockout cannot be
//! used to learn which accounts exist. A ceiling over all addresses
//! ([`ceiling_bucket`]) stops a botnet; addresses the owner signed in from pass it.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::Duration,
};

use crate::{
    store::{Db, LockState, RateWindow},
    units::RateRule,
};
use ipnet::IpNet;

/// Seconds until one more attempt fits under `max`, given the window counts after
/// this attempt, `elapsed` ms into a window of `w` ms. Bounded: at most two windows.
pub fn retry_after_secs(max: i64, count: i64, prev: i64, elapsed: i64, w: i64) -> u64 {
    let steps = (2 * w / 1000).max(1) + 1;
    for s in 1..=steps {
        let t = elapsed + s * 1000;
        let estimate = if t < w {
            prev * (w - t) / w + count + 1
        } else if t < 2 * w {
            count * (2 * w - t) / w + 1
        } else {
            1
        };
        if estimate <= max {
            return u64::try_from(s).unwrap_or(1);
        }
    }
    u64::try_from(steps).unwrap_or(1)
}

/// The rate-limit identity of a client: its IPv4 address, or its IPv6 /64 — one
/// IPv6 host usually owns a whole /64, so per-address limits would not limit it.
pub fn rate_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => {
            let seg = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", seg[0], seg[1], seg[2], seg[3])
        }
        _ => ip.to_owned(),
    }
}

/// Counts one attempt in `bucket`'s sliding window of `rule`.
pub async fn count(db: &Db, bucket: &str, rule: RateRule, now: i64) -> Result<RateWindow, crate::store::StoreError> {
    let w = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
    db.rate_hit(bucket, now - now.rem_euclid(w), w).await
}

/// Whether a window's counts (plus `pending` attempts not counted yet) are over
/// `rule` at `now`: the seconds until one more attempt fits, or `None`.
pub fn over(rule: RateRule, counts: RateWindow, pending: i64, now: i64) -> Option<u64> {
    let w = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX).max(1);
    let max = i64::from(rule.max);
    // The stored window may be newer than ours (another node's clock is ahead), or,
    // read without counting, one or more windows old.
    let age = now - counts.window_start;
    let (count, prev, elapsed) = match age.div_euclid(w) {
        i64::MIN..=0 => (counts.count, counts.prev_count, age.clamp(0, w)),
        1 => (0, counts.count, age - w),
        _ => (0, 0, age.rem_euclid(w)),
    };
    let estimate = prev * (w - elapsed) / w + count + pending;
    (estimate > max).then(|| retry_after_secs(max, count + pending, prev, elapsed, w))
}

/// The bucket of an account's failures over all addresses (its lockout key).
pub fn ceiling_bucket(lock_key: &str) -> String {
    format!("acct_fail:{lock_key}")
}

/// Clients refused from memory on this node, shared by all of its limiters. A
/// client over a limit costs no database work and no audit write per request: its
/// refusals are counted here, and each block leaves ONE summary record (per address
/// and route) in the audit trail when it ends, via [`Blocks::take_closed`].
#[derive(Debug, Default)]
pub struct Blocks {
    open: Mutex<HashMap<String, Block>>,
    /// Summaries of blocks that ended early (capacity), waiting to be taken.
    closed: Mutex<Vec<Summary>>,
}

#[derive(Debug)]
struct Block {
    until: i64,
    address: String,
    /// Refused requests by route.
    refused: Vec<(String, u64)>,
}

/// What one block refused, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The client address (IPv4, or the IPv6 /64), as the limit counted it.
    pub address: String,
    /// The route template the refused requests went to.
    pub route: String,
    /// How many requests were refused.
    pub refused: u64,
}

/// Blocks kept at most; past it, ended blocks are summarised early and dropped.
const BLOCKS_MAX: usize = 100_000;

impl Blocks {
    /// Counts a refusal if `bucket` is blocked at `now`; returns the seconds left.
    fn refuse(&self, bucket: &str, route: &str, now: i64) -> Option<u64> {
        let mut map = self.open.lock().ok()?;
        let block = map.get_mut(bucket).filter(|b| b.until > now)?;
        let known = block.refused.len();
        match block.refused.iter_mut().find(|(r, _)| r == route) {
            Some((_, n)) => *n += 1,
            None if known < 16 => block.refused.push((route.to_owned(), 1)),
            None => {}
        }
        Some(u64::try_from((block.until - now + 999) / 1000).unwrap_or(1).max(1))
    }

    /// Blocks `bucket` until `until`, counting the request that crossed the limit.
    fn block(&self, bucket: String, address: String, route: &str, until: i64) {
        let Ok(mut map) = self.open.lock() else { return };
        let mut closed = Vec::new();
        if map.len() >= BLOCKS_MAX {
            // Bounded memory: the blocks ending soonest are summarised now.
            let mut ends: Vec<i64> = map.values().map(|b| b.until).collect();
            ends.sort_unstable();
            let cut = ends.get(BLOCKS_MAX / 2).copied().unwrap_or(until);
            closed = drain(&mut map, |b| b.until <= cut);
        }
        if let Some(old) = map.insert(bucket, Block { until, address, refused: vec![(route.to_owned(), 1)] }) {
            closed.extend(summaries(old));
        }
        drop(map);
        if !closed.is_empty()
            && let Ok(mut c) = self.closed.lock()
        {
            if c.len() + closed.len() > BLOCKS_MAX {
                metrics::counter!("portcullis_rate_limit_summaries_dropped_total").increment(closed.len() as u64);
                return;
            }
            c.extend(closed);
        }
    }

    /// Summaries of the blocks that ended by `now` (every block when `all`, at
    /// shutdown), removed from memory.
    pub fn take_closed(&self, now: i64, all: bool) -> Vec<Summary> {
        let mut out = self.closed.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default();
        if let Ok(mut map) = self.open.lock() {
            out.extend(drain(&mut map, |b| all || b.until <= now));
        }
        out
    }
}

fn drain(map: &mut HashMap<String, Block>, ended: impl Fn(&Block) -> bool) -> Vec<Summary> {
    let keys: Vec<String> = map.iter().filter(|(_, b)| ended(b)).map(|(k, _)| k.clone()).collect();
    keys.into_iter().filter_map(|k| map.remove(&k)).flat_map(summaries).collect()
}

fn summaries(b: Block) -> Vec<Summary> {
    let address = b.address;
    b.refused.into_iter().map(|(route, refused)| Summary { address: address.clone(), route, refused }).collect()
}

/// One rate limit, shared by all nodes through the database.
pub struct Limiter {
    db: Db,
    rule: RateRule,
    scope: &'static str,
    blocks: std::sync::Arc<Blocks>,
}

impl Limiter {
    /// A limiter for one kind of attempt (`login`, `verify`, …); its refusals are
    /// remembered in `blocks`.
    pub fn new(db: Db, scope: &'static str, rule: RateRule, blocks: std::sync::Arc<Blocks>) -> Self {
        Self { db, rule, scope, blocks }
    }

    /// Whether `client` is over the limit on this node right now (no counting
    /// against the limit, no I/O): lets a caller refuse before doing any work. The
    /// refusal is counted for the block's summary.
    pub fn blocked(&self, client: &str, route: &str, now: i64) -> Option<u64> {
        self.blocks.refuse(&format!("{}:{}", self.scope, rate_key(client)), route, now)
    }

    /// Counts an attempt by `client` at `route`; `Err(retry_after_secs)` when over
    /// the limit. Once over, this node answers from memory until `Retry-After`.
    /// A database failure lets the attempt through (logged): the lockout and the
    /// bounded hash pool still protect the accounts, and an outage of the limiter
    /// must not become an outage of sign-in.
    pub async fn hit(&self, client: &str, route: &str, now: i64) -> Result<(), u64> {
        let address = rate_key(client);
        let bucket = format!("{}:{address}", self.scope);
        if let Some(secs) = self.blocks.refuse(&bucket, route, now) {
            return Err(secs);
        }
        let counts = match count(&self.db, &bucket, self.rule, now).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "rate limiter unavailable; letting the attempt through");
                return Ok(());
            }
        };
        let Some(retry) = over(self.rule, counts, 0, now) else { return Ok(()) };
        self.blocks.block(bucket, address, route, now + i64::try_from(retry).unwrap_or(1) * 1000);
        Err(retry)
    }
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

/// Resolves the client address: the socket peer, unless the peer is a trusted
/// proxy; then `X-Forwarded-For` is read right to left, skipping trusted hops, and
/// the first untrusted address is the client. A header from an untrusted peer is
/// ignored entirely, so clients cannot spoof their address.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    // `::ffff:10.0.0.1` (a dual-stack listener) is the IPv4 address it carries.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    let mut client = peer;
    for hop in header.rsplit(',') {
        let hop = hop.trim();
        let parsed = hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()));
        let Some(ip) = parsed else { break };
        let ip = ip.to_canonical();
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_covers_the_sliding_window() {
        // 6th attempt 10 s into a fresh window: the window must end and decay.
        let s = retry_after_secs(5, 6, 0, 10_000, 60_000);
        assert!((50..=61).contains(&s), "{s}");
        // Over the limit only through the previous window: decays sooner.
        let s = retry_after_secs(5, 1, 10, 30_000, 60_000);
        assert!(s > 0 && s < 31, "{s}");
    }

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
    fn attempts_in_flight_are_bounded_without_locking() {
        let p = LockoutPolicy { threshold: 2, durations: vec![Duration::from_secs(10)] };
        let (r1, s1) = p.reserve(LockState::default(), 0);
        let (r2, s2) = p.reserve(s1.unwrap(), 1);
        let (r3, s3) = p.reserve(s2.unwrap(), 2);
        assert_eq!((r1, r2, r3), (Reservation::Granted, Reservation::Granted, Reservation::Busy));
        assert!(s3.is_none(), "a busy refusal changes nothing");
        assert_eq!(s2.unwrap().locked_until, None, "reservations never lock by themselves");
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer_untrusted: IpAddr = "203.0.113.9".parse().unwrap();
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(client_ip(peer_untrusted, Some("1.2.3.4"), &trusted), peer_untrusted);
        assert_eq!(client_ip(proxy, Some("1.2.3.4"), &trusted), "1.2.3.4".parse::<IpAddr>().unwrap());
        // Right to left: a spoofed leftmost entry is not believed.
        assert_eq!(
            client_ip(proxy, Some("6.6.6.6, 1.2.3.4, 10.0.0.7"), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted), proxy);
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        // IPv4-mapped peers match IPv4 CIDRs.
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(client_ip(mapped, Some("1.2.3.4"), &trusted), "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_eq!(rate_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
        assert_eq!(rate_key("2001:db8:1:2:ffff::1"), rate_key("2001:db8:1:2::9"));
        assert_eq!(rate_key("192.0.2.1"), "192.0.2.1");
    }
}
