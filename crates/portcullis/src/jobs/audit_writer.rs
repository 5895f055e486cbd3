//! The audit writer: drains the buffer of [`crate::audit::Audit`], writing every
//! record already waiting in one transaction; at shutdown it empties the buffer
//! before it ends.

use crate::{
    audit::{AuditQueue, write, write_many},
    shutdown::Shutdown,
};

/// Runs until shutdown, then writes what is left.
pub async fn run(queue: AuditQueue, shutdown: Shutdown) {
    let AuditQueue { db, mut rx } = queue;
    loop {
        tokio::select! {
            biased;
            next = rx.recv() => match next {
                // Everything already waiting goes in the same transaction.
                Some(record) => {
                    let mut batch = vec![record];
                    while batch.len() < 256 {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    write_many(&db, &batch).await;
                }
                None => return,
            },
            _ = shutdown.wait() => {
                rx.close();
                while let Some(record) = rx.recv().await {
                    write(&db, &record).await;
                }
                return;
            }
        }
    }
}
