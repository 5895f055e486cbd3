//! Mail: what a message says ([`templates`]), how it leaves ([`transport`]), and
//! what goes into the outbox. A message is queued as an outbox row (kind
//! [`KIND`]) in the same transaction as the change it announces, and sent by the
//! outbox worker with retries; a request never waits for SMTP.
//!
//! A queued message keeps its secrets (the link, the code) sealed under the master
//! key, bound to the recipient and template, and they are erased from the row once
//! the message is sent or given up: the outbox (and the admin list of failed mail)
//! never shows them. Links are built from the configured issuer, never from a
//! request's `Host`.

pub mod templates;
pub mod transport;

use std::sync::Arc;

use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

pub use templates::Template;
use templates::Templates;
use transport::Transport;

use crate::{config::Config, crypto::MasterKey};

/// The outbox kind of mail.
pub const KIND: &str = "mail";

/// The parts of a message only its recipient may see.
#[derive(Default, Serialize, Deserialize)]
pub struct Secrets {
    /// A link holding a one-time token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// A one-time code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// A message as the outbox holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    /// The recipient's address.
    pub to: String,
    /// Which message.
    pub template: Template,
    /// For `email_changed`: the new address (a fact, not a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_email: Option<String>,
    /// For operator notices: what it is about (an endpoint's id and URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// [`Secrets`], sealed; `None` once erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

fn seal_context(to: &str, template: Template) -> String {
    format!("mail:{}:{to}", template.name())
}

/// Composes, queues and sends mail.
pub struct Mailer {
    from: Mailbox,
    product: String,
    issuer: String,
    templates: Templates,
    transport: Transport,
    master: Arc<MasterKey>,
}

impl Mailer {
    /// Everything from config; fails at start on a bad sender, URL or template.
    pub fn new(cfg: &Config, issuer: &str, master: Arc<MasterKey>) -> anyhow::Result<Self> {
        let from: Mailbox = cfg
            .email
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("email.from {:?} is not an address: {e}", cfg.email.from))?;
        let reveal = issuer_is_loopback(issuer);
        Ok(Self {
            from,
            product: cfg.email.product_name.clone(),
            issuer: issuer.trim_end_matches('/').to_owned(),
            templates: Templates::load(cfg.email.templates_dir.as_deref())?,
            transport: Transport::from_config(&cfg.email, reveal)?,
            master,
        })
    }

    /// Whether the issuer is loopback: local development, where the log transport
    /// shows whole messages.
    pub fn local_development(&self) -> bool {
        issuer_is_loopback(&self.issuer)
    }

    /// Whether mail really leaves (anything but the log transport).
    pub fn sends(&self) -> bool {
        matches!(self.transport, Transport::Smtp(_))
    }

    /// The MAC under which a one-time code is stored (see `MasterKey::mac`).
    pub fn mac(&self, context: &str, code: &str) -> String {
        self.master.mac(context, code)
    }

    /// A link to one of our pages with a one-time token, from the issuer.
    pub fn link(&self, path: &str, token: &str) -> String {
        format!("{}{path}?token={token}", self.issuer)
    }

    /// The outbox payload of a message; secrets sealed.
    pub fn queue(
        &self,
        to: &str,
        template: Template,
        new_email: Option<&str>,
        secrets: &Secrets,
    ) -> anyhow::Result<serde_json::Value> {
        let sealed = if secrets.link.is_some() || secrets.code.is_some() {
            Some(self.master.seal(&seal_context(to, template), &serde_json::to_vec(secrets)?)?)
        } else {
            None
        };
        let q = Queued { to: to.to_owned(), template, new_email: new_email.map(str::to_owned), detail: None, sealed };
        Ok(serde_json::to_value(q)?)
    }

