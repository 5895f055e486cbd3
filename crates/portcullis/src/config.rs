//! Configuration: typed settings layered from defaults, `portcullis.toml`, the
//! `PORTCULLIS_*` environment (`__` nests sections) and command-line flags. Parsed
//! once into [`Config`] and passed by value; nothing reads the environment later.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
    value::{Dict, Value},
};
use serde::{Deserialize, Serialize};

use ipnet::IpNet;

use crate::{
    keys::Algorithm,
    units::{HumanDuration, RateRule},
};

/// Every setting of the server. Field names are the `portcullis.toml` keys.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Socket address to listen on.
    pub listen: SocketAddr,
    /// Where the embedded database and generated master key live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; defaults to an SQLite file in `data_dir`.
    pub database_url: Option<String>,
    /// The `iss` of every token; defaults to `http://<listen>`.
    pub issuer: Option<String>,
    /// Base64 (or hex) of 32 bytes that encrypt signing keys at rest.
    pub master_key: Option<String>,
    /// A file holding `master_key`, for secret mounts.
    pub master_key_file: Option<PathBuf>,
    /// Token lifetimes and audience.
    pub tokens: TokensConfig,
    /// Signing-key settings.
    pub keys: KeysConfig,
    /// HTTP limits and headers.
    pub http: HttpConfig,
    /// Password hashing and abuse limits.
    pub security: SecurityConfig,
    /// The audit trail.
    pub audit: AuditConfig,
    /// API keys.
    pub api_keys: ApiKeysConfig,
    /// Operational endpoints.
    pub ops: OpsConfig,
    /// Storage engine tuning.
    pub storage: StorageConfig,
    /// Logging.
    pub log: LogConfig,
    /// Outgoing mail.
    pub email: EmailConfig,
    /// Account rules: verified email, self-service deletion.
    pub accounts: AccountsConfig,
    /// Delivery of queued messages (mail, webhooks).
    pub outbox: OutboxConfig,
    /// SMS codes as a second factor (off unless a provider is set).
    pub sms: SmsConfig,
    /// Passkeys (WebAuthn): the relying party.
    pub webauthn: WebauthnConfig,
    /// Delivery of webhook events.
    pub webhooks: WebhooksConfig,
}

/// How mail leaves the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// Written to the server log (links and codes only with a loopback issuer).
    #[default]
    Log,
    /// Sent through `email.smtp_url`.
    Smtp,
}

/// Outgoing mail.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EmailConfig {
    /// `log` (default, local development) or `smtp`.
    pub transport: MailTransport,
    /// lettre's URL form: `smtp://HOST:PORT` (plain, a local relay), with
    /// `?tls=required` for STARTTLS, or `smtps://HOST` for TLS; credentials may be in it.
    pub smtp_url: Option<String>,
    /// A file with the SMTP password, for secret mounts (overrides the URL's).
    pub smtp_password_file: Option<PathBuf>,
    /// The sender, e.g. `Portcullis <no-reply@example.com>`.
    pub from: String,
    /// The product's name in subjects and greetings.
    pub product_name: String,
    /// A directory whose `NAME.subject`, `NAME.txt` and `NAME.html` replace the
    /// bundled templates.
    pub templates_dir: Option<PathBuf>,
    /// Tell users when their password changed.
    pub notify_password_changed: bool,
    /// Tell the old address when the account's email changed.
    pub notify_email_changed: bool,
    /// Tell users when their account locked (with a link that unlocks it for them).
    pub notify_account_locked: bool,
    /// Tell users when a stolen refresh token signed them out everywhere.
    pub notify_refresh_reuse: bool,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            transport: MailTransport::Log,
            smtp_url: None,
            smtp_password_file: None,
            from: "Portcullis <no-reply@localhost>".into(),
            product_name: "Portcullis".into(),
            templates_dir: None,
            notify_password_changed: true,
            notify_email_changed: true,
            notify_account_locked: true,
            notify_refresh_reuse: true,
        }
    }
}

