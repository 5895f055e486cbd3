//! The scenarios: what is loaded, which machine limit it is compared with, and its
//! target.

use clap::ValueEnum;

/// A load scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `POST /v1/auth/login` with a registered account's password.
    Login,
    /// `POST /v1/auth/refresh`, each connection chaining its own refresh tokens.
    Refresh,
    /// `GET /v1/me` with a bearer token (verification plus session check).
    Me,
    /// `GET /.well-known/jwks.json`.
    Jwks,
    /// OAuth 2.0 client-credentials grant with `client_secret_basic` (limit: signature rate).
    ClientCredentials,
    /// `GET /v1/me` with `X-API-Key` (limit: SHA-256, what the server hashes the key with).
    ApiKey,
    /// `POST /v1/api-keys/verify` by a verifier key holding `api_keys:verify`, of the
    /// accounts' keys (limit: SHA-256).
    ApiKeyVerify,
}

impl Scenario {
    /// Report order.
    pub const ALL: [Scenario; 7] = [
        Scenario::Login,
        Scenario::Refresh,
        Scenario::Me,
        Scenario::ApiKey,
        Scenario::ApiKeyVerify,
        Scenario::Jwks,
        Scenario::ClientCredentials,
    ];

    /// Run order: cheap, memory-light scenarios first, so Argon2id's 19 MiB
    /// buffers (which the allocator keeps) do not inflate the others' peak RSS.
    pub const RUN_ORDER: [Scenario; 7] = [
        Scenario::Jwks,
        Scenario::Me,
        Scenario::ApiKey,
        Scenario::ApiKeyVerify,
        Scenario::Refresh,
        Scenario::Login,
        Scenario::ClientCredentials,
    ];

    /// Stable key for JSON.
    pub fn key(self) -> &'static str {
        match self {
            Scenario::Login => "login",
            Scenario::Refresh => "refresh",
            Scenario::Me => "me",
            Scenario::Jwks => "jwks",
            Scenario::ClientCredentials => "client_credentials",
            Scenario::ApiKey => "api_key",
            Scenario::ApiKeyVerify => "api_key_verify",
        }
    }

    /// What is requested.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::Login => "POST /v1/auth/login",
            Scenario::Refresh => "POST /v1/auth/refresh",
            Scenario::Me => "GET /v1/me (bearer)",
            Scenario::Jwks => "GET /.well-known/jwks.json",
            Scenario::ClientCredentials => "POST /oauth/token (client_credentials)",
            Scenario::ApiKey => "GET /v1/me (X-API-Key)",
            Scenario::ApiKeyVerify => "POST /v1/api-keys/verify",
        }
    }

    /// The key of the machine limit this scenario is bounded by (see `limits`).
    pub fn limit_key(self) -> Option<&'static str> {
        match self {
            Scenario::Login => Some("argon2id"),
            Scenario::Refresh | Scenario::ClientCredentials => Some("sign"),
            Scenario::Me => Some("verify"),
            Scenario::ApiKey | Scenario::ApiKeyVerify => Some("sha256"),
            Scenario::Jwks => None,
        }
    }
}

/// What a run is judged against; targets are reported, never asserted.
#[derive(Debug, Clone, Copy)]
pub struct TargetCtx {
    /// Cores the server may use (1 when pinned).
    pub server_cores: usize,
    /// Whether the backend is SQLite (the refresh target is for SQLite).
    pub sqlite: bool,
    /// The server's signing algorithm (the client-credentials target depends on it).
    pub algorithm: portcullis::keys::Algorithm,
}

/// A target's text and whether it was met.
pub fn target(s: Scenario, rps: f64, p99_ms: f64, ratio: Option<f64>, ctx: TargetCtx) -> Option<(String, bool)> {
    match s {
        Scenario::Login => ratio.map(|r| ("≥ 90% of raw Argon2id".to_owned(), r >= 0.9)),
        Scenario::Me => {
            let per_core = rps / ctx.server_cores.max(1) as f64;
            Some(("≥ 20k/s per server core, p99 < 5 ms".to_owned(), per_core >= 20_000.0 && p99_ms < 5.0))
        }
        Scenario::Refresh if ctx.sqlite => Some(("≥ 3k/s on SQLite".to_owned(), rps >= 3_000.0)),
        Scenario::ClientCredentials => match ctx.algorithm {
            portcullis::keys::Algorithm::Rs256 => ratio.map(|r| ("≥ 80% of raw RS256 signing".to_owned(), r >= 0.8)),
            portcullis::keys::Algorithm::EdDsa => {
                let per_core = rps / ctx.server_cores.max(1) as f64;
                Some(("≥ 25k/s per server core (EdDSA)".to_owned(), per_core >= 25_000.0))
            }
            portcullis::keys::Algorithm::Es256 => None,
        },
        _ => None,
    }
}

/// Peak RSS under load target, MiB.
pub const LOAD_RSS_MIB: f64 = 100.0;
/// Idle RSS target, MiB.
pub const IDLE_RSS_MIB: f64 = 30.0;
/// Ready on an empty database, milliseconds.
pub const READY_MS: f64 = 200.0;
