//! The load generator: closed-loop HTTP/1.1 keep-alive connections to loopback, one
//! task per connection, each request's latency into an HDR histogram. A request
//! counts when it COMPLETES inside the measured window (after the warm-up, before
//! the deadline); requests still in flight at the deadline are dropped, so neither
//! the throughput nor the tail is biased by the edges.
//!
//! Closed loop means coordinated omission: a slow answer delays the next request of
//! its connection, so latencies are those of a system kept exactly at `connections`
//! requests in flight, not of an open arrival rate.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, Request, StatusCode,
    client::conn::http1,
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue},
};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

/// A request to send, cheap to clone (bodies are `Bytes`).
#[derive(Debug, Clone)]
pub struct Req {
    /// GET or POST.
    pub method: Method,
    /// Path and query.
    pub path: &'static str,
    /// JSON body, empty for GET.
    pub body: Bytes,
    /// One credential header (`Authorization` or `X-API-Key`).
    pub auth: Option<(HeaderName, HeaderValue)>,
    /// The body is form-encoded (OAuth), not JSON.
    pub form: bool,
}

impl Req {
    /// A GET.
    pub fn get(path: &'static str) -> Self {
        Self { method: Method::GET, path, body: Bytes::new(), auth: None, form: false }
    }

    /// A POST of a form-encoded body.
    pub fn form(path: &'static str, body: &str) -> Self {
        Self { method: Method::POST, path, body: Bytes::from(body.to_owned()), auth: None, form: true }
    }

    /// A POST of a JSON value.
    pub fn post(path: &'static str, json: &serde_json::Value) -> Self {
        Self { method: Method::POST, path, body: Bytes::from(json.to_string()), auth: None, form: false }
    }
}

impl Conn {
    /// Connects (TCP_NODELAY) and spawns the connection's driver task.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender, host: HeaderValue::from_str(&addr.to_string())? })
    }

    /// Sends one request and reads the whole response.
    pub async fn send(&mut self, req: &Req) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut b = Request::builder().method(req.method.clone()).uri(req.path).header(HOST, self.host.clone());
        if !req.body.is_empty() {
            b = b.header(CONTENT_TYPE, if req.form { "application/x-www-form-urlencoded" } else { "application/json" });
        }
        if let Some((name, value)) = &req.auth {
            b = b.header(name.clone(), value.clone());
        }
        let request = b.body(Full::new(req.body.clone()))?;
        self.sender.ready().await?;
        let res = self.sender.send_request(request).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// One GET on a fresh connection, for readiness polls; the status code.
pub async fn get_status(addr: SocketAddr, path: &'static str) -> anyhow::Result<u16> {
    let mut c = tokio::time::timeout(Duration::from_secs(2), Conn::open(addr)).await??;
    let (s, _) = tokio::time::timeout(Duration::from_secs(2), c.send(&Req::get(path))).await??;
    Ok(s.as_u16())
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    refresh_token: String,
}

/// A signed-in session: what the `me` and `refresh` scenarios start from.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Bearer token.
    pub access: String,
    /// Single-use refresh token.
    pub refresh: String,
}

/// A user the bench registered through the API.
#[derive(Debug, Clone)]
pub struct Account {
    /// Email.
    pub email: String,
    /// Password.
    pub password: String,
}

impl Account {
    fn login_req(&self) -> Req {
        Req::post("/v1/auth/login", &serde_json::json!({"email": self.email, "password": self.password}))
    }
}

