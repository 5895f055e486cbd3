//! The outbox worker: claims due messages, hands each to the deliverer of its
//! kind, and records the outcome, with exponential backoff between attempts.
//! Delivery is at least once (see the contract in `store::outbox`): a deliverer
//! must tolerate seeing a message again.

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc, time::Duration};

use crate::store::{Db, OutboxRow, OutboxStatus};

/// What a deliverer's attempt returns: `Err` with the reason to retry later.
pub type Attempt<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Delivers messages of one kind (mail through SMTP, a webhook over HTTP).
pub trait Deliver: Send + Sync {
    /// One attempt at delivering `message`.
    fn deliver<'a>(&'a self, message: &'a OutboxRow) -> Attempt<'a>;

    /// What to keep of a payload once the message is delivered or given up:
    /// `Some` replaces it (secrets erased), `None` keeps it as is.
    fn redacted(&self, _payload: &str) -> Option<String> {
        None
    }
}

/// Account tasks (a forgot or resend request, a change of address, a lock's
/// notice) are worked off by the account service (see `auth::tasks`): the lookup
/// happens here, not in the request.
pub struct AccountTasks(pub Arc<crate::auth::Auth>);

impl Deliver for AccountTasks {
    fn deliver<'a>(&'a self, message: &'a OutboxRow) -> Attempt<'a> {
        Box::pin(self.0.run_task(&message.payload))
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
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            batch: 32,
            max_attempts: 10,
            first_retry: Duration::from_secs(10),
        }
    }
}

/// The worker: deliverers by kind.
pub struct Outbox {
    db: Db,
    deliverers: HashMap<String, Arc<dyn Deliver>>,
    pace: Pace,
    /// When `/metrics` last got the outbox's depth (milliseconds).
    counted_at: std::sync::atomic::AtomicI64,
}

/// The worker refreshes the `portcullis_outbox_messages` gauge every this many polls.
const COUNT_EVERY_POLLS: i64 = 5;

impl Outbox {
    /// A worker over `db` with no deliverers yet.
    pub fn new(db: Db, pace: Pace) -> Self {
        Self { db, deliverers: HashMap::new(), pace, counted_at: std::sync::atomic::AtomicI64::new(0) }
    }

    /// Delivers messages of `kind` with `deliverer`.
    pub fn with(mut self, kind: &str, deliverer: Arc<dyn Deliver>) -> Self {
        self.deliverers.insert(kind.to_owned(), deliverer);
        self
    }

    /// One round: claims due messages of the kinds it can deliver and attempts
    /// each; how many were claimed.
    pub async fn round(&self) -> usize {
        let now = crate::clock::now_ms();
        self.count_messages(now).await;
        let lease = i64::try_from(self.pace.lease.as_millis()).unwrap_or(60_000);
        let kinds: Vec<&str> = self.deliverers.keys().map(String::as_str).collect();
        let claimed = match self.db.outbox_claim(&kinds, now, lease, self.pace.batch).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claiming outbox messages failed");
                return 0;
            }
        };
        for m in &claimed {
            let Some(deliverer) = self.deliverers.get(&m.kind) else { continue };
            // A lease that ran out while earlier messages were delivered belongs to
            // whoever claims the message next: leave it.
            if m.locked_until.is_some_and(|until| crate::clock::now_ms() >= until) {
                continue;
            }
            let outcome = deliverer.deliver(m).await;
            let now = crate::clock::now_ms();
            let delivered = outcome.is_ok();
            let (written, last) = match outcome {
                Ok(()) => (self.db.outbox_delivered(&m.id, m.attempts, now).await, true),
                Err(why) => {
                    let next =
                        (m.attempts < self.pace.max_attempts).then(|| now.saturating_add(self.backoff(m.attempts)));
                    if next.is_none() {
                        tracing::warn!(id = %m.id, kind = %m.kind, error = %why, "outbox message given up");
                    }
                    (self.db.outbox_failed(&m.id, m.attempts, &why, next).await, next.is_none())
                }
            };
            let counted = match (delivered, last) {
                (true, _) => "delivered",
                (false, true) => "failed",
                (false, false) => "retry",
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
        claimed.len()
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
                        let n = counts.iter().find(|(k, s, _)| k == kind && *s == status).map_or(0, |c| c.2);
                        metrics::gauge!("portcullis_outbox_messages", "kind" => kind.clone(), "status" => status.as_str())
                            .set(n as f64);
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

    /// Runs rounds every `pace.poll` until shutdown.
    pub async fn run(self, shutdown: crate::shutdown::Shutdown) {
        let me = Arc::new(self);
        let poll = me.pace.poll;
        let m = me.clone();
        super::every(
            poll,
            shutdown,
            move || {
                let m = m.clone();
                async move {
                    m.round().await;
                }
            },
            || async {},
        )
        .await;
    }
}
