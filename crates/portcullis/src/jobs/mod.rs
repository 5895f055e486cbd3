//! Background jobs, in one place: each runs until the shutdown signal, and
//! [`start`] spawns them from one list whose order is the order they drain in at
//! shutdown (so the audit writer, last, records what the others still had).

pub mod audit_writer;
pub mod housekeeping;
pub mod outbox;

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;

use crate::{
    abuse::Blocks,
    api_keys::ApiKeys,
    audit::{Audit, AuditQueue, Event},
    ctx::RequestCtx,
    keys::KeyManager,
    shutdown::Shutdown,
    store::Db,
};

/// One background job of a server.
pub enum Job {
    /// One `rate_limited` audit record per client address and route for each block
    /// that ended (every second, and every open block at shutdown).
    BlockSummaries {
        /// The node's refusals from memory.
        blocks: Arc<Blocks>,
        /// Where the summaries go.
        audit: Audit,
    },
    /// API-key last-used times kept in memory, written every `every` and at shutdown.
    KeyUsage {
        /// The key validator holding them.
        keys: Arc<ApiKeys>,
        /// How often.
        every: Duration,
    },
    /// Signing keys re-read every `every`, so rotations by other processes land.
    KeyReload {
        /// The key manager.
        keys: Arc<KeyManager>,
        /// How often.
        every: Duration,
    },
    /// Purges: audit retention, rate-limit windows, lockouts, sign-in addresses,
    /// spent codes and assertion ids, ended sessions.
    Housekeeping {
        /// The database.
        db: Db,
        /// How long audit records are kept.
        retention: Duration,
        /// How often.
        every: Duration,
    },
    /// Outbox messages delivered by their kind's deliverer (no kind has one yet:
    /// mail and webhooks will be the first).
    Outbox(outbox::Outbox),
    /// Sessions that ran out, announced as `session.ended` every `every`.
    SessionExpiry {
        /// The database.
        db: Db,
        /// How often.
        every: Duration,
    },
    /// Buffered audit records, written in batches; drains the buffer at shutdown.
    AuditWriter(AuditQueue),
}

/// Spawns every job; the handles come back in the same order.
pub fn start(jobs: Vec<Job>, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
    jobs.into_iter().map(|job| job.spawn(shutdown.clone())).collect()
}

/// Calls `tick` every `every` until shutdown; `last` once more then.
async fn every<F, L>(every: Duration, shutdown: Shutdown, mut tick: impl FnMut() -> F, last: impl FnOnce() -> L)
where
    F: std::future::Future<Output = ()>,
    L: std::future::Future<Output = ()>,
{
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => tick().await,
            _ = shutdown.wait() => break,
        }
    }
    last().await;
}

impl Job {
    fn spawn(self, shutdown: Shutdown) -> JoinHandle<()> {
        match self {
            Job::BlockSummaries { blocks, audit } => tokio::spawn(async move {
                let (b, a) = (blocks.clone(), audit.clone());
                every(
                    Duration::from_secs(1),
                    shutdown,
                    move || summarise(b.clone(), a.clone(), false),
                    move || summarise(blocks, audit, true),
                )
                .await
            }),
            Job::KeyUsage { keys, every: period } => tokio::spawn(async move {
                let k = keys.clone();
                every(period, shutdown, move || flush(k.clone()), move || flush(keys)).await
            }),
            Job::KeyReload { keys, every: period } => {
                tokio::spawn(async move { every(period, shutdown, move || reload(keys.clone()), || async {}).await })
            }
            Job::Housekeeping { db, retention, every: period } => tokio::spawn(async move {
                every(period, shutdown, move || housekeeping::run(db.clone(), retention), || async {}).await
            }),
            Job::SessionExpiry { db, every: period } => {
                tokio::spawn(async move { every(period, shutdown, move || expired(db.clone()), || async {}).await })
            }
            Job::Outbox(worker) => tokio::spawn(worker.run(shutdown)),
            Job::AuditWriter(queue) => tokio::spawn(audit_writer::run(queue, shutdown)),
        }
    }
}

/// One sweep of sessions that ran out: batches of 500, each its own commit, until
/// one comes back short, at most 50,000 a sweep (so a backlog is announced before
/// housekeeping purges the sessions a day after they end).
async fn expired(db: Db) {
    const BATCH: usize = 500;
    for _ in 0..100 {
        match crate::events::announce_expired(&db, crate::clock::now_ms(), BATCH as i64).await {
            Ok(n) if n == BATCH => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "announcing expired sessions failed");
                return;
            }
        }
    }
}

async fn flush(keys: Arc<ApiKeys>) {
    keys.flush_last_used().await;
}

async fn reload(keys: Arc<KeyManager>) {
    if let Err(e) = keys.reload().await {
        tracing::warn!(error = %e, "reloading signing keys failed; keeping the previous set");
    }
}

/// Writes the summaries of the blocks that ended (all of them when `all`).
async fn summarise(blocks: Arc<Blocks>, audit: Audit, all: bool) {
    let now = crate::clock::now_ms();
    for s in blocks.take_closed(now, all) {
        let ctx = RequestCtx { ip: Some(s.address), route: Some(s.route.clone()), now, ..Default::default() };
        let reason = format!("{} {}", s.route, s.refused);
        audit.record(&ctx, Event::failed("rate_limited", None, &reason)).await;
    }
}
