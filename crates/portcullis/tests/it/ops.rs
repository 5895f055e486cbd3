//! Operations endpoints.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Backend, Data, TestServer};

crate::backend_tests!(health_ready_and_metrics);

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
