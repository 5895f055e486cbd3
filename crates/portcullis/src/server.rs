//! Wiring: opens the store, loads keys, builds the services and serves HTTP until
//! told to stop. Used by `portcullis serve` and by the integration tests, which run
//! the very same server on an ephemeral port.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::task::JoinHandle;

use crate::{
    abuse::{Blocks, Limiter},
    admin::Admin,
    api_keys::ApiKeys,
    audit::Audit,
    auth::{Auth, AuthSettings},
    clients::Clients,
    config::Config,
    crypto::{MasterKey, MasterKeySource},
    http::{AppState, Services, router},
    jobs::{
        self, Job,
        outbox::{AccountTasks, Outbox, Pace},
    },
    keys::KeyManager,
    mail::Mailer,
    oauth::{ClientAuth, OAuth, OAuthSettings},
    outbound::Outbound,
    passwords::Hasher,
    shutdown::{self, Trigger},
    store::{Backend, Db},
    tokens::Tokens,
};

/// An open database with migrations applied, and the master key.
pub struct Store {
    /// The database.
    pub db: Db,
    /// Encrypts secrets at rest.
    pub master: Arc<MasterKey>,
}

/// Opens what every data-touching command needs, the same way for all of them.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let (master, source) = MasterKey::load_or_create(cfg.master_key.as_deref(), &cfg.data_dir)?;
    match source {
        MasterKeySource::Configured => {}
        MasterKeySource::Generated | MasterKeySource::DataDirFile => {
            let path = cfg.data_dir.join("master.key");
            tracing::warn!(
                path = %path.display(),
                "!!! USING A MASTER KEY FROM THE DATA DIRECTORY{}. Production MUST set \
                 PORTCULLIS_MASTER_KEY (32 random bytes, base64) from a secret store: whoever reads \
                 this file can decrypt the signing keys. !!!",
                if source == MasterKeySource::Generated { " (JUST GENERATED)" } else { "" },
            );
        }
    }
    if cfg.database_url.is_none() {
        crate::crypto::create_private_dir(&cfg.data_dir)?;
    }
    let url = cfg.database_url();
    let durable = cfg.storage.sqlite_synchronous == crate::config::SqliteSync::Full;
    let db = Db::connect_with(&url, durable).await.map_err(|e| anyhow::anyhow!("cannot open the database: {e}"))?;
    let applied = db.migrate().await.map_err(|e| anyhow::anyhow!("migrating the database failed: {e}"))?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "applied migrations");
    }
    if db.backend() == Backend::Postgres && source != MasterKeySource::Configured {
        tracing::warn!("several nodes on one PostgreSQL must share PORTCULLIS_MASTER_KEY");
    }
    Ok(Store { db, master: Arc::new(master) })
}

/// Builds the key manager. `serve` bootstraps (creates a key on an empty database,
/// rotates when `keys.algorithm` changed); operator commands only load, so listing
/// keys or creating a user never rotates anything behind the operator's back.
pub async fn key_manager(cfg: &Config, store: &Store, bootstrap: bool) -> anyhow::Result<Arc<KeyManager>> {
    let token_ttl = cfg.tokens.access_ttl.0 + cfg.tokens.leeway.0;
    let alg = bootstrap.then_some(cfg.keys.algorithm);
    Ok(Arc::new(KeyManager::init(store.db.clone(), store.master.clone(), alg, token_ttl).await?))
}

/// The OAuth provider for operator commands (client administration): same
/// services as `serve`, without listening or rotating keys.
pub async fn oauth_for_cli(cfg: &Config, store: &Store) -> anyhow::Result<Arc<OAuth>> {
    let issuer = cfg.issuer.clone().unwrap_or_else(|| format!("http://{}", cfg.listen));
    let keys = key_manager(cfg, store, false).await?;
    let audience = cfg.tokens.audience.clone().unwrap_or_else(|| issuer.clone());
    let tokens = Arc::new(Tokens::new(keys, issuer.clone(), audience, cfg.tokens.access_ttl.0, cfg.tokens.leeway.0));
    let audit = Audit::new(store.db.clone());
    let clients = Clients::new(store.db.clone());
    let hasher = Hasher::new(1, 0)?;
    let settings = AuthSettings::from_config(cfg);
    let blocks = Arc::new(Blocks::default());
    let auth = Arc::new(
        Auth::new(store.db.clone(), hasher, tokens, settings, audit.clone(), clients.clone(), blocks)
            .with_master(store.master.clone()),
    );
    let api_keys = ApiKeys::new(store.db.clone(), audit.clone(), cfg.api_keys.max_ttl.map(|d| d.0));
    let client_auth = ClientAuth::new(clients, Outbound::from_config(cfg));
    Ok(Arc::new(OAuth::new(auth, client_auth, api_keys, audit, OAuthSettings::from_config(cfg, issuer))))
}

