//! The OpenAPI document: committed and current, complete (no route of the router
//! left out, none listed that the server does not answer), valid OpenAPI 3.1 by an
//! independent validator, and the `/docs` page served without anything from elsewhere.

use std::{collections::BTreeMap, path::PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{Backend, Data, TestServer};

crate::backend_tests!(
    served_document_is_valid_openapi_3_1,
    documented_operations_are_routed,
    reference_page_is_self_contained
);

/// Routes that are not JSON: the hosted pages, their assets, and Prometheus text.
const NOT_JSON: &[&str] = &[
    "/oauth/authorize",
    "/oauth/signup",
    "/oauth/signin",
    "/oauth/mfa",
    "/oauth/passkey/register",
    "/oauth/assets/passkey.js",
    "/oauth/logout",
    "/oauth/assets/style.css",
    "/verify-email",
    "/forgot-password",
    "/reset-password",
    "/unlock",
    "/metrics",
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The document exactly as `portcullis openapi` prints it.
fn generated() -> String {
    format!("{}\n", serde_json::to_string_pretty(&portcullis::http::openapi_document()).unwrap())
}

#[test]
fn committed_document_is_current() {
    let path = repo_root().join("docs/openapi.json");
    let fresh = generated();
    if std::env::var_os("PORTCULLIS_WRITE_OPENAPI").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "docs/openapi.json is stale: regenerate it with `cargo run -q -- openapi > docs/openapi.json` \
         (or PORTCULLIS_WRITE_OPENAPI=1 cargo test committed_document_is_current) and commit it"
    );
}

/// Every path literal given to `.route(` in the HTTP layer.
fn plain_routes() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/http")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let mut rest = text.as_str();
            while let Some(at) = rest.find(".route(") {
                rest = &rest[at + ".route(".len()..];
                let trimmed = rest.trim_start();
                if let Some(lit) = trimmed.strip_prefix('"') {
                    let end = lit.find('"').unwrap();
                    // The call's text up to the next route: which methods it registers.
                    let call = &lit[end..lit.find(".route").unwrap_or(lit.len())];
                    let methods: Vec<&str> = ["get(", "post(", "put(", "patch(", "delete(", "head("]
                        .into_iter()
                        .filter(|m| call.contains(*m))
                        .collect();
                    out.push((lit[..end].to_owned(), methods.join(","), path.display().to_string()));
                }
            }
        }
    }
    assert!(out.len() >= 10, "the scan found too few routes ({}): has the router moved?", out.len());
    out
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((path.clone(), method.clone(), op));
        }
    }
    ops
}

#[test]
fn every_route_is_documented() {
    let doc = portcullis::http::openapi_document();
    let paths = doc["paths"].as_object().unwrap();
    for (route, methods, file) in plain_routes() {
        // A documented path may add a plain CORS preflight (`options`), nothing else.
        let documented = paths.contains_key(&route) && methods.is_empty();
        assert!(
            documented || NOT_JSON.contains(&route.as_str()),
            "{route} ({methods}, {file}) is a plain .route(): register it with .routes(routes!(…)) and a \
             #[utoipa::path], or list it in NOT_JSON if it is not part of the JSON API"
        );
    }
    for page in NOT_JSON {
        assert!(!paths.contains_key(*page), "{page} is listed as not JSON but is documented");
    }
}

