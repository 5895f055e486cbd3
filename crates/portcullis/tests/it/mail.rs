//! Mail and the account lifecycle, end to end: every message goes through lettre
//! to a real SMTP server the test starts (`smtp::Sink`), and the test reads links
//! and codes from what was delivered.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::{Backend, Data, PASSWORD, TestServer, assert_problem},
    smtp::{self, Sink},
};

async fn server_with(data: &Data, sink: &Sink, tweak: impl FnOnce(&mut portcullis::config::Config)) -> TestServer {
    let url = sink.url();
    TestServer::start_on(data, |cfg| {
        smtp::smtp(cfg, &url);
        tweak(cfg);
    })
    .await
}

/// The outbox's rows, as text.
async fn outbox_rows(db: &portcullis::store::Db) -> String {
    let dump = db.debug_dump_text().await.unwrap();
    dump.lines().filter(|l| l.starts_with("outbox")).collect::<Vec<_>>().join("\n")
}

async fn verify(s: &TestServer, body: Value) -> reqwest::Response {
    s.post("/v1/auth/email/verify", body).await
}

/// Sign-up mails a link and a code; either proves the address, once; links are
/// built from the issuer even when the request names another host.
async fn signup_mail_verifies_by_link_or_code(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    let res = s
        .client
        .post(s.url("/v1/auth/register"))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .json(&json!({"email": "ann@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["user"]["email_verified"], false);
    let mail = sink.nth("ann@example.com", 1).await;
    assert_eq!(mail.subject(), "Confirm your email for Acme");
    assert_eq!(mail.sender(), "Acme <no-reply@acme.test>");
    assert!(mail.link().starts_with(&format!("{}/verify-email?token=", s.base)), "{}", mail.link());
    assert!(!mail.text().contains("evil.example") && !mail.html().contains("evil.example"));
    assert!(mail.html().contains("Confirm my email"));
    // By link.
    let res = verify(&s, json!({"token": mail.token()})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["user"]["email"].as_str(), body["user"]["email_verified"].as_bool()),
        (Some("ann@example.com"), Some(true))
    );
    let again = verify(&s, json!({"token": mail.token()})).await;
    assert_problem(again, StatusCode::BAD_REQUEST, "validation_failed").await;
    let tokens = s.login("ann@example.com", PASSWORD).await;
    let me: Value = s.get_auth("/v1/me", &tokens.access).await.json().await.unwrap();
    assert_eq!(me["email_verified"], true);
    // By code, for another account.
    s.register("bob@example.com", PASSWORD).await;
    let mail = sink.nth("bob@example.com", 1).await;
    let wrong = if mail.code() == "000000" { "111111" } else { "000000" };
    let res = verify(&s, json!({"email": "bob@example.com", "code": wrong})).await;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "code");
    let res = verify(&s, json!({"email": "Bob@Example.com", "code": mail.code()})).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Neither half alone, nor both.
    for bad in [json!({"email": "bob@example.com"}), json!({"code": "123456"}), json!({"token": "x", "code": "123456"})]
    {
        assert_problem(verify(&s, bad).await, StatusCode::BAD_REQUEST, "validation_failed").await;
    }
    s.stop().await;
}

/// A link or a code submitted many times at once proves the address once.
async fn parallel_double_submit_succeeds_once(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    for (i, by_code) in [(1, false), (2, true)] {
        let email = format!("user{i}@example.com");
        s.register(&email, PASSWORD).await;
        let mail = sink.nth(&email, 1).await;
        let body = if by_code { json!({"email": email, "code": mail.code()}) } else { json!({"token": mail.token()}) };
        let tries = (0..8).map(|_| verify(&s, body.clone()));
        let statuses: Vec<StatusCode> = futures::future::join_all(tries).await.iter().map(|r| r.status()).collect();
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(ok, 1, "by_code={by_code}: {statuses:?}");
        // The others lost the race (400) or, for codes, waited on the lockout's
        // guesses in flight (429).
        let lost = [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::TOO_MANY_REQUESTS];
        assert!(statuses.iter().all(|s| lost.contains(s)), "{statuses:?}");
        let dump =
            portcullis::store::Db::connect(&s.cfg.database_url()).await.unwrap().debug_dump_text().await.unwrap();
        assert!(dump.contains("email_tokens") && !dump.contains(&mail.token()), "only the hash of a token is stored");
    }
    s.stop().await;
}

/// Wrong codes count like wrong passwords: past the lockout threshold even the
/// right code is refused from that address.
async fn code_guesses_share_the_password_lockout(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    s.register("ann@example.com", PASSWORD).await;
    let code = sink.nth("ann@example.com", 1).await.code();
    let wrong = if code == "999999" { "888888" } else { "999999" };
    for _ in 0..5 {
        let res = verify(&s, json!({"email": "ann@example.com", "code": wrong})).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
    let res = verify(&s, json!({"email": "ann@example.com", "code": code})).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    // The same lock guards the password from this address.
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    s.stop().await;
    // Someone who knows the password (and so clears the lockout) still gets only
    // a few guesses per code: then the code is dead, the link is not.
    let s = server_with(&data, &sink, |cfg| cfg.security.lockout_threshold = 100).await;
    s.register("bob@example.com", PASSWORD).await;
    let mail = sink.nth("bob@example.com", 1).await;
    let wrong = if mail.code() == "999999" { "888888" } else { "999999" };
    for i in 0..5 {
        if i == 2 {
            s.login("bob@example.com", PASSWORD).await;
        }
        let res = verify(&s, json!({"email": "bob@example.com", "code": wrong})).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
    let res = verify(&s, json!({"email": "bob@example.com", "code": mail.code()})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(verify(&s, json!({"token": mail.token()})).await.status(), StatusCode::OK);
    s.stop().await;
}

/// The mailed link opens a page whose GET changes nothing; its button does.
async fn the_verify_page_confirms_only_on_post(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    s.register("ann@example.com", PASSWORD).await;
    let mail = sink.nth("ann@example.com", 1).await;
    let mut cookie = String::new();
    let mut html = String::new();
    for _ in 0..3 {
        let page = s.client.get(mail.link()).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        if let Some(c) = page.headers().get("set-cookie") {
            cookie = c.to_str().unwrap().split(';').next().unwrap().to_owned();
        }
        html = page.text().await.unwrap();
        assert!(html.contains("Confirm my email") && html.contains(&mail.token()));
    }
    let tokens = s.login("ann@example.com", PASSWORD).await;
    let me: Value = s.get_auth("/v1/me", &tokens.access).await.json().await.unwrap();
    assert_eq!(me["email_verified"], false, "a GET spent nothing");
    let csrf = html.split("name=\"csrf_token\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    // Without the CSRF token the form is refused.
    let post = |form: Vec<(&'static str, String)>| {
        s.client.post(s.url("/verify-email")).header("cookie", cookie.clone()).form(&form).send()
    };
    let res = post(vec![("token", mail.token())]).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = post(vec![("token", mail.token()), ("csrf_token", csrf)]).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("Email confirmed"));
    let me: Value = s.get_auth("/v1/me", &tokens.access).await.json().await.unwrap();
    assert_eq!(me["email_verified"], true);
    s.stop().await;
}

/// Resend: the same 202 for unknown, verified and unverified addresses; only the
/// unverified one gets mail, and its earlier link stops working.
async fn resend_answers_the_same_for_everyone(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    s.register("ann@example.com", PASSWORD).await;
    let first = sink.nth("ann@example.com", 1).await;
    s.register("bob@example.com", PASSWORD).await;
    let bob = sink.nth("bob@example.com", 1).await;
    assert_eq!(verify(&s, json!({"token": bob.token()})).await.status(), StatusCode::OK);
    let mut bodies = Vec::new();
    for email in ["ann@example.com", "nobody@example.com", "bob@example.com"] {
        let res = s.post("/v1/auth/email/resend", json!({"email": email})).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        bodies.push(res.text().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    let second = sink.nth("ann@example.com", 2).await;
    assert_ne!(first.token(), second.token());
    assert_eq!(verify(&s, json!({"token": first.token()})).await.status(), StatusCode::BAD_REQUEST);
    // With a bearer token: the caller's own account, no body needed.
    let tokens = s.login("ann@example.com", PASSWORD).await;
    let res = s.client.post(s.url("/v1/auth/email/resend")).bearer_auth(&tokens.access).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let third = sink.nth("ann@example.com", 3).await;
    assert_eq!(verify(&s, json!({"token": third.token()})).await.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(sink.to("nobody@example.com").is_empty());
    assert_eq!(sink.to("bob@example.com").len(), 1, "a verified address gets nothing");
    let res = s.post("/v1/auth/email/resend", json!({})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    s.stop().await;
}

/// `email.send_rate` per target address: nobody can mail-bomb a user, and the
/// answer does not change when the limit is reached.
async fn nobody_can_mail_bomb_an_address(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |cfg| {
        cfg.security.email_send_rate =
            portcullis::units::RateRule { max: 3, window: std::time::Duration::from_secs(3600) };
        cfg.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    s.register("ann@example.com", PASSWORD).await;
    sink.nth("ann@example.com", 1).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        // From different addresses: the per-target limit holds whoever asks.
        let res = s
            .client
            .post(s.url("/v1/auth/email/resend"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({"email": "ann@example.com"}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status());
    }
    assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED), "{statuses:?}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sink.to("ann@example.com").len(), 1 + 3, "sign-up, then three resends");
    s.stop().await;
}

/// `accounts.require_verified_email`: sign-in is refused (after the password)
/// until the address is proven, then allowed.
async fn require_verified_email_blocks_then_allows(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |cfg| cfg.accounts.require_verified_email = true).await;
    s.register("ann@example.com", PASSWORD).await;
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "email_not_verified").await;
    // A wrong password says nothing about the address.
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": "wrong-password-1"})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    // The hosted sign-in page of the authorization endpoint refuses too, and
    // hosted sign-up creates the account without signing the browser in.
    let root = s.register("root@example.com", PASSWORD).await;
    let db = portcullis::store::Db::connect(&s.cfg.database_url()).await.unwrap();
    db.user_grant_role(root["user"]["id"].as_str().unwrap(), "admin", 0).await.unwrap();
    db.debug_exec("UPDATE users SET email_verified = 1 WHERE email = 'root@example.com'").await.unwrap();
    let root = s.login("root@example.com", PASSWORD).await.access;
    let client = crate::oauth::create_client(
        &s,
        &root,
        json!({"client_name": "App", "redirect_uris": [crate::oauth::REDIRECT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    let url = crate::oauth::authorize_url(client["client_id"].as_str().unwrap(), &[("scope", "openid")]);
    let mut b = crate::oauth::Browser::new(&s);
    let page = b.get(&url).await;
    let refused = b.sign_in(&page, "ann@example.com", PASSWORD).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(refused.body.contains("Confirm your email address first"));
    let mail = sink.nth("ann@example.com", 1).await;
    assert_eq!(verify(&s, json!({"token": mail.token()})).await.status(), StatusCode::OK);
    s.login("ann@example.com", PASSWORD).await;
    let page = b.get(&url).await;
    let signed_in = b.sign_in(&page, "ann@example.com", PASSWORD).await;
    assert!(signed_in.status == StatusCode::OK || signed_in.status == StatusCode::SEE_OTHER, "{}", signed_in.body);
    s.stop().await;
}

/// The outbox keeps a message whose sending failed: the SMTP server is not there,
/// the node stops, the server comes back, and a restarted node delivers it.
async fn mail_survives_smtp_outage_and_restart(backend: Backend) {
    let data = Data::new(&backend).await;
    let port = smtp::free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let cfg = |cfg: &mut portcullis::config::Config| smtp::smtp(cfg, &url);
    let s = TestServer::start_on(&data, cfg).await;
    s.register("ann@example.com", PASSWORD).await;
    let db = portcullis::store::Db::connect(&s.cfg.database_url()).await.unwrap();
    // Attempts fail while nothing listens.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let dump = outbox_rows(&db).await;
        if dump.contains("SMTP") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no failed attempt recorded: {dump}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.stop().await;
    let sink = Sink::start_on(port);
    let s = TestServer::start_on(&data, cfg).await;
    let mail = sink.nth("ann@example.com", 1).await;
    assert_eq!(verify(&s, json!({"token": mail.token()})).await.status(), StatusCode::OK);
    // Sent: the row stays, without its sealed secrets.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let dump = outbox_rows(&db).await;
        if dump.contains("delivered") && !dump.contains("sealed") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not erased: {dump}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A server that refuses (421) is retried until it accepts.
    sink.set_down(true);
    s.post("/v1/auth/email/resend", json!({"email": "bob@example.com"})).await;
    s.register("bob@example.com", PASSWORD).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(sink.to("bob@example.com").is_empty());
    sink.set_down(false);
    sink.nth("bob@example.com", 1).await;
    s.stop().await;
}

async fn forgot(s: &TestServer, email: &str) -> (StatusCode, String) {
    let res = s.post("/v1/auth/password/forgot", json!({"email": email})).await;
    (res.status(), res.text().await.unwrap())
}

/// Forgot, resend and change of address: the same status and body for known and
/// unknown (or taken and free) addresses, after the same statements, because the
/// request only queues a task; only the known address gets mail.
async fn forgot_looks_the_same_for_unknown_addresses(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    s.register("ann@example.com", PASSWORD).await;
    s.register("bob@example.com", PASSWORD).await;
    sink.nth("ann@example.com", 1).await;
    sink.nth("bob@example.com", 1).await;
    s.stop().await;
    // A node whose outbox worker stays idle: what is counted is the requests' work.
    let s =
        server_with(&data, &sink, |cfg| cfg.outbox.poll_interval = portcullis::units::HumanDuration::secs(3600)).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let same = |a: (u64, u64, u64), what: &str| assert_eq!(a.1 - a.0, a.2 - a.1, "{what}: the same statements");
    let before = s.write_statements();
    let known = forgot(&s, "ann@example.com").await;
    let mid = s.write_statements();
    let unknown = forgot(&s, "nobody@example.com").await;
    same((before, mid, s.write_statements()), "forgot");
    assert_eq!(known, unknown);
    assert_eq!(known.0, StatusCode::ACCEPTED);
    assert!(mid - before >= 1, "the request queues itself");
    let resend = |email: &'static str| s.post("/v1/auth/email/resend", json!({"email": email}));
    let before = s.write_statements();
    resend("ann@example.com").await;
    let mid = s.write_statements();
    resend("nobody@example.com").await;
    same((before, mid, s.write_statements()), "resend");
    let ann = s.login("ann@example.com", PASSWORD).await;
    let before = s.write_statements();
    s.post_auth("/v1/me/email", &ann.access, json!({"email": "bob@example.com"})).await;
    let mid = s.write_statements();
    s.post_auth("/v1/me/email", &ann.access, json!({"email": "free@example.com"})).await;
    same((before, mid, s.write_statements()), "change of address");
    // Malformed input is a validation error for everyone alike.
    let res = s.post("/v1/auth/password/forgot", json!({"email": "not an address"})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    s.stop().await;
    // A node that works the queue: the known address gets its link.
    let s = server_with(&data, &sink, |_| {}).await;
    let mails = sink.wait_for("ann@example.com", 3).await;
    let mail = mails.iter().find(|m| m.subject() == "Reset your Acme password").expect("a reset mail");
    assert!(mail.link().starts_with(&format!("{}/reset-password?token=", s.base)));
    assert!(mails.iter().any(|m| m.subject() == "Confirm your email for Acme" && m.token() != mails[0].token()));
    sink.nth("bob@example.com", 2).await;
    sink.nth("free@example.com", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(sink.to("nobody@example.com").is_empty());
    let db = portcullis::store::Db::connect(&s.cfg.database_url()).await.unwrap();
    assert!(!db.debug_dump_text().await.unwrap().contains(&mail.token()));
    s.stop().await;
}

/// Reset: the policy applies; every session ends, locks lift, the new password
/// signs in, a notice follows; the token works once, even in parallel; a later
/// request or a sign-in cancels an earlier link.
async fn reset_ends_every_session_and_lets_the_new_password_in(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let other = s.login("ann@example.com", PASSWORD).await;
    // Lock the account from another address.
    for _ in 0..5 {
        let res = s
            .client
            .post(s.url("/v1/auth/login"))
            .json(&json!({"email": "ann@example.com", "password": "wrong-password-x"}))
            .send()
            .await
            .unwrap();
        assert!(res.status() == StatusCode::UNAUTHORIZED || res.status() == StatusCode::TOO_MANY_REQUESTS);
    }
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    assert_eq!(sink.nth("ann@example.com", 2).await.subject(), "Your Acme account was locked");
    forgot(&s, "ann@example.com").await;
    let first = sink.nth("ann@example.com", 3).await;
    forgot(&s, "ann@example.com").await;
    let mail = sink.nth("ann@example.com", 4).await;
    let reset = |token: String, pw: &'static str| {
        s.post("/v1/auth/password/reset", json!({"token": token, "new_password": pw}))
    };
    // The earlier link is cancelled by the later request.
    assert_problem(reset(first.token(), "a brand new passphrase").await, StatusCode::BAD_REQUEST, "validation_failed")
        .await;
    // The policy applies.
    let weak =
        assert_problem(reset(mail.token(), "password").await, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(weak["errors"][0]["field"], "new_password");
    let tries = (0..6).map(|_| reset(mail.token(), "a brand new passphrase"));
    let statuses: Vec<StatusCode> = futures::future::join_all(tries).await.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::NO_CONTENT).count(), 1, "{statuses:?}");
    assert_eq!(s.me_status(&ann.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.me_status(&other.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.refresh(&ann.refresh).await.status(), StatusCode::UNAUTHORIZED);
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    s.login("ann@example.com", "a brand new passphrase").await;
    let notice = sink.nth("ann@example.com", 5).await;
    assert_eq!(notice.subject(), "Your Acme password was changed");
    assert!(!notice.text().contains("http"), "a notice has no link: {}", notice.text());
    // A sign-in cancels a pending link.
    forgot(&s, "ann@example.com").await;
    let pending = sink.nth("ann@example.com", 6).await;
    s.login("ann@example.com", "a brand new passphrase").await;
    assert_eq!(reset(pending.token(), "yet another passphrase").await.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

/// The hosted pages: sign-in links to forgot-password; the reset page sets the
/// password without signing anyone in.
async fn hosted_forgot_and_reset_pages(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    s.register("ann@example.com", PASSWORD).await;
    let admin = s.admin("admin@example.com").await.access;
    let client = crate::oauth::create_client(
        &s,
        &admin,
        json!({"client_name": "App", "redirect_uris": [crate::oauth::REDIRECT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    let url = crate::oauth::authorize_url(client["client_id"].as_str().unwrap(), &[("scope", "openid")]);
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signin = no_redirects.get(s.url(&url)).send().await.unwrap().text().await.unwrap();
    assert!(signin.contains("href=\"/forgot-password\""), "{signin}");
    let (cookie, csrf) = page_form(&s, "/forgot-password").await;
    let res = s
        .client
        .post(s.url("/forgot-password"))
        .header("cookie", &cookie)
        .form(&[("email", "ann@example.com"), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("Check your inbox"));
    let mail = sink.nth("ann@example.com", 2).await;
    let path = mail.link().replace(&s.base, "");
    let (cookie, csrf) = page_form(&s, &path).await;
    let res = s
        .client
        .post(s.url("/reset-password"))
        .header("cookie", &cookie)
        .form(&[("token", mail.token().as_str()), ("new_password", "a brand new passphrase"), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get_all("set-cookie").iter().all(|c| !c.to_str().unwrap().contains("session")));
    assert!(res.text().await.unwrap().contains("Password changed"));
    s.login("ann@example.com", "a brand new passphrase").await;
    s.stop().await;
}

/// A page's CSRF cookie and token.
async fn page_form(s: &TestServer, path: &str) -> (String, String) {
    let page = s.client.get(s.url(path)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "{path}");
    let cookie = page.headers().get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
    let html = page.text().await.unwrap();
    let csrf = html.split("name=\"csrf_token\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    (cookie, csrf)
}

/// Notices: a password change and a stolen refresh token are told by mail;
/// each can be turned off.
async fn notices_are_sent_and_can_be_turned_off(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let res = s
        .post_auth(
            "/v1/me/password",
            &ann.access,
            json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}),
        )
        .await;
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(sink.nth("ann@example.com", 2).await.subject(), "Your Acme password was changed");
    let t = s.login("ann@example.com", "a brand new passphrase").await;
    s.refresh(&t.refresh).await;
    assert_problem(s.refresh(&t.refresh).await, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;
    assert_eq!(sink.nth("ann@example.com", 3).await.subject(), "We signed you out of Acme everywhere");
    s.stop().await;
    let s = server_with(&data, &sink, |cfg| {
        cfg.email.notify_password_changed = false;
        cfg.email.notify_refresh_reuse = false;
    })
    .await;
    let t = s.login("ann@example.com", "a brand new passphrase").await;
    let res = s
        .post_auth(
            "/v1/me/password",
            &t.access,
            json!({"current_password": "a brand new passphrase", "new_password": PASSWORD}),
        )
        .await;
    assert!(res.status().is_success());
    let t = s.login("ann@example.com", PASSWORD).await;
    s.refresh(&t.refresh).await;
    s.refresh(&t.refresh).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(sink.to("ann@example.com").len(), 3);
    s.stop().await;
}

/// Change of address: `202` whether or not the address is taken (its owner
/// learns by mail); the address changes only once proven; the old address is
/// told, with no link to follow.
async fn email_change_moves_only_when_proven(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    s.register("bob@example.com", PASSWORD).await;
    let change = |email: &str| s.post_auth("/v1/me/email", &ann.access, json!({"email": email}));
    let taken = change("bob@example.com").await;
    assert_eq!(taken.status(), StatusCode::ACCEPTED);
    let taken_body = taken.text().await.unwrap();
    let free = change("ann@new.example").await;
    assert_eq!(free.status(), StatusCode::ACCEPTED);
    assert_eq!(taken_body, free.text().await.unwrap(), "the same answer for a taken address");
    let told = sink.nth("bob@example.com", 2).await;
    assert_eq!(told.subject(), "Your address was offered for another Acme account");
    assert!(!told.text().contains("token="));
    let proof = sink.nth("ann@new.example", 1).await;
    assert_eq!(proof.subject(), "Confirm your new email for Acme");
    let me: Value = s.get_auth("/v1/me", &ann.access).await.json().await.unwrap();
    assert_eq!(me["email"], "ann@example.com", "unchanged until proven");
    let res = verify(&s, json!({"email": "ann@new.example", "code": proof.code()})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["user"]["email"].as_str(), body["user"]["email_verified"].as_bool()),
        (Some("ann@new.example"), Some(true))
    );
    let notice =
        sink.wait_for("ann@example.com", 2).await.into_iter().find(|m| m.subject().contains("changed")).unwrap();
    assert!(notice.text().contains("ann@new.example") && !notice.text().contains("token="));
    s.login("ann@new.example", PASSWORD).await;
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    // A change asked for by someone with a stolen session does not outlive the
    // owner's password reset.
    let t = s.login("ann@new.example", PASSWORD).await;
    assert_eq!(
        s.post_auth("/v1/me/email", &t.access, json!({"email": "thief@evil.example"})).await.status(),
        StatusCode::ACCEPTED
    );
    let stolen = sink.nth("thief@evil.example", 1).await;
    forgot(&s, "ann@new.example").await;
    let reset = sink.wait_for("ann@new.example", 2).await.into_iter().find(|m| m.subject().contains("Reset")).unwrap();
    let res = s
        .post("/v1/auth/password/reset", json!({"token": reset.token(), "new_password": "a brand new passphrase"}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(verify(&s, json!({"token": stolen.token()})).await.status(), StatusCode::BAD_REQUEST);
    // Its own address, and an API key, are refused.
    let t = s.login("ann@new.example", "a brand new passphrase").await;
    let res = s.post_auth("/v1/me/email", &t.access, json!({"email": "ann@new.example"})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    let key: Value =
        s.post_auth("/v1/api-keys", &t.access, json!({"name": "k", "scopes": []})).await.json().await.unwrap();
    let res = s
        .with_key(
            reqwest::Method::POST,
            "/v1/me/email",
            key["key"].as_str().unwrap(),
            Some(json!({"email": "x@y.example"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    s.stop().await;
}

/// A change of address needs a recent sign-in.
async fn email_change_needs_a_recent_sign_in(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let db = portcullis::store::Db::connect(&s.cfg.database_url()).await.unwrap();
    db.debug_exec("UPDATE sessions SET auth_time = 1").await.unwrap();
    let res = s.post_auth("/v1/me/email", &ann.access, json!({"email": "ann@new.example"})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    let res = s.post_auth("/v1/me", &ann.access, json!({})).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    s.stop().await;
}

/// The export holds the profile, sessions, keys (no secrets), grants and audit
/// records; self-deletion needs a recent sign-in, removes everything and mails a
/// last notice; `accounts.self_delete = false` turns it off.
async fn export_and_self_delete(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let key: Value =
        s.post_auth("/v1/api-keys", &ann.access, json!({"name": "ci", "scopes": []})).await.json().await.unwrap();
    let res = s.get_auth("/v1/me/export", &ann.access).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-disposition"].to_str().unwrap().contains("attachment"));
    let text = res.text().await.unwrap();
    assert!(!text.contains(key["key"].as_str().unwrap()), "no key secret in the export");
    assert!(!text.contains("password_hash") && !text.contains("$argon2"));
    let export: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(export["user"]["email"], "ann@example.com");
    assert_eq!(export["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(export["api_keys"][0]["name"], "ci");
    assert!(
        export["audit_events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "user_registered" || e["event_type"] == "user_registered"),
        "{}",
        export["audit_events"]
    );
    assert_eq!(export["truncated"], false);
    let res = s.with_key(reqwest::Method::GET, "/v1/me/export", key["key"].as_str().unwrap(), None).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "an API key cannot export the account");
    // Deletion.
    let db = portcullis::store::Db::connect(&s.cfg.database_url()).await.unwrap();
    db.debug_exec("UPDATE sessions SET auth_time = 1").await.unwrap();
    let res = s.send(reqwest::Method::DELETE, "/v1/me", &ann.access, None).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    let res = s.post_auth("/v1/auth/reauth", &ann.access, json!({"password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = s.send(reqwest::Method::DELETE, "/v1/me", &ann.access, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.me_status(&ann.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.with_key(reqwest::Method::GET, "/v1/me", key["key"].as_str().unwrap(), None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let last = sink.wait_for("ann@example.com", 2).await.into_iter().last().unwrap();
    assert_eq!(last.subject(), "Your Acme account was deleted");
    // The address can sign up again.
    s.register("ann@example.com", PASSWORD).await;
    s.stop().await;
    let s = server_with(&data, &sink, |cfg| cfg.accounts.self_delete = false).await;
    let t = s.login("ann@example.com", PASSWORD).await;
    let res = s.send(reqwest::Method::DELETE, "/v1/me", &t.access, None).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    s.stop().await;
}

/// Operators: mail that failed for good is kept with its last error and listed
/// (`admin:emails:read`, never its links or codes); `/metrics` shows the outbox;
/// `portcullis email test` prints what the SMTP server answered.
async fn operators_see_failed_mail_and_test_smtp(backend: Backend) {
    let data = Data::new(&backend).await;
    let url = format!("smtp://127.0.0.1:{}", smtp::free_port());
    let s = TestServer::start_on(&data, |cfg| {
        smtp::smtp(cfg, &url);
        cfg.outbox.max_attempts = 2;
    })
    .await;
    let admin = s.admin("root@example.com").await.access;
    let ann = s.user("ann@example.com").await.access;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let failed = loop {
        let res = s.get_auth("/v1/admin/emails?status=failed", &admin).await;
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().await.unwrap();
        let page: Value = serde_json::from_str(&text).unwrap();
        if page["data"].as_array().unwrap().len() >= 2 {
            assert!(!text.contains("token") && !text.contains("sealed"), "{text}");
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mail = failed["data"].as_array().unwrap().iter().find(|m| m["to"] == "ann@example.com").unwrap().clone();
    assert_eq!(
        (mail["template"].as_str(), mail["status"].as_str(), mail["attempts"].as_i64()),
        (Some("verify_email"), Some("failed"), Some(2))
    );
    assert!(mail["last_error"].as_str().unwrap().contains("SMTP"), "{mail}");
    let pending: Value = s.get_auth("/v1/admin/emails?status=pending", &admin).await.json().await.unwrap();
    assert!(pending["data"].as_array().unwrap().is_empty());
    assert_problem(
        s.get_auth("/v1/admin/emails?status=lost", &admin).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
    )
    .await;
    assert_problem(s.get_auth("/v1/admin/emails", &ann).await, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let gauge = metrics.lines().any(|l| {
            l.starts_with("portcullis_outbox_messages{") && l.contains("status=\"failed\"") && l.ends_with(" 2")
        });
        if gauge && metrics.contains("portcullis_outbox_attempts_total{") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s.stop().await;
    // The test command, against a real SMTP server.
    let sink = Sink::start();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.arg("--data-dir").arg(data.data_dir());
    if let Some(url) = &data.database_url {
        cmd.arg("--database-url").arg(url);
    }
    let out = cmd
        .args(["email", "test", "--to", "ops@example.com"])
        .env("RUST_LOG", "warn")
        .env("PORTCULLIS_EMAIL__TRANSPORT", "smtp")
        .env("PORTCULLIS_EMAIL__SMTP_URL", sink.url())
        .env("PORTCULLIS_EMAIL__PRODUCT_NAME", "Acme")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("250"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(sink.nth("ops@example.com", 1).await.subject(), "A test message from Acme");
}

/// A lock that trips is told by mail; its link lets the address that opens it
/// sign in despite the lock, once.
async fn locked_accounts_are_told_and_the_link_unlocks(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = Sink::start();
    let s = server_with(&data, &sink, |_| {}).await;
    s.register("ann@example.com", PASSWORD).await;
    sink.nth("ann@example.com", 1).await;
    for _ in 0..5 {
        s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": "not the password 1"})).await;
    }
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    let notice = sink.nth("ann@example.com", 2).await;
    assert_eq!(notice.subject(), "Your Acme account was locked");
    assert!(notice.link().starts_with(&format!("{}/unlock?token=", s.base)));
    let path = notice.link().replace(&s.base, "");
    let (cookie, csrf) = page_form(&s, &path).await;
    let unlock = |csrf: String| {
        s.client
            .post(s.url("/unlock"))
            .header("cookie", cookie.clone())
            .form(&[("token", notice.token()), ("csrf_token", csrf)])
            .send()
    };
    assert_eq!(unlock(csrf.clone()).await.unwrap().status(), StatusCode::OK);
    s.login("ann@example.com", PASSWORD).await;
    assert_eq!(unlock(csrf).await.unwrap().status(), StatusCode::BAD_REQUEST, "once");
    s.stop().await;
    // Turned off: no notice.
    let s = server_with(&data, &sink, |cfg| cfg.email.notify_account_locked = false).await;
    for _ in 0..5 {
        s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": "not the password 2"})).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(sink.to("ann@example.com").len(), 2);
    s.stop().await;
}

/// A kill -9 between the commit and the send loses nothing: the message is
/// delivered by the next process.
async fn mail_survives_a_kill_between_commit_and_send(backend: Backend) {
    let data = Data::new(&backend).await;
    let port = smtp::free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let env = [
        ("RUST_LOG", "info"),
        ("PORTCULLIS_EMAIL__TRANSPORT", "smtp"),
        ("PORTCULLIS_EMAIL__SMTP_URL", url.as_str()),
        ("PORTCULLIS_OUTBOX__POLL_INTERVAL", "50ms"),
        ("PORTCULLIS_OUTBOX__FIRST_RETRY", "100ms"),
    ];
    let mut first = crate::process::spawn_serve(&data, &env).await;
    first.register("ann@example.com").await;
    // Committed; the SMTP server is not there, so it cannot have been sent.
    std::process::Command::new("kill").args(["-KILL", &first.child.id().to_string()]).status().unwrap();
    first.child.wait().unwrap();
    let sink = Sink::start_on(port);
    let mut second = crate::process::spawn_serve(&data, &env).await;
    // A kill that lands during an attempt leaves its claim standing until the
    // outbox lease (60 s) runs out: at least once, a little later.
    let mail = sink.wait_up_to("ann@example.com", 1, std::time::Duration::from_secs(75)).await.remove(0);
    assert_eq!(mail.subject(), "Confirm your email for Portcullis");
    std::process::Command::new("kill").args(["-TERM", &second.child.id().to_string()]).status().unwrap();
    second.child.wait().unwrap();
}

crate::backend_tests!(
    signup_mail_verifies_by_link_or_code,
    parallel_double_submit_succeeds_once,
    code_guesses_share_the_password_lockout,
    the_verify_page_confirms_only_on_post,
    resend_answers_the_same_for_everyone,
    nobody_can_mail_bomb_an_address,
    require_verified_email_blocks_then_allows,
    mail_survives_smtp_outage_and_restart,
    forgot_looks_the_same_for_unknown_addresses,
    reset_ends_every_session_and_lets_the_new_password_in,
    hosted_forgot_and_reset_pages,
    notices_are_sent_and_can_be_turned_off,
    email_change_moves_only_when_proven,
    email_change_needs_a_recent_sign_in,
    export_and_self_delete,
    operators_see_failed_mail_and_test_smtp,
    locked_accounts_are_told_and_the_link_unlocks,
    mail_survives_a_kill_between_commit_and_send,
);
