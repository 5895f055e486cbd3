//! The outbox worker: claims due messages, hands each to the deliverer of its
//! kind, and records the outcome, with exponential backoff between attempts (or
//! the deliverer's own schedule). Delivery is at least once (see the contract in
//! `store::outbox`): a deliverer must tolerate seeing a message again.
//!
//! Deliveries run concurrently, at most `Pace::concurrency` at once per node: one
//! slow receiver holds one slot, not the queue. A deliverer may also bound itself
//! (webhooks do, per endpoint) by deferring a message it cannot start now.

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use crate::store::{Db, OutboxRow, OutboxStatus};

/// What a deliverer's attempt returns: `Err` says why it failed and when to try
/// again.
pub type Attempt<'a> = Pin<Box<dyn Future<Output = Result<(), Failed>> + Send + 'a>>;

/// A failed (or postponed) attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Why, as the outbox row keeps it.
    pub why: String,
    /// When to try again.
    pub next: Next,
}

/// When a failed message is attempted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// After the worker's doubling backoff, until `Pace::max_attempts`.
    Backoff,
    /// After this long (the deliverer's own schedule).
    After(Duration),
    /// Never: the message is given up now.
    Never,
    /// Not attempted at all (the deliverer is busy): again after this long, without
    /// counting an attempt.
    Defer(Duration),
}

impl From<String> for Failed {
    fn from(why: String) -> Self {
        Self { why, next: Next::Backoff }
    }
}

/// Delivers messages of one kind (mail through SMTP, a webhook over HTTP).
pub trait Deliver: Send + Sync {
    /// One attempt at delivering `message`.
    fn deliver<'a>(&'a self, message: &'a OutboxRow) -> Attempt<'a>;

    /// What to keep of a payload once the message is delivered or given up:
    /// `Some` replaces it (secrets erased), `None` keeps it as is.
    fn redacted(&self, _payload: &str) -> Option<String> {
        None
    }

    /// Targets (receivers) this deliverer cannot start more deliveries to now:
    /// their messages are not claimed until a place frees up.
    fn saturated(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Account tasks (a forgot or resend request, a change of address, a lock's
/// notice) are worked off by the account service (see `auth::tasks`): the lookup
/// happens here, not in the request.
pub struct AccountTasks(pub Arc<crate::auth::Auth>);

impl Deliver for AccountTasks {
    fn deliver<'a>(&'a self, message: &'a OutboxRow) -> Attempt<'a> {
        Box::pin(async move { self.0.run_task(&message.payload).await.map_err(Failed::from) })
    }
}

/// Mail is delivered by the mailer; its secrets are erased after the last attempt.
impl Deliver for crate::mail::Mailer {
    fn deliver<'a>(&'a self, message: &'a OutboxRow) -> Attempt<'a> {
        Box::pin(async move {
            let answer = self.send(&message.payload).await?;
            tracing::info!(id = %message.id, answer = %answer, "mail sent");
            Ok(())
        })
    }

    fn redacted(&self, payload: &str) -> Option<String> {
        crate::mail::Mailer::redacted(payload)
    }
}

/// SMS codes are sent by the SMS provider; the code is erased after the last
/// attempt.
impl Deliver for crate::sms::Sms {
    fn deliver<'a>(&'a self, message: &'a OutboxRow) -> Attempt<'a> {
        Box::pin(async move {
            // A code past its life is worth nothing to its user: it is dropped (and
            // erased) rather than texted late or kept for retries.
            if crate::clock::now_ms() - message.created_at > crate::auth::SMS_CODE_TTL_MS {
                tracing::warn!(id = %message.id, "an SMS code expired before it could be sent; dropped");
                return Ok(());
            }
            let answer = self.send(&message.id, &message.payload).await?;
            tracing::info!(id = %message.id, answer = %answer, "SMS sent");
            Ok(())
        })
    }

    fn redacted(&self, payload: &str) -> Option<String> {
        crate::sms::Sms::redacted(payload)
    }
}

/// How the worker paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// How often it looks for due messages.
    pub poll: Duration,
    /// How long a claim holds a message (longer than any delivery takes).
    pub lease: Duration,
    /// Messages claimed at once.
    pub batch: i64,
    /// Attempts before a message is given up.
    pub max_attempts: i64,
    /// The first retry's delay; each later one doubles, up to an hour.
    pub first_retry: Duration,
    /// Deliveries in flight at once on this node.
    pub concurrency: usize,
    /// How long a stopping worker waits for the deliveries in flight (longer than
    /// the slowest deliverer's timeout).
    pub drain: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            batch: 32,
            max_attempts: 10,
            first_retry: Duration::from_secs(10),
            concurrency: 16,
            drain: Duration::from_secs(10),
        }
    }
}

