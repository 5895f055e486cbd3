//! Account work done by the outbox worker instead of the request: whatever would
//! take longer for an address that has an account (a lookup, a token, a mail) is
//! queued as a [`Task`], one outbox row alike for every address, so a request's
//! answer, time and work say nothing about which addresses have accounts.

use serde::{Deserialize, Serialize};

use super::{Auth, AuthError};

/// The outbox kind of account tasks.
pub const TASK_KIND: &str = "account.task";

/// One piece of queued account work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// A forgot-password request for `email`.
    Forgot {
        /// The normalised address asked about.
        email: String,
    },
    /// A request for a new verification of `email`.
    Resend {
        /// The normalised address asked about.
        email: String,
    },
    /// A change of address of `user_id` to `email`.
    ChangeEmail {
        /// Whose account.
        user_id: String,
        /// The normalised new address.
        email: String,
    },
    /// The lock `key` tripped; `user_id` if an account has that address.
    Locked {
        /// The lock key (see `lock_key`).
        key: String,
        /// The account, if any.
        user_id: Option<String>,
    },
}

impl Auth {
    /// Queues `task` in its own commit.
    pub(super) async fn queue_task(&self, task: &Task, now: i64) -> Result<(), AuthError> {
        let payload = serde_json::to_value(task).map_err(|e| AuthError::Internal(e.to_string()))?;
        let mut tx = self.db.write().await?;
        tx.outbox_enqueue(TASK_KIND, &payload, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Does a queued task (the outbox's deliverer for [`TASK_KIND`]); `Err` to
    /// retry later. At least once: each task tolerates being done again (a new
    /// link retires the previous one).
    pub async fn run_task(&self, payload: &str) -> Result<(), String> {
        let task: Task = serde_json::from_str(payload).map_err(|e| format!("unreadable account task: {e}"))?;
        let now = crate::clock::now_ms();
        let done = match &task {
            Task::Forgot { email } => self.forgot_process(email, now).await,
            Task::Resend { email } => self.resend_process(email, now).await,
            Task::ChangeEmail { user_id, email } => self.change_email_process(user_id, email, now).await,
            Task::Locked { key, user_id } => self.locked_process(key, user_id.as_deref(), now).await,
        };
        done.map_err(|e| e.to_string())
    }
}
