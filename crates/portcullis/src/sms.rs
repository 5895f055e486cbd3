//! SMS codes: what a message says, and how it leaves — Twilio's Messages API, or
//! a JSON POST signed with the Standard Webhooks scheme to an operator's own
//! gateway. Like mail, a code is queued in the outbox (kind [`KIND`]) in the
//! commit that stores its HMAC, sealed under the master key, sent by the outbox
//! worker through the guarded outbound client, and erased from the row once sent
//! or given up.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    config::{SmsConfig, SmsProvider},
    crypto::{self, MasterKey, Secret},
    outbound::Outbound,
};

/// The outbox kind of SMS codes.
pub const KIND: &str = "sms";

/// Where codes go.
enum Provider {
    Twilio { messages_url: String, sid: String, token: Secret, from: String },
    Webhook { url: String, key: Vec<u8> },
}

/// An SMS as the outbox holds it: the number and code sealed, a masked number for
/// people reading the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    /// The number, masked (`+1••••••4567`).
    pub to: String,
    /// `sign_in` or `enrolment`.
    pub purpose: String,
    /// [`Sealed`], sealed; `None` once erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    number: String,
    code: String,
}

const SEAL: &str = "sms";

/// `number` as stored and sent: E.164 (`+`, country code, at most 15 digits),
/// with spaces, dots, dashes and parentheses dropped; `None` if it is not one.
pub fn e164(number: &str) -> Option<String> {
    let out: String = number.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let digits = out.strip_prefix('+')?;
    let ok = (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    ok.then_some(out)
}

/// What the user sees of a number: its country code's first digit and its last
/// four.
pub fn masked(number: &str) -> String {
    let n = number.chars().count();
    number.chars().enumerate().map(|(i, c)| if i < 2 || i + 4 >= n { c } else { '•' }).collect()
}

/// Composes, queues and sends SMS codes.
pub struct Sms {
    provider: Provider,
    product: String,
    outbound: Outbound,
    master: Arc<MasterKey>,
}

impl Sms {
    /// The configured sender; `None` while `sms.provider = "none"`. Fails at start
    /// on an incomplete configuration.
    pub fn from_config(
        cfg: &SmsConfig,
        product: &str,
        outbound: Outbound,
        master: Arc<MasterKey>,
    ) -> anyhow::Result<Option<Self>> {
        let provider = match cfg.provider {
            SmsProvider::None => return Ok(None),
            SmsProvider::Twilio => {
                let (Some(sid), Some(file), Some(from)) = (&cfg.account_sid, &cfg.auth_token_file, &cfg.from) else {
                    anyhow::bail!("sms.provider = \"twilio\" needs sms.account_sid, sms.auth_token_file and sms.from");
                };
                let token = std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("cannot read sms.auth_token_file {}: {e}", file.display()))?;
                let base = cfg.base_url.trim_end_matches('/');
                url::Url::parse(base).map_err(|e| anyhow::anyhow!("sms.base_url {base:?}: {e}"))?;
                Provider::Twilio {
                    messages_url: format!("{base}/2010-04-01/Accounts/{sid}/Messages.json"),
                    sid: sid.clone(),
                    token: Secret::new(token.trim()),
                    from: from.clone(),
                }
            }
            SmsProvider::Webhook => {
                let (Some(url), Some(secret)) = (&cfg.webhook_url, &cfg.webhook_secret) else {
                    anyhow::bail!("sms.provider = \"webhook\" needs sms.webhook_url and sms.webhook_secret");
                };
                url::Url::parse(url).map_err(|e| anyhow::anyhow!("sms.webhook_url {url:?}: {e}"))?;
                let key = crypto::webhook_key(secret).map_err(|e| anyhow::anyhow!("sms.webhook_secret: {e}"))?;
                Provider::Webhook { url: url.clone(), key }
            }
        };
        Ok(Some(Self { provider, product: product.to_owned(), outbound, master }))
    }

    /// The outbox payload of a code for `number`; number and code sealed.
    pub fn queue(&self, number: &str, code: &str, purpose: &str) -> anyhow::Result<serde_json::Value> {
        let secret = Sealed { number: number.to_owned(), code: code.to_owned() };
        let sealed = self.master.seal(SEAL, &serde_json::to_vec(&secret)?)?;
        let q = Queued { to: masked(number), purpose: purpose.to_owned(), sealed: Some(sealed) };
        Ok(serde_json::to_value(q)?)
    }

    /// Sends a queued code (`id`: the outbox message, the webhook's stable id);
    /// what the provider answered, or why to retry.
    pub async fn send(&self, id: &str, payload: &str) -> Result<String, String> {
        let q: Queued = serde_json::from_str(payload).map_err(|e| format!("unreadable SMS payload: {e}"))?;
        let sealed = q.sealed.as_deref().ok_or("the code was erased")?;
        let plain = self.master.open(SEAL, sealed).map_err(|e| format!("cannot open the sealed parts: {e}"))?;
        let s: Sealed = serde_json::from_slice(&plain).map_err(|e| format!("unreadable sealed parts: {e}"))?;
        let text = format!("{} is your {} code. It expires in 5 minutes; never share it.", s.code, self.product);
        let res = match &self.provider {
            Provider::Twilio { messages_url, sid, token, from } => {
                let form = [("To", s.number.as_str()), ("From", from.as_str()), ("Body", text.as_str())];
                let body = serde_urlencoded::to_string(form).map_err(|e| e.to_string())?;
                self.outbound
                    .post(messages_url, |r| {
                        r.basic_auth(sid, Some(token.expose()))
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(body)
                    })
                    .await?
            }
            Provider::Webhook { url, key } => {
                let event = serde_json::json!({
                    "type": "sms.code",
                    "to": s.number,
                    "code": s.code,
                    "text": text,
                    "purpose": q.purpose,
                });
                let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
                let ts = crate::clock::now_ms() / 1000;
                let signature = crypto::webhook_signature(key, id, ts, &body);
                self.outbound
                    .post(url, |r| {
                        r.header("content-type", "application/json")
                            .header("webhook-id", id)
                            .header("webhook-timestamp", ts.to_string())
                            .header("webhook-signature", signature)
                            .body(body)
                    })
                    .await?
            }
        };
        let status = res.status();
        if !status.is_success() {
            return Err(format!("the SMS provider answered {status}"));
        }
        Ok(format!("{status} for {}", q.to))
    }

    /// A queued code without its secrets, to keep once it is sent or given up.
    pub fn redacted(payload: &str) -> Option<String> {
        let mut q: Queued = serde_json::from_str(payload).ok()?;
        q.sealed.take()?;
        serde_json::to_string(&q).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_e164_and_masked() {
        assert_eq!(e164("+1 (555) 010-4567").as_deref(), Some("+15550104567"));
        assert_eq!(e164("+44 20 7946 0958").as_deref(), Some("+442079460958"));
        for bad in ["5550104567", "+0123456789", "+1234567", "+1234567890123456", "+1555abc4567", "++15550104567"] {
            assert!(e164(bad).is_none(), "{bad}");
        }
        assert_eq!(masked("+15550104567"), "+1••••••4567");
    }
}