/// The worker: deliverers by kind.
#[derive(Clone)]
pub struct Outbox(Arc<Inner>);

struct Inner {
    db: Db,
    deliverers: HashMap<String, Arc<dyn Deliver>>,
    pace: Pace,
    /// One permit per delivery in flight.
    slots: Arc<Semaphore>,
    /// When `/metrics` last got the outbox's depth (milliseconds).
    counted_at: std::sync::atomic::AtomicI64,
}

/// The worker refreshes the `portcullis_outbox_messages` gauge every this many polls.
const COUNT_EVERY_POLLS: i64 = 5;

impl Outbox {
    /// A worker over `db` with no deliverers yet.
    pub fn new(db: Db, pace: Pace) -> Self {
        let slots = Arc::new(Semaphore::new(pace.concurrency.max(1)));
        Self(Arc::new(Inner {
            db,
            deliverers: HashMap::new(),
            pace,
            slots,
            counted_at: std::sync::atomic::AtomicI64::new(0),
        }))
    }

    /// Delivers messages of `kind` with `deliverer`.
    pub fn with(self, kind: &str, deliverer: Arc<dyn Deliver>) -> Self {
        let me = &self.0;
        let mut deliverers = me.deliverers.clone();
        deliverers.insert(kind.to_owned(), deliverer);
        Self(Arc::new(Inner {
            db: me.db.clone(),
            deliverers,
            pace: me.pace,
            slots: me.slots.clone(),
            counted_at: std::sync::atomic::AtomicI64::new(0),
        }))
    }

    /// One round: claims as many due messages of the kinds it can deliver as it
    /// has free slots, and starts an attempt at each; how many were claimed. The
    /// attempts finish in the background.
    pub async fn round(&self) -> usize {
        let me = &self.0;
        let now = crate::clock::now_ms();
        me.count_messages(now).await;
        let free = i64::try_from(me.slots.available_permits()).unwrap_or(0).min(me.pace.batch);
        if free == 0 {
            return 0;
        }
        let lease = i64::try_from(me.pace.lease.as_millis()).unwrap_or(60_000);
        let kinds: Vec<&str> = me.deliverers.keys().map(String::as_str).collect();
        let skip: Vec<String> = me.deliverers.values().flat_map(|d| d.saturated()).collect();
        let claimed = match me.db.outbox_claim(&kinds, &skip, now, lease, free).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claiming outbox messages failed");
                return 0;
            }
        };
        let n = claimed.len();
        for m in claimed {
            let Ok(slot) = me.slots.clone().try_acquire_owned() else {
                // Cannot happen (no more were claimed than slots were free); the
                // lease runs out and the message is claimed again.
                continue;
            };
            let me = self.0.clone();
            tokio::spawn(async move {
                me.attempt(m).await;
                drop(slot);
            });
        }
        n
    }

    /// Runs rounds every `pace.poll` until shutdown, then lets the deliveries in
    /// flight finish (for a few seconds; a cut one is attempted again later).
    pub async fn run(self, shutdown: crate::shutdown::Shutdown) {
        let poll = self.0.pace.poll;
        let me = self.clone();
        super::every(
            poll,
            shutdown,
            move || {
                let m = me.clone();
                async move {
                    m.round().await;
                }
            },
            || async {},
        )
        .await;
        let all = u32::try_from(self.0.pace.concurrency.max(1)).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.0.pace.drain, self.0.slots.acquire_many(all)).await.is_err() {
            tracing::warn!("outbox deliveries still in flight at shutdown; they will be attempted again");
        }
    }
}

