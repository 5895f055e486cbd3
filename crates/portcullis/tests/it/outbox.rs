//! Store contracts of composed writes and the outbox, on both backends: a write
//! transaction lands whole or not at all; a message is claimed by one node at a
//! time; a claim whose node died is claimed again; the worker retries with backoff
//! and gives up.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use portcullis::{
    jobs::outbox::{Attempt, Deliver, Outbox, Pace},
    store::{Db, OutboxRow, OutboxStatus},
};
use serde_json::json;

use crate::common::{Backend, Data};

async fn open(data: &Data) -> Db {
    let db = Db::connect(&data.config().database_url()).await.unwrap();
    db.migrate().await.unwrap();
    db
}

async fn user(db: &Db) -> String {
    let new = portcullis::store::NewUser {
        id: portcullis::crypto::new_id("usr", 1),
        email: format!("{}@example.com", portcullis::crypto::new_id("u", 1).to_lowercase()),
        roles: vec!["member".into()],
        ..Default::default()
    };
    db.user_insert(&new, 1).await.unwrap().id
}

async fn write_transaction_is_all_or_nothing(backend: Backend) {
    let data = Data::new(&backend).await;
    let db = open(&data).await;
    let id = user(&db).await;
    // Dropped without commit: neither the change nor its message exists.
    let mut tx = db.write().await.unwrap();
    tx.user_set_password(&id, "$argon2id$dropped", 2).await.unwrap();
    let msg = tx.outbox_enqueue("mail.test", &json!({"to": id}), 2).await.unwrap();
    drop(tx);
    assert!(db.outbox_get(&msg).await.unwrap().is_none());
    assert_eq!(db.user_by_id(&id).await.unwrap().unwrap().password_hash, None);
    // Committed: both.
    let mut tx = db.write().await.unwrap();
    tx.user_set_password(&id, "$argon2id$kept", 3).await.unwrap();
    let msg = tx.outbox_enqueue("mail.test", &json!({"to": id}), 3).await.unwrap();
    tx.commit().await.unwrap();
    let row = db.outbox_get(&msg).await.unwrap().unwrap();
    assert_eq!((row.status, row.attempts, row.kind.as_str()), (OutboxStatus::Pending, 0, "mail.test"));
    assert_eq!(db.user_by_id(&id).await.unwrap().unwrap().password_hash.as_deref(), Some("$argon2id$kept"));
    db.close().await;
}

async fn enqueue(db: &Db, kind: &str, n: usize, now: i64) -> Vec<String> {
    let mut tx = db.write().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(tx.outbox_enqueue(kind, &json!({"n": i}), now).await.unwrap());
    }
    tx.commit().await.unwrap();
    ids
}

async fn one_claim_per_message_across_two_nodes(backend: Backend) {
    let data = Data::new(&backend).await;
    let (a, b) = (open(&data).await, open(&data).await);
    let now = portcullis::clock::now_ms();
    let ids = enqueue(&a, "webhook.test", 60, now).await;
    let claim_all = |db: Db| async move {
        let mut mine = Vec::new();
        loop {
            let got = db.outbox_claim(&["webhook.test"], &[], now, 60_000, 4).await.unwrap();
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|r| r.id));
        }
    };
    let (ra, rb) = tokio::join!(tokio::spawn(claim_all(a.clone())), tokio::spawn(claim_all(b.clone())));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let all: Vec<&String> = ra.iter().chain(rb.iter()).collect();
    let unique: HashSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), 60, "every message claimed once: {} by a, {} by b", ra.len(), rb.len());
    assert_eq!(unique.len(), 60);
    assert!(ids.iter().all(|i| unique.contains(i)));
    // Another kind is left alone.
    enqueue(&a, "mail.other", 1, now).await;
    assert!(a.outbox_claim(&["webhook.test"], &[], now, 60_000, 10).await.unwrap().is_empty());
    a.close().await;
    b.close().await;
}

