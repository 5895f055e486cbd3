//! Operations endpoints.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Backend, Data, TestServer};

crate::backend_tests!(health_ready_and_metrics, slow_headers_are_cut_off_and_connections_capped);

async fn health_ready_and_metrics(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let res = srv.client.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = srv.client.get(srv.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");

    srv.user("metrics@example.com").await;
    let _ = srv
        .post("/v1/auth/login", serde_json::json!({"email": "metrics@example.com", "password": "wrong password"}))
        .await;
    let text = srv.client.get(srv.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("portcullis_http_requests_total"), "{text}");
    assert!(text.contains(r#"route="/v1/auth/login""#), "{text}");
    assert!(text.contains(r#"portcullis_logins_total{outcome="failure"}"#), "{text}");
    assert!(text.contains(r#"portcullis_logins_total{outcome="success"}"#), "{text}");
    srv.stop().await;
}

async fn slow_headers_are_cut_off_and_connections_capped(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |c| {
        c.http.header_read_timeout = "1s".parse().unwrap();
        c.http.max_connections = 3;
    })
    .await;
    let addr = srv.base.trim_start_matches("http://").to_owned();
    // Slowloris: headers that never end. The server hangs up after the timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));

    // A socket that says nothing at all is closed after the timeout too.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a silent connection was kept open");

    // At the cap, new connections are closed on accept; when one frees, service resumes.
    let idle: Vec<_> = futures::future::join_all((0..3).map(|_| tokio::net::TcpStream::connect(addr.clone()))).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let fresh = reqwest::Client::new();
    assert!(fresh.get(srv.url("/healthz")).send().await.is_err(), "a 4th connection is refused");
    drop(idle);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let ok = reqwest::Client::new().get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // Shutdown does not wait on half-open clients.
    let mut stuck = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stuck.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    srv.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "stop took {:?}", started.elapsed());
}
