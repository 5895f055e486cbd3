//! The `portcullis` command line: `serve`, `migrate`, `keys`, `users`. Every
//! subcommand that touches data takes the same `--config`, `--data-dir` and
//! `--database-url` as `serve`, so an operator's command sees the server's data.

use std::{io::BufRead, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    clock,
    config::{Config, LogFormat, Overrides},
    crypto::Secret,
    ctx::RequestCtx,
    keys::Algorithm,
    server,
    units::HumanDuration,
};

/// Self-hostable authentication and authorization server.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, propagate_version = true)]
pub struct Cli {
    /// TOML config file (default: ./portcullis.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the embedded database and the generated master key.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// sqlite://FILE or postgres://USER:PASS@HOST/DB (default: SQLite in the data dir).
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Log line format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (applies migrations first).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Inspect and rotate signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage user accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Create API keys, and tell real keys from noise.
    #[command(subcommand, name = "api-keys")]
    ApiKeys(ApiKeysCommand),
    /// Register and manage OAuth clients.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Check outgoing mail.
    #[command(subcommand)]
    Email(EmailCommand),
    /// Manage webhook endpoints.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Print the OpenAPI 3.1 document of the HTTP API (what `/openapi.json` serves),
    /// for generating clients; needs no configuration or database.
    Openapi,
}