    /// The outbox payload of a notice to an operator about `detail` (no secrets).
    pub fn queue_notice(&self, to: &str, template: Template, detail: &str) -> serde_json::Value {
        let q = Queued { to: to.to_owned(), template, new_email: None, detail: Some(detail.to_owned()), sealed: None };
        serde_json::to_value(q).unwrap_or_default()
    }

    /// Renders and sends a queued message: the outbox's deliverer. What the server
    /// answered, or why it failed (to retry later).
    pub async fn send(&self, payload: &str) -> Result<String, String> {
        let q: Queued = serde_json::from_str(payload).map_err(|e| format!("unreadable mail payload: {e}"))?;
        let secrets = match &q.sealed {
            Some(s) => {
                let plain = self
                    .master
                    .open(&seal_context(&q.to, q.template), s)
                    .map_err(|e| format!("cannot open the sealed parts: {e}"))?;
                serde_json::from_slice(&plain).map_err(|e| format!("unreadable sealed parts: {e}"))?
            }
            None => Secrets::default(),
        };
        let ctx = minijinja::context! {
            product => self.product,
            email => q.to,
            issuer => self.issuer,
            link => secrets.link,
            code => secrets.code,
            new_email => q.new_email,
            detail => q.detail,
        };
        let rendered = self.templates.render(q.template, ctx).map_err(|e| e.to_string())?;
        self.transport.send(&self.from, &q.to, &rendered).await
    }

    /// Sends the test message to `to` now: what the server answered.
    pub async fn send_test(&self, to: &str) -> Result<String, String> {
        let payload = self.queue(to, Template::Test, None, &Secrets::default()).map_err(|e| e.to_string())?;
        self.send(&payload.to_string()).await
    }

    /// The recipient and template of a queued message, without its secrets.
    pub fn describe(payload: &str) -> Option<Queued> {
        let mut q: Queued = serde_json::from_str(payload).ok()?;
        q.sealed = None;
        Some(q)
    }

    /// A queued message without its secrets, to keep once it is sent or given up.
    pub fn redacted(payload: &str) -> Option<String> {
        let mut q: Queued = serde_json::from_str(payload).ok()?;
        q.sealed.take()?;
        serde_json::to_string(&q).ok()
    }
}

/// Whether the issuer is a loopback URL: local development, where the log may
/// show links and codes.
fn issuer_is_loopback(issuer: &str) -> bool {
    url::Url::parse(issuer).ok().and_then(|u| u.host_str().map(crate::clients::is_loopback)).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_sealed_to_their_recipient_and_erased() {
        let master = Arc::new(MasterKey::from_bytes(&[7; 32]).unwrap());
        let cfg = Config::default();
        let m = Mailer::new(&cfg, "http://127.0.0.1:8080/", master).unwrap();
        assert_eq!(m.link("/verify-email", "abc"), "http://127.0.0.1:8080/verify-email?token=abc");
        let secrets = Secrets { link: Some("https://x/secret-link".into()), code: Some("123456".into()) };
        let v = m.queue("ann@example.com", Template::VerifyEmail, None, &secrets).unwrap();
        let text = v.to_string();
        assert!(!text.contains("secret-link") && !text.contains("123456"), "{text}");
        // Moved to another recipient, the sealed parts do not open.
        let mut moved: Queued = serde_json::from_value(v.clone()).unwrap();
        moved.to = "eve@example.com".into();
        let ctx = seal_context(&moved.to, moved.template);
        assert!(m.master.open(&ctx, moved.sealed.as_deref().unwrap()).is_err());
        let kept = Mailer::redacted(&text).unwrap();
        assert!(!kept.contains("sealed") && kept.contains("ann@example.com"));
        assert!(Mailer::redacted(&kept).is_none(), "nothing left to erase");
    }

    #[test]
    fn links_and_codes_reach_the_log_only_on_loopback() {
        assert!(issuer_is_loopback("http://127.0.0.1:8080"));
        assert!(issuer_is_loopback("http://localhost:3000/"));
        assert!(!issuer_is_loopback("https://auth.example.com"));
    }
}