impl std::fmt::Debug for EmailConfig {
    /// The SMTP URL may hold a password: only its scheme and host print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.smtp_url.as_deref().and_then(|u| url::Url::parse(u).ok());
        let shown = url.map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")));
        f.debug_struct("EmailConfig")
            .field("transport", &self.transport)
            .field("smtp_url", &shown)
            .field("smtp_password_file", &self.smtp_password_file)
            .field("from", &self.from)
            .field("product_name", &self.product_name)
            .field("templates_dir", &self.templates_dir)
            .finish_non_exhaustive()
    }
}

/// Account rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountsConfig {
    /// Sign-in (JSON, hosted page, OAuth) answers `403 email_not_verified` until the
    /// user proved their address.
    pub require_verified_email: bool,
    /// Users may delete their own account (`DELETE /v1/me`).
    pub self_delete: bool,
    /// Whether every account needs a second factor (`optional` | `required`).
    pub mfa: MfaPolicy,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self { require_verified_email: false, self_delete: true, mfa: MfaPolicy::Optional }
    }
}

/// `accounts.mfa`: with `required`, a user without a second factor enrols one
/// right after the password step, before any session exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MfaPolicy {
    /// Users choose.
    Optional,
    /// Every sign-in takes a second factor.
    Required,
}

/// The WebAuthn relying party of passkeys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WebauthnConfig {
    /// The RP ID: a domain the origins belong to. Defaults to the issuer's host
    /// when that is a name; WebAuthn refuses IP addresses, so with an IP issuer
    /// passkeys stay off until this is set.
    pub rp_id: Option<String>,
    /// Origins whose pages may use passkeys; defaults to the issuer's.
    pub origins: Vec<String>,
}

/// Who sends SMS codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsProvider {
    /// SMS codes are off.
    None,
    /// Twilio's Messages API (`sms.base_url`, `sms.account_sid`,
    /// `sms.auth_token_file`, `sms.from`).
    Twilio,
    /// A JSON POST to `sms.webhook_url`, signed with the Standard Webhooks scheme
    /// under `sms.webhook_secret`.
    Webhook,
}

/// SMS codes: a restricted authenticator (NIST SP 800-63B §5.1.3.3), offered
/// only where an operator turns it on.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SmsConfig {
    /// `none`, `twilio` or `webhook`.
    pub provider: SmsProvider,
    /// Twilio's API root (tests point it at a local receiver).
    pub base_url: String,
    /// Twilio account SID.
    pub account_sid: Option<String>,
    /// File holding the Twilio auth token.
    pub auth_token_file: Option<PathBuf>,
    /// The sending number (E.164) or messaging service.
    pub from: Option<String>,
    /// Where the webhook provider posts.
    pub webhook_url: Option<String>,
    /// `whsec_…`: the Standard Webhooks signing secret.
    pub webhook_secret: Option<String>,
    /// Codes sent per number and per client address.
    pub send_rate: RateRule,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            provider: SmsProvider::None,
            base_url: "https://api.twilio.com".into(),
            account_sid: None,
            auth_token_file: None,
            from: None,
            webhook_url: None,
            webhook_secret: None,
            send_rate: RateRule { max: 5, window: Duration::from_secs(3600) },
        }
    }
}

impl std::fmt::Debug for SmsConfig {
    /// The webhook secret never prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token_file", &self.auth_token_file)
            .field("from", &self.from)
            .field("webhook_url", &self.webhook_url)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "[redacted]"))
            .field("send_rate", &self.send_rate)
            .finish()
    }
}

/// Delivery of queued messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    /// How often each node looks for due messages.
    pub poll_interval: HumanDuration,
    /// The first retry's delay; each later one doubles, up to an hour.
    pub first_retry: HumanDuration,
    /// Attempts before a message is given up (and listed as failed).
    pub max_attempts: u32,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { poll_interval: HumanDuration::secs(1), first_retry: HumanDuration::secs(10), max_attempts: 10 }
    }
}