#[test]
fn operations_are_named_tagged_and_typed() {
    let doc = portcullis::http::openapi_document();
    let tags: Vec<&str> = doc["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    let mut ids = BTreeMap::new();
    let mut response_status: BTreeMap<String, String> = BTreeMap::new();
    let ops = operations(&doc);
    assert!(ops.len() >= 80, "only {} operations", ops.len());
    for (path, method, op) in ops {
        let at = format!("{} {path}", method.to_uppercase());
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{at}: no operationId"));
        let resource_verb = id.contains('_') && id.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        assert!(resource_verb, "{at}: operationId {id} is not resource_verb");
        if let Some(other) = ids.insert(id.to_owned(), at.clone()) {
            panic!("operationId {id} is used by {other} and {at}");
        }
        let op_tags = op["tags"].as_array().unwrap_or_else(|| panic!("{at}: no tag"));
        assert!(op_tags.iter().all(|t| tags.contains(&t.as_str().unwrap())), "{at}: undeclared tag {op_tags:?}");
        let summary = op["summary"].as_str().unwrap_or_else(|| panic!("{at}: no summary"));
        assert!(!summary.starts_with('`'), "{at}: the summary only repeats the route: {summary}");
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.keys().any(|s| s.starts_with('2') || s.starts_with('3')), "{at}: no success response");
        for status in ["500", "503"] {
            assert!(responses.contains_key(status), "{at}: no {status}");
        }
        let takes_input = op.get("requestBody").is_some()
            || op.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
        assert_eq!(responses.contains_key("400"), takes_input, "{at}: 400 where it cannot happen, or missing");
        for (status, response) in responses {
            if let Some(r) = response["$ref"].as_str() {
                let name = r.trim_start_matches("#/components/responses/");
                assert!(doc["components"]["responses"][name].is_object(), "{at}: {r} does not resolve");
                let first = response_status.entry(name.to_owned()).or_insert_with(|| status.clone());
                assert_eq!(first, status, "{at}: {name} is used with two statuses");
            } else if let Some(content) = response.get("content").and_then(Value::as_object) {
                // A problem answer must say which codes it carries.
                if let Some(problem) = content.get("application/problem+json") {
                    assert!(problem.pointer("/schema").is_some(), "{at} {status}: untyped problem");
                }
                for (ty, media) in content {
                    assert!(media.get("schema").is_some(), "{at} {status}: {ty} has no schema");
                }
            }
        }
        if let Some(body) = op.get("requestBody") {
            for (ty, media) in body["content"].as_object().unwrap() {
                assert!(media.get("schema").is_some(), "{at}: request body {ty} has no schema");
            }
        }
    }
    // Every $ref anywhere resolves.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
    }
    // Problem codes are an enum of every code the server has.
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"].as_array().unwrap();
    assert!(codes.iter().any(|c| c == "insufficient_scope") && codes.len() >= 20, "{codes:?}");
}

async fn served_document_is_valid_openapi_3_1(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let res = srv.client.get(srv.url("/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let served = res.text().await.unwrap();
    assert_eq!(format!("{served}\n"), generated(), "/openapi.json differs from `portcullis openapi`");
    // The key set the server builds by hand has exactly the documented shape.
    let jwks = srv.client.get(srv.url("/.well-known/jwks.json")).send().await.unwrap().text().await.unwrap();
    let parsed: portcullis_proto::Jwks = serde_json::from_str(&jwks).unwrap_or_else(|e| panic!("{e}: {jwks}"));
    assert!(!parsed.keys.is_empty());
    srv.stop().await;

    let ok = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !crate::interop::require(
        ok,
        "python3 with openapi-spec-validator (pip install -r tests/interop/requirements.txt)",
    ) {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let mut child = std::process::Command::new("python3")
        .arg("openapi_validate.py")
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(served.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.trim() == "valid", "not valid OpenAPI 3.1:\n{text}");
}

/// Every documented operation reaches a handler: never the 404 of an unknown route
/// nor a 405. Sent without credentials or body, so nothing changes.
async fn documented_operations_are_routed(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let doc = portcullis::http::openapi_document();
    for (path, method, _) in operations(&doc) {
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x_unknown" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let res = srv.client.request(method.clone(), srv.url(&concrete)).send().await.unwrap();
        let status = res.status();
        let body = res.text().await.unwrap();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is documented but not routed: {body}");
        assert!(!body.contains("no such route"), "{method} {path} is documented but not routed: {body}");
        assert!(status.as_u16() < 500, "{method} {path} without credentials: {status} {body}");
    }
    srv.stop().await;
}

/// `/docs` loads only what Portcullis serves, and says so in its CSP.
async fn reference_page_is_self_contained(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let res = srv.client.get(srv.url("/docs/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"), "{csp}");
    let html = res.text().await.unwrap();
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            assets.push(part.split('"').next().unwrap().to_owned());
        }
    }
    assert!(assets.iter().any(|a| a.ends_with(".js")), "no script in {html}");
    for asset in &assets {
        assert!(!asset.contains("//"), "/docs loads {asset} from elsewhere");
        let url = if asset.starts_with('/') { srv.url(asset) } else { srv.url(&format!("/docs/{asset}")) };
        let res = srv.client.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{url}");
    }
    // The initializer points Swagger UI at our document, and nowhere else.
    let init = srv.client.get(srv.url("/docs/swagger-initializer.js")).send().await.unwrap().text().await.unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    assert!(!init.contains("https://"), "{init}");
    srv.stop().await;
}
