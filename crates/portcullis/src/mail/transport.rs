//! How a rendered message leaves: the log (local development) or SMTP through
//! lettre, built once per server (it keeps a connection pool).

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::authentication::Credentials,
};

use super::templates::Rendered;
use crate::config::{EmailConfig, MailTransport};

/// Where messages go.
pub enum Transport {
    /// The server log; `reveal` (a loopback issuer) includes the whole message.
    Log {
        /// Whether links and codes may be written (a loopback issuer only).
        reveal: bool,
    },
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl Transport {
    /// The transport `email` configures.
    pub fn from_config(email: &EmailConfig, reveal: bool) -> anyhow::Result<Self> {
        match email.transport {
            MailTransport::Log => Ok(Transport::Log { reveal }),
            MailTransport::Smtp => {
                let url = email.smtp_url.as_deref().ok_or_else(|| anyhow::anyhow!("email.smtp_url is not set"))?;
                let parsed = url::Url::parse(url).map_err(|_| anyhow::anyhow!("email.smtp_url is not a URL"))?;
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("email.smtp_url: {e}"))?
                    .timeout(Some(Duration::from_secs(30)));
                if let Some(file) = &email.smtp_password_file {
                    let password = std::fs::read_to_string(file)
                        .map_err(|e| anyhow::anyhow!("cannot read email.smtp_password_file {}: {e}", file.display()))?;
                    let user = percent_decode(parsed.username());
                    builder = builder.credentials(Credentials::new(user, password.trim().to_owned()));
                }
                Ok(Transport::Smtp(builder.build()))
            }
        }
    }

    /// Sends one message; what the server answered, or why it failed.
    pub async fn send(&self, from: &Mailbox, to: &str, message: &Rendered) -> Result<String, String> {
        let to_box: Mailbox = to.parse().map_err(|e| format!("bad recipient address: {e}"))?;
        match self {
            Transport::Log { reveal: true } => {
                tracing::warn!(
                    to = %to,
                    subject = %message.subject,
                    "MAIL NOT SENT (email.transport = log, local development): the message follows\n\
                     ----- BEGIN MAIL -----\n{}\n----- END MAIL -----",
                    message.text.trim_end()
                );
                Ok("written to the log".into())
            }
            Transport::Log { reveal: false } => {
                tracing::warn!(
                    subject = %message.subject,
                    "a mail was not delivered: email.transport is log; set email.transport = \"smtp\""
                );
                Ok("not delivered: email.transport is log".into())
            }
            Transport::Smtp(smtp) => {
                let email = Message::builder()
                    .from(from.clone())
                    .to(to_box)
                    .subject(message.subject.clone())
                    .multipart(MultiPart::alternative_plain_html(message.text.clone(), message.html.clone()))
                    .map_err(|e| format!("cannot build the message: {e}"))?;
                let answer = smtp.send(email).await.map_err(|e| format!("SMTP: {e}"))?;
                Ok(format!("{} {}", answer.code(), answer.message().collect::<Vec<_>>().join(" ")))
            }
        }
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}