/// How the outbox worker paces itself, from `outbox.*`.
fn outbox_pace(cfg: &Config) -> Pace {
    Pace {
        poll: cfg.outbox.poll_interval.0,
        first_retry: cfg.outbox.first_retry.0,
        max_attempts: i64::from(cfg.outbox.max_attempts),
        // A webhook attempt in flight at shutdown may finish (SMTP and SMS take less).
        drain: cfg.webhooks.timeout.0 + Duration::from_secs(2),
        ..Pace::default()
    }
}

/// A server that is accepting connections.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The `iss` of its tokens.
    pub issuer: String,
    trigger: Trigger,
    task: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
    grace: Duration,
    db: Db,
}

impl Running {
    /// The server's database handle (tests inspect it).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stops accepting, lets in-flight requests finish, closes the database.
    /// In-flight requests get `http.shutdown_grace`; a client that holds its
    /// connection open past that is cut off rather than holding the process hostage.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.trigger.fire();
        let served = match tokio::time::timeout(self.grace, &mut self.task).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "connections still open after the shutdown grace; closing them");
                self.task.abort();
                Ok(Ok(()))
            }
        };
        // Background tasks flush what they hold (API key last-use times) before the
        // database closes.
        for task in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.db.close().await;
        served??;
        Ok(())
    }
}

/// The mailer of `cfg`, warning at start when mail does not leave the server.
fn mailer(cfg: &Config, issuer: &str, store: &Store) -> anyhow::Result<Arc<Mailer>> {
    let mailer = Arc::new(Mailer::new(cfg, issuer, store.master.clone())?);
    if !mailer.sends() && !mailer.local_development() {
        tracing::warn!(
            "mail is off: email.transport is log, so verification, reset and notice mails are not delivered; \
             set email.transport = \"smtp\" and email.smtp_url"
        );
    }
    Ok(mailer)
}

/// The outbox worker with a deliverer for every kind of message this node sends.
fn outbox(
    cfg: &Config,
    store: &Store,
    mailer: Arc<Mailer>,
    auth: &Arc<Auth>,
    sms: Option<Arc<crate::sms::Sms>>,
) -> Outbox {
    let notify = crate::webhooks::deliver::Notify { mailer: mailer.clone() };
    let sender = crate::webhooks::deliver::Sender::new(
        store.db.clone(),
        Outbound::from_config(cfg),
        store.master.clone(),
        cfg.webhooks.clone(),
        Some(notify),
    );
    let mut outbox = Outbox::new(store.db.clone(), outbox_pace(cfg))
        .with(crate::mail::KIND, mailer)
        .with(crate::auth::TASK_KIND, Arc::new(AccountTasks(auth.clone())))
        .with(crate::store::WEBHOOK_KIND, Arc::new(sender));
    if let Some(sms) = sms {
        outbox = outbox.with(crate::sms::KIND, sms);
    }
    outbox
}

/// `security.breached_password_api`, through the guarded outbound client.
fn breach_check(cfg: &Config) -> Option<crate::passwords::BreachCheck> {
    let base = cfg.security.breached_password_api.as_deref()?;
    Some(crate::passwords::BreachCheck::new(base, Outbound::from_config(cfg)))
}

