//! The real `portcullis serve` process: JSON logs that carry no secret, and a
//! SIGTERM that lets in-flight requests finish before the process exits.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Backend, Data, PASSWORD};

crate::backend_tests!(serve_logs_no_secrets_and_drains_on_sigterm);

/// A running `portcullis serve` process.
pub struct Served {
    pub child: std::process::Child,
    /// Its base URL, once it is ready.
    pub base: String,
    /// Its log lines (kept filling until it exits).
    pub lines: Arc<Mutex<Vec<String>>>,
    /// The thread reading its stderr; ends when the process does.
    pub reader: std::thread::JoinHandle<()>,
}

impl Served {
    /// Signs up `email` (with the test password) on this process; it must succeed.
    pub async fn register(&self, email: &str) {
        let res = reqwest::Client::new()
            .post(format!("{}/v1/auth/register", self.base))
            .json(&serde_json::json!({"email": email, "password": crate::common::PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::CREATED);
    }
}

/// A `portcullis serve` process on `data` with JSON logs on stderr and `env`.
pub async fn spawn_serve(data: &Data, env: &[(&str, &str)]) -> Served {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"]).arg(data.data_dir());
    if let Some(url) = &data.database_url {
        cmd.arg("--database-url").arg(url);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["fields"]["message"] == "portcullis is ready"
            {
                let _ = addr_tx.send(v["fields"]["addr"].as_str().unwrap_or_default().to_owned());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the server logs a JSON ready line with its address");
    Served { child, base: format!("http://{addr}"), lines, reader }
}

async fn serve_logs_no_secrets_and_drains_on_sigterm(backend: Backend) {
    let data = Data::new(&backend).await;
    let Served { mut child, base, lines, reader } = spawn_serve(
        &data,
        &[
            ("RUST_LOG", "debug"),
            ("PORTCULLIS_SECURITY__HASH_CONCURRENCY", "2"),
            ("PORTCULLIS_SECURITY__LOGIN_RATE", "1000/1m"),
            ("PORTCULLIS_SECURITY__LOCKOUT_THRESHOLD", "20"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(format!("{base}{path}")).json(&body).send();

    let email = "logs@example.com";
    assert_eq!(post("/v1/auth/register", json!({"email": email, "password": PASSWORD})).await.unwrap().status(), 201);
    let login: Value =
        post("/v1/auth/login", json!({"email": email, "password": PASSWORD})).await.unwrap().json().await.unwrap();
    let (access, refresh) =
        (login["access_token"].as_str().unwrap().to_owned(), login["refresh_token"].as_str().unwrap().to_owned());
    let refreshed: Value =
        post("/v1/auth/refresh", json!({"refresh_token": refresh})).await.unwrap().json().await.unwrap();
    let refresh2 = refreshed["refresh_token"].as_str().unwrap().to_owned();
    let _ = post("/v1/auth/refresh", json!({"refresh_token": refresh})).await.unwrap(); // reuse
    let _ = post("/v1/auth/login", json!({"email": email, "password": "the wrong passphrase"})).await.unwrap();
    let _ = client.get(format!("{base}/v1/me")).bearer_auth(&access).send().await.unwrap();

    // In-flight logins when SIGTERM arrives all complete.
    let mut inflight = Vec::new();
    for _ in 0..8 {
        let req = client.post(format!("{base}/v1/auth/login")).json(&json!({"email": email, "password": PASSWORD}));
        inflight.push(tokio::spawn(async move { req.send().await.map(|r| r.status()) }));
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    for r in inflight {
        let status = r.await.unwrap().expect("in-flight request completed");
        if status != StatusCode::OK {
            std::thread::sleep(Duration::from_millis(500));
            let logs = lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            panic!("in-flight login answered {status}; server warnings and errors:\n{logs}");
        }
    }
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    reader.join().unwrap();

    let logs = lines.lock().unwrap().join("\n");
    assert!(logs.contains("\"request_id\":\"req_"), "request ids are logged");
    assert!(logs.contains("refresh token reuse detected"));
    let master = std::fs::read_to_string(data.data_dir().join("master.key")).unwrap();
    for secret in [PASSWORD, "the wrong passphrase", &access, &refresh, &refresh2, master.trim()] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
    // Every line is JSON.
    for line in logs.lines() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "not JSON: {line}");
    }
}