#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// Add an endpoint; prints it as JSON, with its signing secret (shown once).
    Create {
        /// Where events are POSTed (https).
        #[arg(long)]
        url: String,
        /// An event type, or * for all; repeat for several.
        #[arg(long = "event", value_name = "TYPE", required = true)]
        events: Vec<String>,
        /// For people.
        #[arg(long)]
        description: Option<String>,
    },
    /// List endpoints.
    List,
    /// Delete an endpoint; what it had pending is given up.
    Delete {
        /// The endpoint id (whe_…).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum EmailCommand {
    /// Send a test message now (not through the outbox) and print what the SMTP
    /// server answered.
    Test {
        /// The recipient.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum ClientsCommand {
    /// Register a client; prints its metadata as JSON, with the secret (shown once).
    Create(ClientCreateArgs),
    /// List clients.
    List,
    /// Issue a new secret (printed once); the old one works for --grace.
    RotateSecret {
        /// The client id (cli_…).
        id: String,
        /// How long the old secret keeps working, e.g. 1h (default: it stops now).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        grace: HumanDuration,
    },
    /// Delete a client and end every grant it holds.
    Delete {
        /// The client id (cli_…).
        id: String,
    },
}

#[derive(Debug, Args)]
struct ClientCreateArgs {
    /// Name shown to users on the consent page.
    #[arg(long)]
    name: String,
    /// Exact redirect URI; repeat for several (https, or http on loopback).
    #[arg(long = "redirect-uri", value_name = "URI")]
    redirect_uris: Vec<String>,
    /// Grant type: authorization_code, refresh_token, client_credentials; repeat for several.
    #[arg(long = "grant-type", value_name = "GRANT")]
    grant_types: Vec<String>,
    /// client_secret_basic (default), client_secret_post, private_key_jwt, or none (public client).
    #[arg(long = "auth-method", value_name = "METHOD")]
    auth_method: Option<String>,
    /// Space-separated scopes the client may request.
    #[arg(long)]
    scope: Option<String>,
    /// Where logout may return to; repeat for several.
    #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
    post_logout_redirect_uris: Vec<String>,
    /// Browser origin allowed to call the token and userinfo endpoints; repeat for several.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// File with the client's public JWK Set (for private_key_jwt).
    #[arg(long, value_name = "FILE")]
    jwks_file: Option<PathBuf>,
    /// URL of the client's JWK Set (for private_key_jwt).
    #[arg(long, value_name = "URL")]
    jwks_uri: Option<String>,
    /// First-party client: users are not asked for consent.
    #[arg(long)]
    trusted: bool,
}

#[derive(Debug, Subcommand)]
enum ApiKeysCommand {
    /// Create a key for a user and print it once.
    Create {
        /// Email of the owning user; the key can never do more than they can.
        #[arg(long)]
        owner: String,
        /// Scope to grant; repeat for several.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Label shown in lists.
        #[arg(long)]
        name: String,
        /// Lifetime, e.g. 90d (default: no expiry).
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<HumanDuration>,
    },
    /// Check that a string is a well-formed key (prefix, length, checksum); no database needed.
    Check {
        /// The key (or `-` to read it from standard input, keeping it out of shell history).
        key: String,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080 or 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List signing keys and their state.
    List,
    /// Make a new signing key current; older keys stay in the JWKS until their tokens expire.
    Rotate {
        /// Algorithm of the new key (default: keys.algorithm from config).
        #[arg(long, value_enum)]
        algorithm: Option<Algorithm>,
        /// Publish now but sign only after this delay, so caches see the key first (e.g. 10m).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        activate_in: HumanDuration,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Create a user (password read from stdin, or prompted for on a terminal).
    Create {
        /// Sign-in email.
        #[arg(long)]
        email: String,
        /// Role to grant; repeat for several (default: member).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users, oldest first.
    List {
        /// How many to show.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Lift every lock of an account: each address's lockout and the failure
    /// ceiling over all addresses.
    Unlock {
        /// The account's email.
        #[arg(long)]
        email: String,
    },
}

fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    s.parse()
}

/// Parses arguments, runs the command, maps failure to exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        return match serde_json::to_string_pretty(&crate::http::openapi_document()) {
            Ok(doc) => {
                println!("{doc}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let overrides = Overrides {
        listen: match &cli.command {
            Command::Serve(a) => a.listen,
            _ => None,
        },
        data_dir: cli.data_dir.clone(),
        database_url: cli.database_url.clone(),
    };
    let (mut cfg, warnings) = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(f) = cli.log_format {
        cfg.log.format = f;
    }
    init_logging(&cfg);
    for key in warnings {
        tracing::warn!(key, "unknown configuration key ignored (typo?)");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => serve(cfg).await,
        Command::Migrate => {
            let store = server::open_store(&cfg).await?;
            println!("database is up to date");
            store.db.close().await;
            Ok(())
        }
        Command::Keys(cmd) => keys(cmd, cfg).await,
        Command::Users(cmd) => users(cmd, cfg).await,
        Command::Clients(cmd) => clients(cmd, cfg).await,
        Command::Webhooks(cmd) => webhooks(cmd, cfg).await,
        Command::Openapi => Ok(()),
        Command::Email(EmailCommand::Test { to }) => {
            let store = server::open_store(&cfg).await?;
            let issuer = cfg.issuer.clone().unwrap_or_else(|| format!("http://{}", cfg.listen));
            let mailer = crate::mail::Mailer::new(&cfg, &issuer, store.master.clone())?;
            store.db.close().await;
            if !mailer.sends() {
                eprintln!("email.transport is log: the message goes to this log, not to {to}");
            }
            let answer = mailer.send_test(&to).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{answer}");
            Ok(())
        }
        Command::ApiKeys(ApiKeysCommand::Check { key }) => {
            let key = if key == "-" {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                line.trim().to_owned()
            } else {
                key
            };
            if crate::api_keys::well_formed(&key) {
                println!("well-formed Portcullis API key ({}…)", crate::api_keys::display_prefix(&key));
                Ok(())
            } else {
                anyhow::bail!("not a Portcullis API key (wrong prefix, length or checksum)")
            }
        }
        Command::ApiKeys(ApiKeysCommand::Create { owner, scopes, name, expires_in }) => {
            let store = server::open_store(&cfg).await?;
            let email =
                crate::validate::normalize_email(&owner).map_err(|e| anyhow::anyhow!("--owner {}", e.message))?;
            let user = store.db.user_by_email(&email).await?.ok_or_else(|| anyhow::anyhow!("no user {email}"))?;
            let perms = store.db.role_permissions(&user.roles).await?;
            let owner = crate::api_keys::KeyOwner { user_id: &user.id, held: &perms, session_id: None };
            let audit = crate::audit::Audit::new(store.db.clone());
            let keys = crate::api_keys::ApiKeys::new(store.db.clone(), audit, cfg.api_keys.max_ttl.map(|d| d.0));
            let (row, secret) = keys
                .create_for(&RequestCtx::system(), crate::ctx::OPERATOR, owner, &name, &scopes, expires_in.map(|d| d.0))
                .await
                .map_err(explain)?;
            eprintln!(
                "created {} for {} with scopes [{}]; the key is shown once:",
                row.id,
                email,
                row.scopes.join(" ")
            );
            println!("{}", secret.expose());
            store.db.close().await;
            Ok(())
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let running = server::start(cfg).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    running.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn keys(cmd: KeysCommand, cfg: Config) -> anyhow::Result<()> {
    let store = server::open_store(&cfg).await?;
    let mgr = server::key_manager(&cfg, &store, false).await?;
    match cmd {
        KeysCommand::List => {
            println!("{:<45} {:<6} {:<8} {:<25} {:<25}", "KID", "ALG", "STATE", "ACTIVATES", "PUBLISHED UNTIL");
            for (row, state) in mgr.list(clock::now_ms()).await? {
                println!(
                    "{:<45} {:<6} {:<8} {:<25} {:<25}",
                    row.kid,
                    row.alg,
                    format!("{state:?}").to_lowercase(),
                    clock::rfc3339(row.activates_at),
                    row.publish_until.map(clock::rfc3339).unwrap_or_else(|| "-".into())
                );
            }
        }
        KeysCommand::Rotate { algorithm, activate_in } => {
            let alg = algorithm.unwrap_or(cfg.keys.algorithm);
            let row = mgr.rotate(alg, activate_in.0).await?;
            println!(
                "new {} key {} {}; running servers pick it up within {}",
                row.alg,
                row.kid,
                if activate_in.0 == Duration::ZERO {
                    "signs from now".to_owned()
                } else {
                    format!("signs from {}", clock::rfc3339(row.activates_at))
                },
                cfg.keys.reload_interval
            );
        }
    }
    store.db.close().await;
    Ok(())
}

async fn users(cmd: UsersCommand, cfg: Config) -> anyhow::Result<()> {
    let store = server::open_store(&cfg).await?;
    match cmd {
        UsersCommand::Create { email, roles, name, password_stdin } => {
            let password = read_password(password_stdin)?;
            let audit = crate::audit::Audit::new(store.db.clone());
            let admin = crate::admin::Admin::new(store.db.clone(), crate::passwords::Hasher::new(1, 0)?, audit);
            let all_roles: Vec<String> = store.db.role_list().await?.into_iter().map(|r| r.name).collect();
            let operator = crate::ctx::Principal::operator(store.db.role_permissions(&all_roles).await?);
            let input = crate::admin::UserCreate {
                email,
                password: Some(password),
                name,
                roles: if roles.is_empty() { None } else { Some(roles) },
                ..Default::default()
            };
            let user = admin.user_create(&RequestCtx::system(), &operator, input).await.map_err(explain)?;
            println!("created {} <{}> with roles {}", user.id, user.email, user.roles.join(","));
        }
        UsersCommand::Unlock { email } => {
            let email =
                crate::validate::normalize_email(&email).map_err(|e| anyhow::anyhow!("--email {}", e.message))?;
            let key = crate::auth::lock_key(&email);
            let was = store.db.lock_clear(&key, &crate::abuse::ceiling_bucket(&key)).await?;
            let user = store.db.user_by_email(&email).await?;
            let audit = crate::audit::Audit::new(store.db.clone());
            let reason = if was { "cleared" } else { "was not locked" };
            let event = crate::audit::Event {
                reason: Some(reason),
                ..crate::audit::Event::ok("account_unlocked", user.as_ref().map(|u| u.id.as_str()))
                    .by(crate::ctx::OPERATOR)
            };
            audit.record(&RequestCtx::system(), event).await;
            println!("{email}: {}", if was { "every lock lifted" } else { "was not locked" });
        }
        UsersCommand::List { limit } => {
            let mut after: Option<String> = None;
            let mut left = limit;
            while left > 0 {
                let page = store.db.user_list(&Default::default(), after.as_deref(), left.min(500)).await?;
                if page.is_empty() {
                    break;
                }
                for u in &page {
                    println!("{}  {:<40} {}  {}", u.id, u.email, u.roles.join(","), clock::rfc3339(u.created_at));
                }
                left -= page.len() as i64;
                after = page.last().map(|u| u.id.clone());
            }
        }
    }
    store.db.close().await;
    Ok(())
}

async fn clients(cmd: ClientsCommand, cfg: Config) -> anyhow::Result<()> {
    let store = server::open_store(&cfg).await?;
    let oauth = server::oauth_for_cli(&cfg, &store).await?;
    let ctx = RequestCtx::system();
    // The operator holds every permission that exists, like `users create`.
    let all_roles: Vec<String> = store.db.role_list().await?.into_iter().map(|r| r.name).collect();
    let who = crate::ctx::Principal::operator(store.db.role_permissions(&all_roles).await?);
    let print = |v: &portcullis_proto::ClientView| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match cmd {
        ClientsCommand::Create(a) => {
            let jwks = match &a.jwks_file {
                Some(f) => Some(
                    serde_json::from_slice(&std::fs::read(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?)
                        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", f.display()))?,
                ),
                None => None,
            };
            let meta = crate::clients::ClientMetadata {
                client_name: a.name,
                redirect_uris: a.redirect_uris,
                grant_types: a.grant_types,
                token_endpoint_auth_method: a.auth_method.unwrap_or_default(),
                scope: a.scope.unwrap_or_default(),
                jwks,
                jwks_uri: a.jwks_uri,
                post_logout_redirect_uris: a.post_logout_redirect_uris,
                allowed_cors_origins: a.cors_origins,
                trusted: a.trusted,
                ..Default::default()
            };
            print(&oauth.client_create(&ctx, &who, meta).await.map_err(explain)?);
        }
        ClientsCommand::List => {
            let mut cursor: Option<String> = None;
            loop {
                let (page, next) = oauth.client_list(cursor.as_deref(), Some(200)).await.map_err(explain)?;
                for c in &page {
                    println!(
                        "{}  {:<30} {:<20} {}",
                        c.client_id,
                        c.metadata.client_name,
                        c.metadata.token_endpoint_auth_method,
                        c.metadata.grant_types.join(",")
                    );
                }
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
        }
        ClientsCommand::RotateSecret { id, grace } => {
            let ms = i64::try_from(grace.0.as_millis()).unwrap_or(i64::MAX);
            print(&oauth.client_rotate_secret(&ctx, &who, &id, ms).await.map_err(explain)?);
        }
        ClientsCommand::Delete { id } => {
            oauth.client_delete(&ctx, &who, &id).await.map_err(explain)?;
            println!("deleted {id}; its grants are ended");
        }
    }
    store.db.close().await;
    Ok(())
}

async fn webhooks(cmd: WebhooksCommand, cfg: Config) -> anyhow::Result<()> {
    let store = server::open_store(&cfg).await?;
    let audit = crate::audit::Audit::new(store.db.clone());
    let policy = crate::outbound::Policy::from_config(&cfg);
    let hooks = crate::webhooks::Webhooks::new(store.db.clone(), store.master.clone(), policy, audit);
    let ctx = RequestCtx::system();
    // The operator holds every permission that exists, like `users create`.
    let all_roles: Vec<String> = store.db.role_list().await?.into_iter().map(|r| r.name).collect();
    let who = crate::ctx::Principal::operator(store.db.role_permissions(&all_roles).await?);
    match cmd {
        WebhooksCommand::Create { url, events, description } => {
            let req = portcullis_proto::WebhookCreateRequest { url, events, description, enabled: None };
            let view = hooks.create(&ctx, &who, req).await.map_err(explain)?;
            println!("{}", serde_json::to_string_pretty(&view).unwrap_or_default());
        }
        WebhooksCommand::List => {
            let mut cursor: Option<String> = None;
            loop {
                let (page, next) = hooks.list(cursor.as_deref(), Some(200)).await.map_err(explain)?;
                for e in &page {
                    let state = if e.enabled { "enabled" } else { "disabled" };
                    println!("{}  {:<8} {:<50} {}", e.id, state, e.url, e.events.join(","));
                }
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
        }
        WebhooksCommand::Delete { id } => {
            hooks.delete(&ctx, &who, &id).await.map_err(explain)?;
            println!("deleted {id}; its pending deliveries are given up");
        }
    }
    store.db.close().await;
    Ok(())
}

/// A domain error as one line an operator can act on.
fn explain(e: crate::auth::AuthError) -> anyhow::Error {
    match e {
        crate::auth::AuthError::Validation(errors) => anyhow::anyhow!(
            "{}",
            errors.iter().map(|e| format!("{} {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
        ),
        crate::auth::AuthError::Denied(missing) => {
            anyhow::anyhow!("the owner does not hold the scope(s): {}", missing.join(" "))
        }
        other => anyhow::anyhow!("{other}"),
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<Secret> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let pw = line.trim_end_matches(['\n', '\r']).to_owned();
        if pw.is_empty() {
            anyhow::bail!("no password on standard input");
        }
        return Ok(Secret::new(pw));
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("pass --password-stdin to read the password from standard input");
    }
    let first = rpassword::prompt_password("Password: ")?;
    let second = rpassword::prompt_password("Repeat password: ")?;
    if first != second {
        anyhow::bail!("the passwords do not match");
    }
    Ok(Secret::new(first))
}