/// Delivery of webhook events: when a failed delivery is attempted again, how
/// long an attempt may take, and when an endpoint that keeps failing is disabled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhooksConfig {
    /// Delays between attempts after a failure (the first attempt is immediate);
    /// with jitter. One attempt more than there are delays.
    pub retry_schedule: Vec<HumanDuration>,
    /// How long one attempt may take, connecting included.
    pub timeout: HumanDuration,
    /// An endpoint failing for this long without a success is disabled.
    pub disable_after: HumanDuration,
    /// Who is mailed when an endpoint is disabled.
    pub notify_email: Option<String>,
    /// Deliveries in flight at once to one endpoint, per node.
    pub max_in_flight_per_endpoint: usize,
    /// How often sessions that ran out are looked for (`session.ended`).
    pub expiry_sweep: HumanDuration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        let schedule = [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];
        Self {
            retry_schedule: schedule.into_iter().map(HumanDuration::secs).collect(),
            timeout: HumanDuration::secs(15),
            disable_after: HumanDuration::secs(5 * 86_400),
            notify_email: None,
            max_in_flight_per_endpoint: 4,
            expiry_sweep: HumanDuration::secs(60),
        }
    }
}

/// Token lifetimes and audience.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TokensConfig {
    /// Lifetime of an access token.
    pub access_ttl: HumanDuration,
    /// Lifetime of a session: its refresh tokens stop working after this.
    pub refresh_ttl: HumanDuration,
    /// The `aud` of first-party access tokens; defaults to the issuer.
    pub audience: Option<String>,
    /// Clock skew allowed when checking `exp` and `nbf`.
    pub leeway: HumanDuration,
    /// Put each user's `public_metadata` into access tokens as the `metadata` claim.
    pub include_metadata: bool,
}

/// Signing-key settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KeysConfig {
    /// Algorithm of newly generated keys; a change rotates at the next start.
    pub algorithm: Algorithm,
    /// How often a node re-reads the key set, so rotations by other processes land.
    pub reload_interval: HumanDuration,
}

/// HTTP limits and headers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Longest time a request may take before a 503 `timeout`.
    pub request_timeout: HumanDuration,
    /// `Strict-Transport-Security` max-age; set only when served over TLS.
    pub hsts: Option<HumanDuration>,
    /// How long in-flight requests may run on after SIGTERM.
    pub shutdown_grace: HumanDuration,
    /// Time a client gets to send a request's headers (slowloris defence).
    pub header_read_timeout: HumanDuration,
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
}

/// Password hashing and abuse limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityConfig {
    /// Argon2id hashes run at once; 0 means one per CPU core.
    pub hash_concurrency: usize,
    /// Hash requests allowed to wait for a slot; beyond this, 503 `overloaded`.
    pub hash_queue: usize,
    /// Attempts per client address on every endpoint that checks a password.
    pub login_rate: RateRule,
    /// Sign-ups per client address.
    pub register_rate: RateRule,
    /// Failed `X-API-Key` authentications per client address.
    pub api_key_failure_rate: RateRule,
    /// Failed OAuth client authentications (token, introspection, revocation) per
    /// client address.
    pub client_auth_failure_rate: RateRule,
    /// Calls per verifier (the calling API key, or user) to `POST /v1/api-keys/verify`.
    pub api_key_verify_rate: RateRule,
    /// Consecutive failed passwords that lock an account.
    pub lockout_threshold: u32,
    /// Lock durations, escalating; the last repeats.
    pub lockout_durations: Vec<HumanDuration>,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed; nobody else's is.
    pub trusted_proxies: Vec<IpNet>,
    /// How recent a session's sign-in must be for sensitive operations (creating
    /// or rotating an API key); older sessions confirm the password first.
    pub reauth_window: HumanDuration,
    /// Failed refreshes (`/v1/auth/refresh`, `refresh_token` grants) per client
    /// address; past it, 429 from memory.
    pub refresh_failure_rate: RateRule,
    /// Failed passwords for one account over all addresses; past it the account is
    /// locked for every address that has not signed in to it in the last 30 days.
    pub account_failure_ceiling: RateRule,
    /// Networks outbound requests (a client's `jwks_uri`) may reach although they
    /// are private (an identity provider on a company network). Cloud metadata
    /// addresses stay refused.
    pub outbound_allowed_cidrs: Vec<IpNet>,
    /// Verification and reset mails per client address and, separately, per
    /// target address (nobody can mail-bomb a user).
    pub email_send_rate: RateRule,
    /// A breached-password service in the k-anonymity range format, e.g.
    /// `https://api.pwnedpasswords.com` (off by default).
    pub breached_password_api: Option<String>,
    /// Lets outbound requests reach loopback and private addresses. For tests and
    /// local development only: it opens server-side request forgery.
    pub danger_allow_private_targets: bool,
}

