//! Sessions: refresh rotation, reuse detection, races, logout, revocation,
//! password change, and persistence across a restart.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Backend, Data, PASSWORD, TestServer, Tokens, assert_problem};

/// A session records how its user signed in (RFC 8176 `amr`), for ID tokens and
/// the steps MFA adds.
async fn sessions_record_how_the_user_signed_in(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let t = srv.user("amr@example.com").await;
    let sid = crate::common::jwt_part(&t.access, 1)["sid"].as_str().unwrap().to_owned();
    let db = portcullis::store::Db::connect(&srv.cfg.database_url()).await.unwrap();
    let session = db.session_get(&sid).await.unwrap().unwrap();
    assert_eq!(session.amr.as_deref(), Some(r#"["pwd"]"#));
    db.close().await;
    srv.stop().await;
}

crate::backend_tests!(
    sessions_record_how_the_user_signed_in,
    refresh_rotates_and_kills_the_old_token,
    reuse_revokes_every_session_and_is_audited,
    concurrent_refresh_succeeds_exactly_once,
    concurrent_refresh_across_two_nodes,
    logout_ends_the_session_at_once,
    sessions_list_and_revoke_only_ones_own,
    password_change_ends_other_sessions,
    restart_keeps_tokens_and_sessions,
    logout_reaches_another_node_within_a_second,
);

/// Each node reuses a live-session check for up to a second: logout is immediate on
/// the node that ended the session (even with the check cached), and reaches the
/// others within that second.
async fn logout_reaches_another_node_within_a_second(backend: Backend) {
    let data = Data::new(&backend).await;
    let a = TestServer::start_on(&data, |_| {}).await;
    let b = TestServer::start_on(&data, |c| c.issuer = Some(a.base.clone())).await;
    let t = a.user("twonodes-logout@example.com").await;
    assert_eq!(a.me_status(&t.access).await, StatusCode::OK, "cached on a");
    assert_eq!(b.me_status(&t.access).await, StatusCode::OK, "cached on b");
    let res = a.post_auth("/v1/auth/logout", &t.access, json!({})).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(a.me_status(&t.access).await, StatusCode::UNAUTHORIZED, "at once on the same node");
    tokio::time::sleep(std::time::Duration::from_millis(1050)).await;
    assert_eq!(b.me_status(&t.access).await, StatusCode::UNAUTHORIZED, "within a second elsewhere");
    a.stop().await;
    b.stop().await;
}

async fn refresh_rotates_and_kills_the_old_token(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let first = srv.user("dan@example.com").await;
    let res = srv.refresh(&first.refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let second = Tokens::from(res.json::<Value>().await.unwrap());
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(srv.me_status(&second.access).await, StatusCode::OK);
    // The new refresh token works in turn.
    let third = srv.refresh(&second.refresh).await;
    assert_eq!(third.status(), StatusCode::OK);
    // Garbage is just invalid, not "reused".
    assert_problem(srv.refresh("garbage").await, StatusCode::UNAUTHORIZED, "invalid_token").await;
    srv.stop().await;
}

async fn reuse_revokes_every_session_and_is_audited(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let laptop = srv.user("erin@example.com").await;
    let phone = srv.login("erin@example.com", PASSWORD).await;
    let rotated = Tokens::from(srv.refresh(&laptop.refresh).await.json::<Value>().await.unwrap());

    // The spent token comes back: theft.
    let res = srv.refresh(&laptop.refresh).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;

    // Every session of the user is over, on every token it holds.
    for t in [&laptop.access, &phone.access, &rotated.access] {
        assert_eq!(srv.me_status(t).await, StatusCode::UNAUTHORIZED);
    }
    for r in [&phone.refresh, &rotated.refresh] {
        assert_eq!(srv.refresh(r).await.status(), StatusCode::UNAUTHORIZED);
    }
    // Signing in again works: the account is not locked, only its sessions ended.
    srv.login("erin@example.com", PASSWORD).await;

    let user_id = laptop.body["user"]["id"].as_str().unwrap();
    let audit =
        crate::common::audit_until(&srv, user_id, |rs| rs.iter().any(|r| r.event_type == "refresh_reuse")).await;
    let reuse = audit.iter().find(|r| r.event_type == "refresh_reuse").expect("reuse audited");
    assert_eq!(reuse.outcome, "failure");
    assert_eq!(reuse.reason.as_deref(), Some("refresh_token_reused"));
    assert_eq!(reuse.ip.as_deref(), Some("127.0.0.1"));
    assert!(reuse.request_id.as_deref().is_some_and(|r| r.starts_with("req_")));
    srv.stop().await;
}

async fn race(servers: &[&TestServer], refresh_token: &str, n: usize) -> HashMap<u16, usize> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let srv = servers[i % servers.len()];
        let (client, url) = (srv.client.clone(), srv.url("/v1/auth/refresh"));
        let body = json!({"refresh_token": refresh_token});
        tasks.push(tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().status().as_u16() }));
    }
    let mut counts = HashMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    counts
}

