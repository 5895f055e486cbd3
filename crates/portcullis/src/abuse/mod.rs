//! Abuse protection: per-client rate limits and progressive account lockout, both
//! kept in the database so every node enforces the same numbers, and the client
//! address as seen through trusted proxies only.
//!
//! Rate limits use a sliding window (the current fixed window plus the previous one
//! weighted by how much of it still overlaps), counted with one atomic upsert. Once a
//! client is over the limit, this node remembers it until `Retry-After` ([`Blocks`], in `rate`),
//! so a flood costs one database write per window, not one per request, and leaves
//! one summary audit record per address and route instead of one per request.
//!
//! Lockout is keyed by (normalised email, client address), not by account: an
//! attacker's failures lock out the attacker's address, never the owner (OWASP ASVS
//! 2.2.1), and an unknown email locks exactly like a real one, so lockout cannot be
//! used to learn which accounts exist. A ceiling over all addresses
//! ([`ceiling_bucket`], in `lockout`) stops a botnet; addresses the owner signed in from pass it.

mod address;
mod lockout;
mod rate;

pub use address::{client_ip, rate_key};
pub use lockout::{LockoutPolicy, Reservation, ceiling_bucket};
pub use rate::{Blocks, Limiter, Summary, count, count_announced, over, retry_after_secs};
