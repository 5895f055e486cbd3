//! Per-client rate limits over a sliding window, counted in the database with one
//! atomic upsert, and the node's memory of clients over a limit ([`Blocks`]).

use std::{collections::HashMap, sync::Mutex};

use super::address::rate_key;
use crate::{
    store::{Db, RateWindow},
    units::RateRule,
};

/// Seconds until one more attempt fits under `max`, given the window counts after
/// this attempt, `elapsed` ms into a window of `w` ms. Bounded: at most two windows.
pub fn retry_after_secs(max: i64, count: i64, prev: i64, elapsed: i64, w: i64) -> u64 {
    let steps = (2 * w / 1000).max(1) + 1;
    for s in 1..=steps {
        let t = elapsed + s * 1000;
        let estimate = if t < w {
            weighted(prev, w - t, w) + count + 1
        } else if t < 2 * w {
            weighted(count, 2 * w - t, w) + 1
        } else {
            1
        };
        if estimate <= max {
            return u64::try_from(s).unwrap_or(1);
        }
    }
    u64::try_from(steps).unwrap_or(1)
}

/// `count × part ÷ whole`, rounded up: the previous window's weight in the sliding
/// estimate. Rounding down would let one extra attempt through just after a window
/// boundary (5 × 59.9 s ÷ 60 s is 4.99, not 4).
fn weighted(count: i64, part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        return count;
    }
    (count.saturating_mul(part) + whole - 1) / whole
}

/// Counts one attempt in `bucket`'s sliding window of `rule`.
pub async fn count(db: &Db, bucket: &str, rule: RateRule, now: i64) -> Result<RateWindow, crate::store::StoreError> {
    let w = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
    db.rate_hit(bucket, now - now.rem_euclid(w), w).await
}

/// [`count`], with what `announce` makes of the new counts (a webhook event's
/// type and payload) committed together with them.
pub async fn count_announced(
    db: &Db,
    bucket: &str,
    rule: RateRule,
    now: i64,
    announce: impl FnOnce(&RateWindow) -> Option<(&'static str, String)>,
) -> Result<RateWindow, crate::store::StoreError> {
    let w = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
    db.rate_hit_announced(bucket, now - now.rem_euclid(w), w, announce).await
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
    let estimate = weighted(prev, w - elapsed, w) + count + pending;
    (estimate > max).then(|| retry_after_secs(max, count + pending, prev, elapsed, w))
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
    /// For [`Limiter::hit_reserved`]: bucket → (window start, attempts this node
    /// has counted in the database and not spent yet). Held across a reservation,
    /// so concurrent misses make one, not one each.
    reserved: tokio::sync::Mutex<HashMap<String, (i64, i64)>>,
}

/// Buckets [`Limiter::hit_reserved`] keeps a reservation for at most (beyond, the
/// map is emptied: the unspent shares stay counted, which errs on the strict side).
const MAX_RESERVED: usize = 10_000;

impl Limiter {
    /// A limiter for one kind of attempt (`login`, `verify`, …); its refusals are
    /// remembered in `blocks`.
    pub fn new(db: Db, scope: &'static str, rule: RateRule, blocks: std::sync::Arc<Blocks>) -> Self {
        Self { db, rule, scope, blocks, reserved: tokio::sync::Mutex::default() }
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

    /// [`Limiter::hit`] for callers that are many requests of one authenticated
    /// caller (`key`): the node counts a twentieth of the limit in the database at
    /// once and spends it from memory, so a busy caller costs one write per share,
    /// not one per request. All nodes together still admit at most the limit plus
    /// one share each per window; near the limit every attempt is counted singly.
    pub async fn hit_reserved(&self, key: &str, route: &str, now: i64) -> Result<(), u64> {
        let bucket = format!("{}:{key}", self.scope);
        if let Some(secs) = self.blocks.refuse(&bucket, route, now) {
            return Err(secs);
        }
        let w = i64::try_from(self.rule.window.as_millis()).unwrap_or(i64::MAX).max(1);
        let start = now - now.rem_euclid(w);
        let mut reserved = self.reserved.lock().await;
        if let Some((at, left)) = reserved.get_mut(&bucket)
            && *at == start
            && *left > 0
        {
            *left -= 1;
            return Ok(());
        }
        let share = (i64::from(self.rule.max) / 20).max(1);
        let counts = match self.db.rate_hit_n(&bucket, start, w, share).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "rate limiter unavailable; letting the attempt through");
                return Ok(());
            }
        };
        // The share fits: spend one now, the rest from memory. Only this attempt
        // fits: let it through and keep nothing. Not even that: refused.
        let left = if over(self.rule, counts, 0, now).is_none() {
            share - 1
        } else {
            let single = RateWindow { count: counts.count - (share - 1), ..counts };
            if let Some(retry) = over(self.rule, single, 0, now) {
                self.blocks.block(
                    bucket.clone(),
                    key.to_owned(),
                    route,
                    now + i64::try_from(retry).unwrap_or(1) * 1000,
                );
                return Err(retry);
            }
            0
        };
        if reserved.len() >= MAX_RESERVED {
            reserved.clear();
        }
        reserved.insert(bucket, (start, left));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_covers_the_sliding_window() {
        // 6th attempt 10 s into a fresh window: the window must end, and its weight
        // in the next one decay to 4 (6 × 40 s ÷ 60 s): 80 s in, 70 s from now.
        let s = retry_after_secs(5, 6, 0, 10_000, 60_000);
        assert!((50..=71).contains(&s), "{s}");
        // Just after a window boundary, the previous window still counts in full:
        // five attempts in it and one now are over a limit of five.
        let counts = crate::store::RateWindow { window_start: 60_000, count: 1, prev_count: 5 };
        assert!(over(RateRule { max: 5, window: std::time::Duration::from_secs(60) }, counts, 0, 60_100).is_some());
        // Over the limit only through the previous window: decays sooner.
        let s = retry_after_secs(5, 1, 10, 30_000, 60_000);
        assert!(s > 0 && s < 31, "{s}");
    }
}