async fn a_dead_claim_is_claimed_again(backend: Backend) {
    let data = Data::new(&backend).await;
    let now = portcullis::clock::now_ms();
    let node = open(&data).await;
    let ids = enqueue(&node, "mail.test", 1, now).await;
    let first = node.outbox_claim(&["mail.test"], &[], now, 30_000, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    // The node dies mid-delivery.
    node.close().await;
    let restarted = open(&data).await;
    assert!(restarted.outbox_claim(&["mail.test"], &[], now + 1_000, 30_000, 10).await.unwrap().is_empty(), "leased");
    let again = restarted.outbox_claim(&["mail.test"], &[], now + 30_001, 30_000, 10).await.unwrap();
    assert_eq!(again.iter().map(|r| (r.id.as_str(), r.attempts)).collect::<Vec<_>>(), vec![(ids[0].as_str(), 2)]);
    // The dead node's claim (attempt 1) can no longer record an outcome.
    assert!(!restarted.outbox_failed(&ids[0], 1, "late", None).await.unwrap());
    assert!(restarted.outbox_delivered(&ids[0], 2, now + 30_002).await.unwrap());
    let row = restarted.outbox_get(&ids[0]).await.unwrap().unwrap();
    assert_eq!((row.status, row.delivered_at), (OutboxStatus::Delivered, Some(now + 30_002)));
    assert!(restarted.outbox_claim(&["mail.test"], &[], now + 90_000, 30_000, 10).await.unwrap().is_empty());
    restarted.close().await;
}

/// Fails the first `failures` attempts of each message, then succeeds.
struct Flaky {
    failures: usize,
    seen: AtomicUsize,
}

impl Deliver for Flaky {
    fn deliver<'a>(&'a self, _message: &'a OutboxRow) -> Attempt<'a> {
        Box::pin(async move {
            let n = self.seen.fetch_add(1, Ordering::SeqCst);
            if n < self.failures { Err(format!("attempt {} refused", n + 1).into()) } else { Ok(()) }
        })
    }
}

async fn the_worker_retries_then_gives_up(backend: Backend) {
    let data = Data::new(&backend).await;
    let db = open(&data).await;
    let now = portcullis::clock::now_ms();
    let ok = enqueue(&db, "mail.flaky", 1, now).await;
    let doomed = enqueue(&db, "mail.doomed", 1, now).await;
    let pace = Pace {
        poll: Duration::from_millis(20),
        lease: Duration::from_secs(30),
        batch: 10,
        max_attempts: 3,
        first_retry: Duration::from_millis(30),
        concurrency: 4,
        drain: Duration::from_secs(5),
    };
    let worker = Outbox::new(db.clone(), pace)
        .with("mail.flaky", Arc::new(Flaky { failures: 2, seen: AtomicUsize::new(0) }))
        .with("mail.doomed", Arc::new(Flaky { failures: usize::MAX, seen: AtomicUsize::new(0) }));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        worker.round().await;
        let a = db.outbox_get(&ok[0]).await.unwrap().unwrap();
        let b = db.outbox_get(&doomed[0]).await.unwrap().unwrap();
        if a.status != OutboxStatus::Pending && b.status != OutboxStatus::Pending {
            assert_eq!((a.status, a.attempts, a.last_error), (OutboxStatus::Delivered, 3, None));
            assert_eq!((b.status, b.attempts), (OutboxStatus::Failed, 3));
            assert_eq!(b.last_error.as_deref(), Some("attempt 3 refused"));
            break;
        }
        // Backoff: a retry is not due at once (once the failed attempt, which runs
        // in the background, has released its claim).
        if a.status == OutboxStatus::Pending && a.attempts > 0 && a.locked_until.is_none() {
            assert!(a.next_attempt_at > now, "{a:?}");
        }
        assert!(std::time::Instant::now() < deadline, "{a:?} {b:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    db.close().await;
}

crate::backend_tests!(
    write_transaction_is_all_or_nothing,
    one_claim_per_message_across_two_nodes,
    a_dead_claim_is_claimed_again,
    the_worker_retries_then_gives_up,
);
