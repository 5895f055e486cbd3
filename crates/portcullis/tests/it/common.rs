//! The testkit: starts the real server (the same `server::start` as `portcullis
//! serve`) on an ephemeral loopback port, on a fresh SQLite file or a fresh
//! PostgreSQL database, and drives it over HTTP.

use std::{path::PathBuf, time::Duration};

use portcullis::{config::Config, server};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

/// Which storage backend a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// Admin URL of a PostgreSQL cluster; each test gets its own database.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL from `PORTCULLIS_TEST_DATABASE_URL`; without it the test is skipped,
    /// except in CI, where a missing database must fail the run, not hide it.
    pub fn postgres() -> Option<Self> {
        match std::env::var("PORTCULLIS_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ if std::env::var("CI").is_ok_and(|v| !v.is_empty()) => {
                panic!("CI is set but PORTCULLIS_TEST_DATABASE_URL is not: PostgreSQL tests cannot run")
            }
            _ => {
                eprintln!("skipping: set PORTCULLIS_TEST_DATABASE_URL (or use scripts/test) to run on PostgreSQL");
                None
            }
        }
    }
}

/// A place for a server's data: a temp dir plus, on PostgreSQL, a fresh database.
pub struct Data {
    pub dir: tempfile::TempDir,
    pub database_url: Option<String>,
}

impl Data {
    pub async fn new(backend: &Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres(admin) => Some(create_pg_database(admin).await),
        };
        Data { dir, database_url }
    }

    pub fn config(&self) -> Config {
        let mut cfg = Config::for_test(self.dir.path().to_path_buf());
        cfg.database_url = self.database_url.clone();
        cfg
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

async fn create_pg_database(admin: &str) -> String {
    use sqlx::Connection;
    let name = format!("pcl_{}", portcullis::crypto::new_id("t", portcullis::clock::now_ms()).replace('_', ""));
    let mut conn = sqlx::PgConnection::connect(admin).await.expect("connect to the PostgreSQL admin URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    // Swap the database name (the last path segment, before any query string).
    let (base, query) = admin.split_once('?').map(|(b, q)| (b, format!("?{q}"))).unwrap_or((admin, String::new()));
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}{query}")
}

/// A running server and an HTTP client for it.
pub struct TestServer {
    pub base: String,
    pub client: Client,
    pub cfg: Config,
    running: Option<server::Running>,
}

impl TestServer {
    /// Starts a server on `data` with the test config, adjusted by `tweak`.
    pub async fn start_on(data: &Data, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut cfg = data.config();
        tweak(&mut cfg);
        Self::start_cfg(cfg).await
    }

    pub async fn start_cfg(cfg: Config) -> Self {
        let running = server::start(cfg.clone()).await.expect("server starts");
        let base = format!("http://{}", running.addr);
        let client = Client::builder().timeout(Duration::from_secs(60)).user_agent("portcullis-tests").build().unwrap();
        TestServer { base, client, cfg, running: Some(running) }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
    }

    /// The server's own database handle.
    pub fn db(&self) -> &portcullis::store::Db {
        self.running.as_ref().unwrap().db()
    }

    /// Statements the server ran through write transactions so far.
    pub fn write_statements(&self) -> u64 {
        self.running.as_ref().unwrap().db().debug_write_statements()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.client.post(self.url(path)).json(&body).send().await.unwrap()
    }

    pub async fn post_auth(&self, path: &str, token: &str, body: Value) -> Response {
        self.client.post(self.url(path)).bearer_auth(token).json(&body).send().await.unwrap()
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.unwrap()
    }

    pub async fn register(&self, email: &str, password: &str) -> Value {
        let res = self.post("/v1/auth/register", json!({"email": email, "password": password})).await;
        assert_eq!(res.status(), StatusCode::CREATED, "register {email}");
        res.json().await.unwrap()
    }

    /// Logs in and returns the token response.
    pub async fn login(&self, email: &str, password: &str) -> Tokens {
        let res = self.post("/v1/auth/login", json!({"email": email, "password": password})).await;
        assert_eq!(res.status(), StatusCode::OK, "login {email}");
        Tokens::from(res.json::<Value>().await.unwrap())
    }

    /// Registers a fresh user and logs in.
    pub async fn user(&self, email: &str) -> Tokens {
        self.register(email, PASSWORD).await;
        self.login(email, PASSWORD).await
    }

    /// Status of `GET /v1/me` with this token.
    pub async fn me_status(&self, token: &str) -> StatusCode {
        self.get_auth("/v1/me", token).await.status()
    }

    /// Registers a user, makes them an admin directly in the database (as an
    /// operator's `users create --role admin` would), and logs in.
    pub async fn admin(&self, email: &str) -> Tokens {
        let body = self.register(email, PASSWORD).await;
        let db = portcullis::store::Db::connect(&self.cfg.database_url()).await.unwrap();
        db.user_grant_role(body["user"]["id"].as_str().unwrap(), "admin", 0).await.unwrap();
        db.close().await;
        self.login(email, PASSWORD).await
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> Response {
        let mut req = self.client.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    pub async fn with_key(&self, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> Response {
        let mut req = self.client.request(method, self.url(path)).header("x-api-key", key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post("/v1/auth/refresh", json!({"refresh_token": refresh_token})).await
    }
}

/// A password that passes the policy.
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub body: Value,
}

impl From<Value> for Tokens {
    fn from(body: Value) -> Self {
        Tokens {
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
            body,
        }
    }
}

/// Asserts a problem+json answer with this status and code; returns the body.
pub async fn assert_problem(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "status");
    let ct = res.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert_eq!(ct, "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    body
}

/// Decodes a JWT segment (0 = header, 1 = claims) without verifying.
pub fn jwt_part(token: &str, i: usize) -> Value {
    let seg = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&portcullis::crypto::b64url_decode(seg).unwrap()).unwrap()
}

/// Re-assembles a JWT from JSON header and claims and a raw signature.
pub fn jwt_build(header: &Value, claims: &Value, sig: &[u8]) -> String {
    use portcullis::crypto::b64url;
    format!("{}.{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()), b64url(sig))
}

/// Runs each listed `async fn name(backend: Backend)` once per backend.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = $crate::common::Backend::postgres() else { return };
                    super::$name(backend).await
                }
            )*
        }
    };
}

/// Audit records about a user once `pred` holds for them: audit writes are
/// buffered, so a test polls (bounded) instead of assuming they already landed.
pub async fn audit_until(
    srv: &TestServer,
    user_id: &str,
    pred: impl Fn(&[portcullis::store::AuditRecord]) -> bool,
) -> Vec<portcullis::store::AuditRecord> {
    let db = portcullis::store::Db::connect(&srv.cfg.database_url()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let records = db.audit_for_user(user_id, 500).await.unwrap();
        if pred(&records) || std::time::Instant::now() > deadline {
            db.close().await;
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tiny HTTP server on loopback that answers every request with `body` as JSON
/// (a client's `jwks_uri`); returns its URL and the count of connections it took.
pub async fn json_server(
    body: String,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>, tokio::task::JoinHandle<()>) {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let served = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 2048];
            let _ = sock.read(&mut buf).await;
            let res = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(res.as_bytes()).await;
        }
    });
    (url, hits, served)
}