/// Starts serving `cfg`; returns once the socket is bound and keys are loaded.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    let started = std::time::Instant::now();
    let _ = crate::http::prometheus();
    let store = open_store(&cfg).await?;
    if cfg.security.danger_allow_private_targets {
        tracing::warn!(
            "!!! security.danger_allow_private_targets is on: outbound requests (a client's jwks_uri) may \
             reach loopback and private addresses. Never in production. !!!"
        );
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let issuer = cfg.issuer.clone().unwrap_or_else(|| format!("http://{addr}")).trim_end_matches('/').to_owned();
    let audience = cfg.tokens.audience.clone().unwrap_or_else(|| issuer.clone());
    let keys = key_manager(&cfg, &store, true).await?;
    let tokens =
        Arc::new(Tokens::new(keys.clone(), issuer.clone(), audience, cfg.tokens.access_ttl.0, cfg.tokens.leeway.0));
    let hasher = Hasher::new(cfg.security.hash_concurrency, cfg.security.hash_queue)?;
    let (trigger, shutdown) = shutdown::channel();
    let (audit, audit_queue) = Audit::buffered(store.db.clone(), cfg.audit.buffer);
    let clients = Clients::new(store.db.clone());
    let blocks = Arc::new(Blocks::default());
    let mailer = mailer(&cfg, &issuer, &store)?;
    let sms = crate::sms::Sms::from_config(
        &cfg.sms,
        &cfg.email.product_name,
        Outbound::from_config(&cfg),
        store.master.clone(),
    )?
    .map(Arc::new);
    let auth = Arc::new(
        Auth::new(
            store.db.clone(),
            hasher.clone(),
            tokens,
            AuthSettings::from_config(&cfg),
            audit.clone(),
            clients.clone(),
            blocks.clone(),
        )
        .with_mail(mailer.clone(), Some(cfg.security.email_send_rate), blocks.clone())
        .with_breach_check(breach_check(&cfg))
        .with_master(store.master.clone())
        .with_sms(sms.clone(), cfg.sms.send_rate, blocks.clone())
        .with_webauthn(crate::auth::relying_party(&cfg.webauthn, &issuer, &cfg.email.product_name)?),
    );
    let admin = Arc::new(Admin::new(store.db.clone(), hasher, audit.clone()));
    let api_keys = ApiKeys::new(store.db.clone(), audit.clone(), cfg.api_keys.max_ttl.map(|d| d.0));
    let oauth_settings = OAuthSettings::from_config(&cfg, issuer.clone());
    let client_auth = ClientAuth::new(clients, Outbound::from_config(&cfg));
    let oauth = Arc::new(OAuth::new(auth.clone(), client_auth, api_keys.clone(), audit.clone(), oauth_settings));
    let cookies = crate::http::CookiePolicy::for_issuer(&issuer);
    let webhooks = Arc::new(crate::webhooks::Webhooks::new(
        store.db.clone(),
        store.master.clone(),
        crate::outbound::Policy::from_config(&cfg),
        audit.clone(),
    ));
    // Drained, in this order, before the database closes on shutdown: the audit
    // writer last, so it records what the others still had.
    let background = jobs::start(
        vec![
            Job::KeyReload { keys: keys.clone(), every: cfg.keys.reload_interval.0.max(Duration::from_millis(100)) },
            Job::Housekeeping {
                db: store.db.clone(),
                retention: cfg.audit.retention.0,
                every: Duration::from_secs(3600),
            },
            Job::BlockSummaries { blocks: blocks.clone(), audit: audit.clone() },
            Job::KeyUsage { keys: api_keys.clone(), every: Duration::from_secs(5) },
            Job::SessionExpiry { db: store.db.clone(), every: cfg.webhooks.expiry_sweep.0 },
            Job::Outbox(outbox(&cfg, &store, mailer, &auth, sms)),
            Job::AuditWriter(audit_queue),
        ],
        &shutdown,
    );
    let trusted_proxies = Arc::new(cfg.security.trusted_proxies.clone());
    let limiter = |scope, rule| Arc::new(Limiter::new(store.db.clone(), scope, rule, blocks.clone()));
    let verify_limiter = limiter("verify", cfg.security.api_key_verify_rate);
    let key_fail_limiter = limiter("key_fail", cfg.security.api_key_failure_rate);
    let client_fail_limiter = limiter("client_fail", cfg.security.client_auth_failure_rate);
    let state = AppState::new(Services {
        auth,
        admin,
        api_keys,
        audit,
        trusted_proxies,
        verify_limiter,
        key_fail_limiter,
        client_fail_limiter,
        oauth,
        cookies,
        metrics_access: crate::http::MetricsAccess {
            token: cfg.ops.metrics_token.clone().map(crate::crypto::Secret::new),
            public: cfg.ops.metrics_public,
        },
        webhooks,
    });
    let app = router(state, &cfg.http);
    let limits = crate::listener::Limits {
        header_read_timeout: cfg.http.header_read_timeout.0,
        max_connections: cfg.http.max_connections,
    };
    let task = tokio::spawn(crate::listener::serve(listener, app, limits, shutdown));
    tracing::info!(%addr, %issuer, backend = ?store.db.backend(), ready_in_ms = started.elapsed().as_millis() as u64, "portcullis is ready");
    Ok(Running { addr, issuer, trigger, task, background, grace: cfg.http.shutdown_grace.0, db: store.db })
}