/// API key settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiKeysConfig {
    /// Longest lifetime of a new key, and the lifetime of keys created without one.
    pub max_ttl: Option<HumanDuration>,
}

/// Operational endpoints.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OpsConfig {
    /// A bearer token that opens `/metrics` to callers beyond loopback.
    pub metrics_token: Option<String>,
    /// Serves `/metrics` to anyone (it shows sign-in counts).
    pub metrics_public: bool,
}

impl std::fmt::Debug for OpsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsConfig")
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "[redacted]"))
            .field("metrics_public", &self.metrics_public)
            .finish()
    }
}

/// Storage engine tuning.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// SQLite durability: `full` (default) survives a power cut with every committed
    /// transaction; `normal` writes faster and survives process crashes only.
    pub sqlite_synchronous: SqliteSync,
}

/// SQLite `synchronous` level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSync {
    /// fsync at every commit.
    #[default]
    Full,
    /// fsync at checkpoints (WAL): a power cut may lose the last commits.
    Normal,
}

/// The audit trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditConfig {
    /// How long records are kept.
    pub retention: HumanDuration,
    /// Records buffered for the background writer; when full, writes go inline.
    pub buffer: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { retention: HumanDuration::secs(90 * 86_400), buffer: 4096 }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `portcullis=debug`.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::fmt::Debug for Config {
    /// The master key and the database URL (which may hold a password) never print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "[redacted]"))
            .field("issuer", &self.issuer)
            .field("master_key", &self.master_key.as_ref().map(|_| "[redacted]"))
            .field("master_key_file", &self.master_key_file)
            .field("tokens", &self.tokens)
            .field("keys", &self.keys)
            .field("http", &self.http)
            .field("security", &self.security)
            .field("audit", &self.audit)
            .field("api_keys", &self.api_keys)
            .field("ops", &self.ops)
            .field("storage", &self.storage)
            .field("log", &self.log)
            .field("email", &self.email)
            .field("accounts", &self.accounts)
            .field("outbox", &self.outbox)
            .field("sms", &self.sms)
            .field("webauthn", &self.webauthn)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("portcullis-data"),
            database_url: None,
            issuer: None,
            master_key: None,
            master_key_file: None,
            tokens: TokensConfig::default(),
            keys: KeysConfig::default(),
            http: HttpConfig::default(),
            security: SecurityConfig::default(),
            audit: AuditConfig::default(),
            api_keys: ApiKeysConfig::default(),
            ops: OpsConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            email: EmailConfig::default(),
            accounts: AccountsConfig::default(),
            outbox: OutboxConfig::default(),
            sms: SmsConfig::default(),
            webauthn: WebauthnConfig::default(),
            webhooks: WebhooksConfig::default(),
        }
    }
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            access_ttl: HumanDuration::secs(15 * 60),
            refresh_ttl: HumanDuration::secs(30 * 86_400),
            audience: None,
            leeway: HumanDuration::secs(30),
            include_metadata: false,
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self { algorithm: Algorithm::Rs256, reload_interval: HumanDuration::secs(2) }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            request_timeout: HumanDuration::secs(30),
            hsts: None,
            shutdown_grace: HumanDuration::secs(30),
            header_read_timeout: HumanDuration::secs(10),
            max_connections: 10_000,
        }
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            hash_concurrency: 0,
            hash_queue: 256,
            login_rate: RateRule { max: 5, window: Duration::from_secs(60) },
            api_key_verify_rate: RateRule { max: 600, window: Duration::from_secs(60) },
            register_rate: RateRule { max: 20, window: Duration::from_secs(3600) },
            api_key_failure_rate: RateRule { max: 60, window: Duration::from_secs(60) },
            client_auth_failure_rate: RateRule { max: 60, window: Duration::from_secs(60) },
            lockout_threshold: 5,
            lockout_durations: vec![HumanDuration::secs(15 * 60), HumanDuration::secs(3600)],
            trusted_proxies: Vec::new(),
            reauth_window: HumanDuration::secs(10 * 60),
            refresh_failure_rate: RateRule { max: 60, window: Duration::from_secs(60) },
            account_failure_ceiling: RateRule { max: 100, window: Duration::from_secs(3600) },
            outbound_allowed_cidrs: Vec::new(),
            email_send_rate: RateRule { max: 5, window: Duration::from_secs(3600) },
            breached_password_api: None,
            danger_allow_private_targets: false,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// Values given on the command line; they override every other layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--database-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