impl Inner {
    /// One attempt at a claimed message, and its outcome recorded.
    async fn attempt(&self, m: OutboxRow) {
        let Some(deliverer) = self.deliverers.get(&m.kind) else { return };
        // A lease that ran out before the attempt began belongs to whoever claims
        // the message next: leave it.
        if m.locked_until.is_some_and(|until| crate::clock::now_ms() >= until) {
            return;
        }
        let outcome = deliverer.deliver(&m).await;
        let now = crate::clock::now_ms();
        let (written, last, counted) = match outcome {
            Ok(()) => (self.db.outbox_delivered(&m.id, m.attempts, now).await, true, "delivered"),
            Err(Failed { next: Next::Defer(wait), .. }) => {
                let at = now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(1000));
                if let Err(e) = self.db.outbox_defer(&m.id, m.attempts, at).await {
                    tracing::warn!(error = %e, id = %m.id, "postponing an outbox message failed");
                }
                return;
            }
            Err(Failed { why, next }) => {
                let after = match next {
                    Next::Backoff => (m.tries() < self.pace.max_attempts).then(|| self.backoff(m.tries())),
                    Next::After(d) => Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                    Next::Never | Next::Defer(_) => None,
                };
                let next_at = after.map(|a| now.saturating_add(a));
                if next_at.is_none() {
                    tracing::warn!(id = %m.id, kind = %m.kind, error = %why, "outbox message given up");
                }
                let counted = if next_at.is_none() { "failed" } else { "retry" };
                (self.db.outbox_failed(&m.id, m.attempts, &why, next_at).await, next_at.is_none(), counted)
            }
        };
        metrics::counter!("portcullis_outbox_attempts_total", "kind" => m.kind.clone(), "outcome" => counted)
            .increment(1);
        match written {
            Ok(true) if last => {
                if let Some(kept) = deliverer.redacted(&m.payload)
                    && let Err(e) = self.db.outbox_set_payload(&m.id, &kept).await
                {
                    tracing::warn!(error = %e, id = %m.id, "erasing the secrets of an outbox message failed");
                }
            }
            Ok(true) => {}
            Ok(false) => tracing::info!(id = %m.id, "outbox outcome not recorded: a later claim holds the message"),
            // The lease runs out and the message is attempted again: at least once.
            Err(e) => tracing::warn!(error = %e, id = %m.id, "recording an outbox outcome failed"),
        }
    }

    /// Every few seconds, the outbox's depth by kind and status into `/metrics`
    /// (`portcullis_outbox_messages`; the whole cluster's, as the table is shared).
    async fn count_messages(&self, now: i64) {
        use std::sync::atomic::Ordering;
        let last = self.counted_at.load(Ordering::Relaxed);
        let every = i64::try_from(self.pace.poll.as_millis()).unwrap_or(1000).saturating_mul(COUNT_EVERY_POLLS);
        if now - last < every
            || self.counted_at.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return;
        }
        match self.db.outbox_counts().await {
            Ok(counts) => {
                for status in [OutboxStatus::Pending, OutboxStatus::Delivered, OutboxStatus::Failed] {
                    for kind in self.deliverers.keys() {
                        let line = counts.iter().find(|c| &c.kind == kind && c.status == status);
                        let n = line.map_or(0, |c| c.messages);
                        metrics::gauge!("portcullis_outbox_messages", "kind" => kind.clone(), "status" => status.as_str())
                            .set(n as f64);
                        if status == OutboxStatus::Pending {
                            let retrying = line.map_or(0, |c| c.retried);
                            metrics::gauge!("portcullis_outbox_retry_backlog", "kind" => kind.clone())
                                .set(retrying as f64);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "counting outbox messages failed"),
        }
    }

    /// Milliseconds before attempt `attempts + 1`: doubling from the first retry,
    /// at most an hour.
    fn backoff(&self, attempts: i64) -> i64 {
        let first = i64::try_from(self.pace.first_retry.as_millis()).unwrap_or(10_000);
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(0);
        first.saturating_mul(1_i64 << doublings).min(3_600_000)
    }
}