fn short(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

/// Registers an account (201, or 409 when it exists already).
pub async fn register(conn: &mut Conn, a: &Account) -> anyhow::Result<()> {
    let req =
        Req::post("/v1/auth/register", &serde_json::json!({"email": a.email, "password": a.password, "name": "Bench"}));
    let (s, body) = conn.send(&req).await?;
    if s != StatusCode::CREATED && s != StatusCode::CONFLICT {
        bail!("register {}: {s} {}", a.email, short(&body));
    }
    Ok(())
}

/// Signs in and returns the tokens.
pub async fn login(conn: &mut Conn, a: &Account) -> anyhow::Result<Tokens> {
    let (s, body) = conn.send(&a.login_req()).await?;
    if s != StatusCode::OK {
        bail!("login {}: {s} {}", a.email, short(&body));
    }
    let t: TokenBody = serde_json::from_slice(&body).context("login response")?;
    Ok(Tokens { access: t.access_token, refresh: t.refresh_token })
}

impl Req {
    /// With `Authorization: Bearer <token>`.
    pub fn bearer(mut self, token: &str) -> Self {
        self.auth = HeaderValue::from_str(&format!("Bearer {token}")).ok().map(|v| (AUTHORIZATION, v));
        self
    }

    /// With `Authorization: Basic` client credentials.
    pub fn basic(mut self, id: &str, secret: &str) -> Self {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        self.auth = HeaderValue::from_str(&format!("Basic {token}")).ok().map(|v| (AUTHORIZATION, v));
        self
    }

    /// With `X-API-Key: <key>`.
    pub fn api_key(mut self, key: &str) -> Self {
        self.auth = HeaderValue::from_str(key).ok().map(|v| (HeaderName::from_static("x-api-key"), v));
        self
    }
}

#[derive(Deserialize)]
struct ApiKeyBody {
    key: String,
}

/// Creates an API key (no scopes) for the user of `access_token`; returns the secret.
pub async fn create_api_key(conn: &mut Conn, access_token: &str) -> anyhow::Result<String> {
    let req = Req::post("/v1/api-keys", &serde_json::json!({"name": "bench", "scopes": []})).bearer(access_token);
    let (s, body) = conn.send(&req).await?;
    if s != StatusCode::CREATED {
        bail!("creating an API key: {s} {}", short(&body));
    }
    Ok(serde_json::from_slice::<ApiKeyBody>(&body).context("API key response")?.key)
}

/// Makes `admin` a verifier: a role holding `api_keys:verify`, granted to them,
/// and a key with that scope (from a new sign-in, whose token carries the new
/// permission); returns the key.
pub async fn create_verifier_key(conn: &mut Conn, admin: &Account) -> anyhow::Result<String> {
    let admin_token = &login(conn, admin).await?.access;
    let role = serde_json::json!({"name": "bench-verifier", "permissions": ["api_keys:verify"]});
    let (s, body) = conn.send(&Req::post("/v1/admin/roles", &role).bearer(admin_token)).await?;
    if s != StatusCode::CREATED && s != StatusCode::CONFLICT {
        bail!("creating the verifier role: {s} {}", short(&body));
    }
    let (s, body) = conn.send(&Req::get("/v1/me").bearer(admin_token)).await?;
    let me: serde_json::Value = serde_json::from_slice(&body).context("/v1/me response")?;
    let id =
        me.get("id").and_then(serde_json::Value::as_str).with_context(|| format!("/v1/me: {s} {}", short(&body)))?;
    let grant = serde_json::json!({"role": "bench-verifier"});
    // A path made once per run: leaking it keeps `Req` cheap to clone.
    let path: &'static str = Box::leak(format!("/v1/admin/users/{id}/roles").into_boxed_str());
    let (s, body) = conn.send(&Req::post(path, &grant).bearer(admin_token)).await?;
    if !s.is_success() && s != StatusCode::CONFLICT {
        bail!("granting the verifier role: {s} {}", short(&body));
    }
    let fresh = login(conn, admin).await?.access;
    let req = Req::post("/v1/api-keys", &serde_json::json!({"name": "verifier", "scopes": ["api_keys:verify"]}))
        .bearer(&fresh);
    let (s, body) = conn.send(&req).await?;
    if s != StatusCode::CREATED {
        bail!("creating the verifier key: {s} {}", short(&body));
    }
    Ok(serde_json::from_slice::<ApiKeyBody>(&body).context("API key response")?.key)
}

/// What one connection sends over and over.
#[derive(Debug, Clone)]
pub enum Work {
    /// The same request every time (`/v1/me` with one bearer, JWKS, login).
    Fixed(Req),
    /// Refresh-token rotation: each request presents the token the previous answer
    /// returned; a broken chain signs in again (not timed, counted as an error).
    RefreshChain {
        /// The current refresh token.
        token: String,
        /// Who to sign in as when the chain breaks.
        account: Account,
    },
}

impl Work {
    fn request(&self) -> Req {
        match self {
            Work::Fixed(r) => r.clone(),
            Work::RefreshChain { token, .. } => {
                Req::post("/v1/auth/refresh", &serde_json::json!({ "refresh_token": token }))
            }
        }
    }
}

/// Settings of one scenario run.
#[derive(Debug, Clone, Copy)]
pub struct RunPlan {
    /// Not recorded.
    pub warmup: Duration,
    /// Recorded.
    pub duration: Duration,
    /// Any single request slower than this is an error (and ends its connection's
    /// wait).
    pub request_timeout: Duration,
}

/// What one scenario measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Successful requests completed in the window.
    pub ok: u64,
    /// Failed requests (non-2xx, I/O error, timeout) in the window.
    pub errors: u64,
    /// The window's length, seconds.
    pub window_secs: f64,
    /// Latency of successful requests, microseconds.
    pub hist: Histogram<u64>,
    /// The first failure seen, for the report.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        if self.window_secs > 0.0 { self.ok as f64 / self.window_secs } else { 0.0 }
    }
}