async fn concurrent_refresh_succeeds_exactly_once(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    for round in 0..3 {
        let t = srv.user(&format!("race{round}@example.com")).await;
        let counts = race(&[&srv], &t.refresh, 24).await;
        assert_eq!(counts.get(&200), Some(&1), "round {round}: {counts:?}");
        assert_eq!(counts.get(&401), Some(&23), "round {round}: {counts:?}");
    }
    srv.stop().await;
}

async fn concurrent_refresh_across_two_nodes(backend: Backend) {
    let data = Data::new(&backend).await;
    let a = TestServer::start_on(&data, |_| {}).await;
    let b = TestServer::start_on(&data, |_| {}).await;
    let t = a.user("twonodes@example.com").await;
    let counts = race(&[&a, &b], &t.refresh, 20).await;
    assert_eq!(counts.get(&200), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&401), Some(&19), "{counts:?}");
    a.stop().await;
    b.stop().await;
}

async fn logout_ends_the_session_at_once(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let t = srv.user("fay@example.com").await;
    let other = srv.login("fay@example.com", PASSWORD).await;
    let res = srv.post_auth("/v1/auth/logout", &t.access, json!({})).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = srv.get_auth("/v1/me", &t.access).await;
    assert!(res.headers()["www-authenticate"].to_str().unwrap().contains(r#"error="invalid_token""#));
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert_eq!(srv.refresh(&t.refresh).await.status(), StatusCode::UNAUTHORIZED);
    // Only that session ended.
    assert_eq!(srv.me_status(&other.access).await, StatusCode::OK);
    srv.stop().await;
}

async fn sessions_list_and_revoke_only_ones_own(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let g1 = srv.user("gus@example.com").await;
    let g2 = srv.login("gus@example.com", PASSWORD).await;
    let h = srv.user("hal@example.com").await;

    let list: Value = srv.get_auth("/v1/me/sessions", &g1.access).await.json().await.unwrap();
    let data_ = list["data"].as_array().unwrap();
    assert_eq!(data_.len(), 2, "{list}");
    assert!(list["next_cursor"].is_null());
    assert_eq!(data_.iter().filter(|s| s["current"] == true).count(), 1);
    let g2_sid = crate::common::jwt_part(&g2.access, 1)["sid"].as_str().unwrap().to_owned();
    // Paged like every list: one per page, newest first, then the end.
    let p1: Value = srv.get_auth("/v1/me/sessions?limit=1", &g1.access).await.json().await.unwrap();
    assert_eq!(p1["data"][0]["id"], g2_sid);
    let c = p1["next_cursor"].as_str().unwrap().to_owned();
    let p2: Value =
        srv.get_auth(&format!("/v1/me/sessions?limit=1&cursor={c}"), &g1.access).await.json().await.unwrap();
    assert_eq!(p2["data"].as_array().unwrap().len(), 1);
    assert_ne!(p2["data"][0]["id"], g2_sid);
    assert!(p2["next_cursor"].is_null());
    assert!(data_.iter().any(|s| s["id"] == g2_sid));

    // Hal cannot end Gus's session: 404, and it stays alive.
    let res =
        srv.client.delete(srv.url(&format!("/v1/me/sessions/{g2_sid}"))).bearer_auth(&h.access).send().await.unwrap();
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(srv.me_status(&g2.access).await, StatusCode::OK);

    // Gus can.
    let res =
        srv.client.delete(srv.url(&format!("/v1/me/sessions/{g2_sid}"))).bearer_auth(&g1.access).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(srv.me_status(&g2.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(srv.me_status(&g1.access).await, StatusCode::OK);
    let res =
        srv.client.delete(srv.url("/v1/me/sessions/ses_doesnotexist")).bearer_auth(&g1.access).send().await.unwrap();
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    srv.stop().await;
}

async fn password_change_ends_other_sessions(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let here = srv.user("ida@example.com").await;
    let elsewhere = srv.login("ida@example.com", PASSWORD).await;
    let new_pw = "a brand new passphrase";

    // Wrong current password: refused per field, nothing changes.
    let res = srv
        .post_auth("/v1/me/password", &here.access, json!({"current_password": "wrong one!", "new_password": new_pw}))
        .await;
    let p = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(p["errors"][0]["field"], "current_password");
    assert_eq!(srv.me_status(&elsewhere.access).await, StatusCode::OK);
    // Weak new password: refused.
    let res = srv
        .post_auth("/v1/me/password", &here.access, json!({"current_password": PASSWORD, "new_password": "12345678"}))
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;

    let res = srv
        .post_auth("/v1/me/password", &here.access, json!({"current_password": PASSWORD, "new_password": new_pw}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(srv.me_status(&here.access).await, StatusCode::OK, "the session that changed it lives on");
    assert_eq!(srv.me_status(&elsewhere.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(srv.refresh(&elsewhere.refresh).await.status(), StatusCode::UNAUTHORIZED);
    let res = srv.post("/v1/auth/login", json!({"email": "ida@example.com", "password": PASSWORD})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    srv.login("ida@example.com", new_pw).await;
    srv.stop().await;
}

async fn restart_keeps_tokens_and_sessions(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let t = srv.user("jo@example.com").await;
    let jwks_before: Value =
        srv.client.get(srv.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let issuer = srv.base.clone();
    srv.stop().await;

    // Same data, same issuer (the issuer is part of every token).
    let srv = TestServer::start_on(&data, |c| c.issuer = Some(issuer.clone())).await;
    let jwks_after: Value =
        srv.client.get(srv.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks_before, jwks_after, "no new key on restart");
    assert_eq!(srv.me_status(&t.access).await, StatusCode::OK);
    let res = srv.refresh(&t.refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    srv.login("jo@example.com", PASSWORD).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_sessions_are_purged() {
    let data = Data::new(&Backend::Sqlite).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let t = srv.user("purge@example.com").await;
    let live = srv.login("purge@example.com", PASSWORD).await;
    srv.post_auth("/v1/auth/logout", &t.access, json!({})).await;
    let db = portcullis::store::Db::connect(&srv.cfg.database_url()).await.unwrap();
    // Nothing ended a day ago yet.
    assert_eq!(db.sessions_purge(portcullis::clock::now_ms() - 86_400_000).await.unwrap(), 0);
    // Seen from two days on, the logged-out session and its tokens go; the live one stays.
    let purged = db.sessions_purge(portcullis::clock::now_ms() + 86_400_000).await.unwrap();
    assert_eq!(purged, 2, "one session and its one refresh token");
    db.close().await;
    assert_eq!(srv.me_status(&live.access).await, StatusCode::OK);
    assert_eq!(srv.refresh(&live.refresh).await.status(), StatusCode::OK);
    srv.stop().await;
}
