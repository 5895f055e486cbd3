//! Bad input gets a clear problem+json answer, never a 500; headers every response
//! must carry.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Backend, Data, TestServer, assert_problem};

crate::backend_tests!(malformed_and_oversized_bodies, unknown_routes_and_methods, security_headers_everywhere);

async fn malformed_and_oversized_bodies(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let post_raw = |body: &'static str, ct: Option<&'static str>| {
        let mut req = srv.client.post(srv.url("/v1/auth/login")).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let p = assert_problem(
        post_raw("{not json", Some("application/json")).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["code"], "invalid_json");
    let p = assert_problem(
        post_raw("", Some("application/json")).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["code"], "invalid_json");
    let p = assert_problem(
        post_raw("[1,2]", Some("application/json")).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["code"], "invalid_type");
    let p = assert_problem(
        post_raw(r#"{"email":"a@b.io","password":"x"} trailing"#, Some("application/json")).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["code"], "invalid_json");
    let p = assert_problem(
        post_raw(r#"{"email":"a@b.io"}"#, Some("application/json")).await.unwrap(),
        StatusCode::BAD_REQUEST,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "password");
    assert_eq!(p["errors"][0]["code"], "required");
    assert_problem(
        post_raw(r#"{"email":"a@b.io","password":"x"}"#, None).await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_problem(
        post_raw("email=a", Some("application/x-www-form-urlencoded")).await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    // Over the 64 KiB default limit: 413, both with and without Content-Length.
    let huge = json!({"email": "a@b.io", "password": "x".repeat(70 * 1024)});
    assert_problem(
        srv.post("/v1/auth/register", huge.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(huge.to_string().into_bytes())];
    let res = srv
        .client
        .post(srv.url("/v1/auth/register"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // Deeply nested JSON and odd unicode are errors or fine, never a crash.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let res = srv
        .client
        .post(srv.url("/v1/auth/login"))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res =
        srv.post("/v1/auth/login", json!({"email": "\u{0}\u{202e}@x.io", "password": "\u{1F600}".repeat(300)})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let res = srv
        .client
        .get(srv.url("/v1/me"))
        .header("authorization", reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfejunk").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(srv.client.get(srv.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    srv.stop().await;
}

async fn unknown_routes_and_methods(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    assert_problem(srv.client.get(srv.url("/v1/nope")).send().await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(
        srv.client.get(srv.url("/v1/auth/login")).send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    srv.stop().await;
}

async fn security_headers_everywhere(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |c| c.http.hsts = Some("365d".parse().unwrap())).await;
    let ok = srv.client.get(srv.url("/healthz")).send().await.unwrap();
    let err = srv.client.get(srv.url("/v1/me")).send().await.unwrap();
    let missing = srv.client.get(srv.url("/missing")).send().await.unwrap();
    for res in [&ok, &err, &missing] {
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["strict-transport-security"], "max-age=31536000; includeSubDomains");
        assert!(h["x-request-id"].to_str().unwrap().starts_with("req_"));
    }
    srv.stop().await;
    // Without TLS configuration there is no HSTS.
    let srv = TestServer::start_on(&data, |_| {}).await;
    let res = srv.client.get(srv.url("/healthz")).send().await.unwrap();
    assert!(res.headers().get("strict-transport-security").is_none());
    srv.stop().await;
}
