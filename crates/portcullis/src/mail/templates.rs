//! Mail templates: each message has a subject, a plain-text and an HTML part,
//! bundled in the binary and replaceable file by file from `email.templates_dir`
//! (`NAME.subject`, `NAME.txt`, `NAME.html`, and `layout.html`, which the HTML
//! parts extend). Everything is compiled at start, so a broken template stops the
//! server instead of a message.

use std::path::Path;

use minijinja::Environment;
use serde::{Deserialize, Serialize};

/// Which message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// Proves the account's address: link and code.
    VerifyEmail,
    /// Proves a new address before the account moves to it: link and code.
    ConfirmNewEmail,
    /// To an address someone tried to move another account to: it is taken.
    EmailTaken,
    /// To the old address after a change: no link to follow.
    EmailChanged,
    /// A link to choose a new password.
    ResetPassword,
    /// Notice: the password changed.
    PasswordChanged,
    /// Notice: the account locked; a link unlocks it for whoever opens it.
    AccountLocked,
    /// Notice: a reused refresh token ended every session.
    SignedOutEverywhere,
    /// The last message: the account was deleted.
    AccountDeleted,
    /// Notice: a second factor was added.
    MfaAdded,
    /// To the operators: a webhook endpoint kept failing and was disabled.
    WebhookDisabled,
    /// Notice: a second factor was removed.
    MfaRemoved,
    /// Notice: a recovery code was used.
    RecoveryCodeUsed,
    /// Notice: an admin removed every second factor.
    MfaReset,
    /// `portcullis email test`.
    Test,
}

impl Template {
    /// Every template, for loading and checking.
    pub const ALL: [Template; 15] = [
        Template::VerifyEmail,
        Template::ConfirmNewEmail,
        Template::EmailTaken,
        Template::EmailChanged,
        Template::ResetPassword,
        Template::PasswordChanged,
        Template::AccountLocked,
        Template::SignedOutEverywhere,
        Template::AccountDeleted,
        Template::MfaAdded,
        Template::MfaRemoved,
        Template::RecoveryCodeUsed,
        Template::MfaReset,
        Template::WebhookDisabled,
        Template::Test,
    ];

    /// The file name stem.
    pub fn name(self) -> &'static str {
        match self {
            Template::VerifyEmail => "verify_email",
            Template::ConfirmNewEmail => "confirm_new_email",
            Template::EmailTaken => "email_taken",
            Template::EmailChanged => "email_changed",
            Template::ResetPassword => "reset_password",
            Template::PasswordChanged => "password_changed",
            Template::AccountLocked => "account_locked",
            Template::SignedOutEverywhere => "signed_out_everywhere",
            Template::AccountDeleted => "account_deleted",
            Template::MfaAdded => "mfa_added",
            Template::MfaRemoved => "mfa_removed",
            Template::RecoveryCodeUsed => "recovery_code_used",
            Template::MfaReset => "mfa_reset",
            Template::WebhookDisabled => "webhook_disabled",
            Template::Test => "test",
        }
    }
}

macro_rules! bundled {
    ($($name:literal),* $(,)?) => {
        &[$(
            (concat!($name, ".subject"), include_str!(concat!("../../templates/mail/", $name, ".subject"))),
            (concat!($name, ".txt"), include_str!(concat!("../../templates/mail/", $name, ".txt"))),
            (concat!($name, ".html"), include_str!(concat!("../../templates/mail/", $name, ".html"))),
        )*]
    };
}

const BUNDLED: &[(&str, &str)] = bundled!(
    "verify_email",
    "confirm_new_email",
    "email_taken",
    "email_changed",
    "reset_password",
    "password_changed",
    "account_locked",
    "signed_out_everywhere",
    "account_deleted",
    "mfa_added",
    "mfa_removed",
    "recovery_code_used",
    "mfa_reset",
    "webhook_disabled",
    "test",
);
const LAYOUT: &str = include_str!("../../templates/mail/layout.html");

/// A rendered message.
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// The compiled templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The bundled templates, with files of `dir` in place of those they name.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        // HTML parts escape what they insert; subjects and text parts do not.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") { minijinja::AutoEscape::Html } else { minijinja::AutoEscape::None }
        });
        let read = |name: &str, bundled: &'static str| -> anyhow::Result<String> {
            match dir.map(|d| d.join(name)) {
                Some(path) if path.exists() => std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("cannot read mail template {}: {e}", path.display())),
                _ => Ok(bundled.to_owned()),
            }
        };
        if let Some(d) = dir
            && !d.is_dir()
        {
            anyhow::bail!("email.templates_dir {} is not a directory", d.display());
        }
        for (name, bundled) in BUNDLED.iter().copied().chain([("layout.html", LAYOUT)]) {
            let source = read(name, bundled)?;
            env.add_template_owned(name.to_owned(), source)
                .map_err(|e| anyhow::anyhow!("mail template {name} does not compile: {e}"))?;
        }
        let me = Self { env };
        // Render each once with sample values: a template that names a filter or
        // block that does not exist fails here, not at the first message.
        for t in Template::ALL {
            me.render(t, minijinja::context! { product => "P", email => "a@b.c", link => "l", code => "1" })?;
        }
        Ok(me)
    }

    /// Renders the three parts of `template`.
    pub fn render(&self, template: Template, ctx: minijinja::Value) -> anyhow::Result<Rendered> {
        let part = |ext: &str| -> anyhow::Result<String> {
            let name = format!("{}.{ext}", template.name());
            self.env
                .get_template(&name)
                .and_then(|t| t.render(&ctx))
                .map_err(|e| anyhow::anyhow!("mail template {name}: {e}"))
        };
        let subject = part("subject")?.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_owned();
        Ok(Rendered { subject, text: part("txt")?, html: part("html")? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_templates_render_and_html_escapes() {
        let t = Templates::load(None).unwrap();
        let ctx = minijinja::context! { product => "Acme <b>", email => "a@b.c", link => "https://x/?a=1&b=2", code => "123456" };
        let r = t.render(Template::VerifyEmail, ctx).unwrap();
        assert_eq!(r.subject, "Confirm your email for Acme <b>");
        assert!(r.text.contains("https://x/?a=1&b=2") && r.text.contains("123456"));
        assert!(
            r.html.contains("Acme &lt;b&gt;") && r.html.contains("https:&#x2f;&#x2f;x&#x2f;?a=1&amp;b=2"),
            "{}",
            r.html
        );
    }

    #[test]
    fn a_directory_replaces_single_files_and_bad_templates_fail_at_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test.subject"), "Hello from {{ product }}").unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let r = t.render(Template::Test, minijinja::context! { product => "Acme", email => "e" }).unwrap();
        assert_eq!(r.subject, "Hello from Acme");
        assert!(r.text.contains("test message"));
        std::fs::write(dir.path().join("test.txt"), "{% if %}").unwrap();
        assert!(Templates::load(Some(dir.path())).is_err());
    }
}