fn new_hist() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 120_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

struct Worker {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Worker {
    fn fail(&mut self, in_window: bool, why: impl FnOnce() -> String) {
        if in_window {
            self.errors += 1;
            if self.first_error.is_none() {
                self.first_error = Some(why());
            }
        }
    }
}

async fn worker(
    addr: SocketAddr,
    mut conn: Conn,
    mut work: Work,
    window: (Instant, Instant),
    timeout: Duration,
) -> anyhow::Result<Worker> {
    let (from, until) = window;
    let mut w = Worker { hist: new_hist()?, ok: 0, errors: 0, first_error: None };
    let mut broken = false;
    let mut reconnects = 0u32;
    // Bounded by the deadline (every request also has a timeout).
    while Instant::now() < until {
        if broken {
            // Bounded: a server that keeps refusing ends this connection's work.
            reconnects += 1;
            if reconnects > 1000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            match tokio::time::timeout(timeout, Conn::open(addr)).await {
                Ok(Ok(c)) => {
                    conn = c;
                    broken = false;
                }
                _ => continue,
            }
        }
        let req = work.request();
        let t0 = Instant::now();
        let res = tokio::time::timeout(timeout, conn.send(&req)).await;
        let done = Instant::now();
        let in_window = done >= from && done <= until;
        match res {
            Ok(Ok((status, body))) if status.is_success() => {
                if let Work::RefreshChain { token, .. } = &mut work {
                    match serde_json::from_slice::<TokenBody>(&body) {
                        Ok(t) => *token = t.refresh_token,
                        Err(e) => {
                            w.fail(in_window, || format!("refresh response: {e}"));
                            continue;
                        }
                    }
                }
                if in_window {
                    w.ok += 1;
                    let us = u64::try_from(done.duration_since(t0).as_micros()).unwrap_or(u64::MAX);
                    let _ = w.hist.record(us.max(1));
                }
            }
            Ok(Ok((status, body))) => {
                w.fail(in_window, || format!("{status} {}", short(&body)));
                if let Work::RefreshChain { token, account } = &mut work {
                    // The chain is broken: start a new session, untimed.
                    if Instant::now() < until
                        && let Ok(Ok(t)) = tokio::time::timeout(timeout, login(&mut conn, account)).await
                    {
                        *token = t.refresh;
                    }
                }
            }
            Ok(Err(e)) => {
                w.fail(in_window, || format!("I/O: {e:#}"));
                broken = true;
            }
            Err(_) => {
                w.fail(in_window, || format!("no answer within {timeout:?}"));
                broken = true;
            }
        }
    }
    Ok(w)
}

/// Runs one scenario: opens one connection per `works` entry, then drives them all
/// for `warmup + duration`.
pub async fn run(addr: SocketAddr, works: Vec<Work>, plan: RunPlan) -> anyhow::Result<Outcome> {
    let mut conns = Vec::with_capacity(works.len());
    for _ in 0..works.len() {
        conns.push(
            tokio::time::timeout(Duration::from_secs(5), Conn::open(addr)).await.context("connecting timed out")??,
        );
    }
    let start = Instant::now();
    let from = start + plan.warmup;
    let until = from + plan.duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(works)
        .map(|(c, w)| tokio::spawn(worker(addr, c, w, (from, until), plan.request_timeout)))
        .collect();
    let mut out =
        Outcome { ok: 0, errors: 0, window_secs: plan.duration.as_secs_f64(), hist: new_hist()?, first_error: None };
    // Every worker stops at the deadline or one request timeout after it.
    let grace = until + plan.request_timeout + Duration::from_secs(2);
    for t in tasks {
        let left = grace.saturating_duration_since(Instant::now());
        let abort = t.abort_handle();
        match tokio::time::timeout(left, t).await {
            Ok(Ok(Ok(w))) => {
                out.ok += w.ok;
                out.errors += w.errors;
                let _ = out.hist.add(&w.hist);
                if out.first_error.is_none() {
                    out.first_error = w.first_error;
                }
            }
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => bail!("a load task failed: {e}"),
            Err(_) => {
                abort.abort();
                out.errors += 1;
                out.first_error.get_or_insert_with(|| "a connection did not finish in time".into());
            }
        }
    }
    Ok(out)
}