/// Environment variables that belong to tooling, not to the server's settings.
const FOREIGN_ENV_KEYS: &[&str] = &["test_database_url", "config", "bin"];

impl Config {
    /// Layers defaults, the TOML file, the environment and flags, then validates.
    /// Returns the config and warnings about keys nobody reads (typos).
    pub fn load(file: Option<&std::path::Path>, flags: &Overrides) -> anyhow::Result<(Self, Vec<String>)> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    anyhow::bail!("config file {} does not exist", path.display());
                }
                fig = fig.merge(Toml::file_exact(path));
            }
            None if std::path::Path::new("portcullis.toml").exists() => {
                fig = fig.merge(Toml::file_exact("portcullis.toml"))
            }
            None => {}
        }
        fig = fig
            .merge(Env::prefixed("PORTCULLIS_").split("__").filter(|k| !FOREIGN_ENV_KEYS.contains(&k.as_str())))
            .merge(Serialized::defaults(flags));
        let mut cfg: Config = fig.extract().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let warnings = unknown_keys(&fig);
        if let Some(path) = cfg.master_key_file.take() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read master_key_file {}: {e}", path.display()))?;
            cfg.master_key = Some(text.trim().to_owned());
        }
        cfg.validate()?;
        Ok((cfg, warnings))
    }

    /// Rejects settings that would make the server unsafe or unusable.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.tokens.access_ttl.0 < Duration::from_secs(1) {
            anyhow::bail!("tokens.access_ttl must be at least 1s");
        }
        if self.tokens.refresh_ttl.0 < self.tokens.access_ttl.0 {
            anyhow::bail!("tokens.refresh_ttl must not be shorter than tokens.access_ttl");
        }
        if self.tokens.leeway.0 > Duration::from_secs(300) {
            anyhow::bail!("tokens.leeway must be at most 5m");
        }
        if self.tokens.access_ttl.0 > Duration::from_secs(86_400) {
            anyhow::bail!("tokens.access_ttl must be at most 1d: access tokens cannot be recalled by third parties");
        }
        if self.security.lockout_threshold == 0 || self.security.lockout_durations.is_empty() {
            anyhow::bail!("security.lockout_threshold must be at least 1 and security.lockout_durations non-empty");
        }
        if self.security.reauth_window.0 < Duration::from_secs(10) {
            anyhow::bail!("security.reauth_window must be at least 10s");
        }
        if self.api_keys.max_ttl.is_some_and(|d| d.0 < Duration::from_secs(60)) {
            anyhow::bail!("api_keys.max_ttl must be at least 1m");
        }
        if self.ops.metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
            anyhow::bail!("ops.metrics_token must be at least 16 characters");
        }
        if self.http.body_limit < 1024 {
            anyhow::bail!("http.body_limit must be at least 1024 bytes");
        }
        if let Some(iss) = &self.issuer
            && !(iss.starts_with("https://") || iss.starts_with("http://"))
        {
            anyhow::bail!("issuer must be an http(s) URL, got `{iss}`");
        }
        if self.email.transport == MailTransport::Smtp && self.email.smtp_url.is_none() {
            anyhow::bail!("email.transport = \"smtp\" needs email.smtp_url (smtp://HOST:PORT, smtps://HOST)");
        }
        if self.outbox.max_attempts == 0 || self.outbox.poll_interval.0 < Duration::from_millis(10) {
            anyhow::bail!("outbox.max_attempts must be at least 1 and outbox.poll_interval at least 10ms");
        }
        let hooks = &self.webhooks;
        // An attempt must end well within the outbox lease (60 s), or a second node
        // would deliver the same event while the first still waits.
        if hooks.timeout.0 < Duration::from_millis(100) || hooks.timeout.0 > Duration::from_secs(45) {
            anyhow::bail!("webhooks.timeout must be between 100ms and 45s");
        }
        if hooks.retry_schedule.len() > 20
            || hooks.max_in_flight_per_endpoint == 0
            || hooks.expiry_sweep.0 < Duration::from_millis(100)
        {
            anyhow::bail!(
                "webhooks.retry_schedule holds at most 20 delays, webhooks.max_in_flight_per_endpoint is at least 1 \
                 and webhooks.expiry_sweep at least 100ms"
            );
        }
        Ok(())
    }

    /// The database to use: the configured URL or the SQLite file in `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("portcullis.db").display()),
        }
    }

    /// A config for tests: fast to start, everything else at its default.
    pub fn for_test(data_dir: PathBuf) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            // Tests sign in far more than 5 times a minute from 127.0.0.1; the tests of
            // the limit itself set it back.
            security: SecurityConfig {
                hash_concurrency: 2,
                login_rate: RateRule { max: 100_000, window: Duration::from_secs(60) },
                api_key_verify_rate: RateRule { max: 100_000, window: Duration::from_secs(60) },
                register_rate: RateRule { max: 100_000, window: Duration::from_secs(60) },
                refresh_failure_rate: RateRule { max: 100_000, window: Duration::from_secs(60) },
                account_failure_ceiling: RateRule { max: 100_000, window: Duration::from_secs(60) },
                email_send_rate: RateRule { max: 100_000, window: Duration::from_secs(60) },
                // Test peers (a client's jwks_uri) listen on loopback.
                danger_allow_private_targets: true,
                ..SecurityConfig::default()
            },
            outbox: OutboxConfig {
                poll_interval: HumanDuration(Duration::from_millis(50)),
                first_retry: HumanDuration(Duration::from_millis(200)),
                max_attempts: 10,
            },
            webhooks: WebhooksConfig {
                retry_schedule: vec![
                    HumanDuration(Duration::from_millis(200)),
                    HumanDuration(Duration::from_millis(400)),
                ],
                timeout: HumanDuration::secs(5),
                ..WebhooksConfig::default()
            },
            ..Self::default()
        }
    }
}

/// Dotted paths present in the merged layers that no field of [`Config`] reads.
fn unknown_keys(fig: &Figment) -> Vec<String> {
    let known = Figment::from(Serialized::defaults(Config::default()));
    let (Ok(have), Ok(known)) = (fig.extract::<Dict>(), known.extract::<Dict>()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk_unknown("", &have, &known, &mut out);
    out
}

fn walk_unknown(prefix: &str, have: &Dict, known: &Dict, out: &mut Vec<String>) {
    for (key, value) in have {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match (value, known.get(key)) {
            (_, None) if !OPTIONAL_KEYS.contains(&path.as_str()) => out.push(path),
            (Value::Dict(_, inner), Some(Value::Dict(_, kinner))) => walk_unknown(&path, inner, kinner, out),
            _ => {}
        }
    }
}

/// Optional settings that are absent from the serialized defaults (they are `None`).
const OPTIONAL_KEYS: &[&str] = &[
    "database_url",
    "issuer",
    "master_key",
    "master_key_file",
    "tokens.audience",
    "http.hsts",
    "api_keys.max_ttl",
    "ops.metrics_token",
    "email.smtp_url",
    "email.smtp_password_file",
    "email.templates_dir",
    "security.breached_password_api",
    "webhooks.notify_email",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_reported() {
        let fig = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[tokens]\naccess_tll = \"5m\"\n[nope]\nx = 1\n"));
        let mut unknown = unknown_keys(&fig);
        unknown.sort();
        assert_eq!(unknown, vec!["nope".to_string(), "tokens.access_tll".to_string()]);
    }
}
