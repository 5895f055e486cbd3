//! Second factors, end to end: authenticator-app codes computed by PyPI `pyotp`
//! (what a phone app would show), recovery codes, the pending sign-in
//! (`mfa_token`) and its limits, recent authentication, the admin reset and
//! `accounts.mfa = "required"`. Single-use secrets are submitted in parallel.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, Data, PASSWORD, TestServer, Tokens, assert_problem, audit_until, jwt_part};
use crate::oauth::{Browser, Seen, VERIFIER, authorize_url, browser_flow, exchange, setup};

/// The code an authenticator app holding `uri` shows `offset` seconds from now.
pub fn app_code(uri: &str, offset: i64) -> String {
    let script = "import pyotp, sys, time; print(pyotp.parse_uri(sys.argv[1]).at(time.time() + int(sys.argv[2])))";
    let out = std::process::Command::new("python3")
        .args(["-c", script, uri, &offset.to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pyotp failed (pip install -r crates/portcullis/tests/interop/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An enrolled authenticator app: its URI and the first set of recovery codes.
pub struct App {
    pub uri: String,
    pub recovery: Vec<String>,
}

/// Enrols an authenticator app for the user of `access` (a fresh session).
pub async fn enrol(s: &TestServer, access: &str) -> App {
    let res = s.post_auth("/v1/me/mfa/totp", access, json!({})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let setup: Value = res.json().await.unwrap();
    let uri = setup["otpauth_uri"].as_str().unwrap().to_owned();
    let res = s.post_auth("/v1/me/mfa/totp/confirm", access, json!({"code": app_code(&uri, 0)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let recovery = body["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    App { uri, recovery }
}

/// The password step: the `mfa_token` it answers.
pub async fn password_step(s: &TestServer, email: &str) -> String {
    let res = s.post("/v1/auth/login", json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true, "{body}");
    assert!(body.get("access_token").is_none(), "no session before the second factor: {body}");
    body["mfa_token"].as_str().unwrap().to_owned()
}

/// `n` pending sign-ins of `email`, one after the other.
async fn pending_sign_ins(s: &TestServer, email: &str, n: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for _ in 0..n {
        tokens.push(password_step(s, email).await);
    }
    tokens
}

async fn second(s: &TestServer, body: Value) -> reqwest::Response {
    s.post("/v1/auth/login/mfa", body).await
}

/// Enrolment with pyotp's codes, the sign-in's second step, and everything a
/// pending sign-in is not: a bearer token, a refresh token, reusable.
async fn authenticator_app_enrolment_and_sign_in(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |cfg| cfg.email.product_name = "Acme".into()).await;
    let ann = s.user("ann@example.com").await;
    let res = s.post_auth("/v1/me/mfa/totp", &ann.access, json!({})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let setup: Value = res.json().await.unwrap();
    let uri = setup["otpauth_uri"].as_str().unwrap();
    let secret = setup["secret"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Acme:ann%40example.com?") && uri.contains("issuer=Acme"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert_eq!(secret.len(), 32, "160 bits, base32");
    assert!(setup["qr_svg"].as_str().unwrap().contains("<svg"));
    // Pending: not a factor yet; a sign-in still needs only the password.
    let mfa: Value = s.get_auth("/v1/me/mfa", &ann.access).await.json().await.unwrap();
    assert_eq!(mfa, json!({"factors": [], "recovery_codes_remaining": 0}));
    let res = s.post_auth("/v1/me/mfa/totp/confirm", &ann.access, json!({"code": "000000"})).await;
    let p = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(p["errors"][0]["field"], "code");
    let first = app_code(uri, 0);
    let res = s.post_auth("/v1/me/mfa/totp/confirm", &ann.access, json!({"code": first})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let codes = body["recovery_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    let mut distinct: Vec<&str> = codes.iter().map(|c| c.as_str().unwrap()).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 10);
    assert!(body.get("access_token").is_none());
    let mfa: Value = s.get_auth("/v1/me/mfa", &ann.access).await.json().await.unwrap();
    assert_eq!(mfa["factors"][0]["type"], "totp");
    assert_eq!(mfa["recovery_codes_remaining"], 10);
    // A second enrolment needs the first removed.
    let res = s.post_auth("/v1/me/mfa/totp", &ann.access, json!({})).await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;

    // The password step opens no session.
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["factors"], json!(["totp", "recovery_code"]));
    let token = body["mfa_token"].as_str().unwrap().to_owned();
    // No bearer token, no refresh token.
    assert_eq!(s.me_status(&token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.refresh(&token).await.status(), StatusCode::UNAUTHORIZED);
    // The code that confirmed the enrolment was used: a replay is refused.
    let res = second(&s, json!({"mfa_token": token, "code": first})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_code").await;
    let res = second(&s, json!({"mfa_token": token})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    // The app's next code finishes the sign-in (a wrong code did not spend it).
    let res = second(&s, json!({"mfa_token": token, "code": app_code(uri, 30)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let signed = Tokens::from(res.json::<Value>().await.unwrap());
    assert_eq!(s.me_status(&signed.access).await, StatusCode::OK);
    // Spent.
    let res = second(&s, json!({"mfa_token": token, "code": app_code(uri, 30)})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "mfa_token_invalid").await;
    // The refresh of the new session works.
    assert_eq!(s.refresh(&signed.refresh).await.status(), StatusCode::OK);
    // Nothing secret is stored in the clear.
    let dump = s.db().debug_dump_text().await.unwrap();
    for secret in [secret, &token, distinct[0], &distinct[0].replace('-', "")] {
        assert!(!dump.contains(secret), "{secret} stored in the clear");
    }
    let uid = ann.body["user"]["id"].as_str().unwrap();
    let records =
        audit_until(&s, uid, |r| r.iter().any(|e| e.event_type == "mfa_verified" && e.outcome == "success")).await;
    for event in ["mfa_enrollment_started", "mfa_enrolled", "login_password", "mfa_verified"] {
        assert!(records.iter().any(|r| r.event_type == event), "no {event} in {records:?}");
    }
    assert!(records.iter().any(|r| r.event_type == "mfa_verified" && r.outcome != "success"), "the replay is audited");
    s.stop().await;
}

/// One app code, ten sign-ins at once: exactly one gets through (RFC 6238 §5.2).
async fn an_app_code_works_once_under_parallel_use(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let app = enrol(&s, &ann.access).await;
    let tokens = pending_sign_ins(&s, "ann@example.com", 10).await;
    let code = app_code(&app.uri, 30);
    let tries = tokens.iter().map(|t| second(&s, json!({"mfa_token": t, "code": code})));
    let statuses: Vec<StatusCode> = futures::future::join_all(tries).await.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [StatusCode::OK, StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(s))
    );
    s.stop().await;
}

/// A recovery code works once, also when ten sign-ins send it at once; using one
/// counts down the codes left.
async fn a_recovery_code_works_once_under_parallel_use(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let app = enrol(&s, &ann.access).await;
    let tokens = pending_sign_ins(&s, "ann@example.com", 10).await;
    // Typed loosely: upper case, spaces for dashes.
    let typed = app.recovery[3].to_uppercase().replace('-', " ");
    let tries = tokens.iter().map(|t| second(&s, json!({"mfa_token": t, "recovery_code": typed})));
    let results = futures::future::join_all(tries).await;
    let statuses: Vec<StatusCode> = results.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    let mut ok = None;
    for r in results {
        if r.status() == StatusCode::OK {
            ok = Some(Tokens::from(r.json::<Value>().await.unwrap()));
        }
    }
    let mfa: Value = s.get_auth("/v1/me/mfa", &ok.unwrap().access).await.json().await.unwrap();
    assert_eq!(mfa["recovery_codes_remaining"], 9);
    s.stop().await;
}

/// Five wrong codes end a pending sign-in; the wrong codes lock the second
/// factor for the address, which a right password does not lift, and count
/// against the password lockout; the admin unlock lifts both.
async fn wrong_codes_end_the_pending_sign_in_and_lock(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let admin = s.admin("admin@example.com").await;
    let ann = s.user("ann@example.com").await;
    let uid = ann.body["user"]["id"].as_str().unwrap().to_owned();
    let app = enrol(&s, &ann.access).await;
    let token = password_step(&s, "ann@example.com").await;
    for _ in 0..5 {
        let res = second(&s, json!({"mfa_token": token, "code": "123456"})).await;
        assert!([StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&res.status()));
    }
    let res = second(&s, json!({"mfa_token": token, "code": app_code(&app.uri, 30)})).await;
    assert!(
        [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&res.status()),
        "the token is over: {}",
        res.status()
    );
    // The password lockout counted the wrong codes: the right password waits too.
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    let res = s.post_auth(&format!("/v1/admin/users/{uid}/unlock"), &admin.access, json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let t = password_step(&s, "ann@example.com").await;
    let res = second(&s, json!({"mfa_token": t, "code": app_code(&app.uri, 30)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    s.stop().await;
}

/// Recent authentication asks for the second factor too; removing the app is a
/// sensitive action, and with it go the recovery codes.
async fn reauth_takes_the_second_factor(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let app = enrol(&s, &ann.access).await;
    s.db().debug_exec("UPDATE sessions SET auth_time = 1").await.unwrap();
    let res = s.send(Method::DELETE, "/v1/me/mfa/totp", &ann.access, None).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    let res = s.post_auth("/v1/me/mfa/recovery-codes", &ann.access, json!({})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    let res = s.post_auth("/v1/auth/reauth", &ann.access, json!({"password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true);
    let token = body["mfa_token"].as_str().unwrap();
    // The password alone renewed nothing.
    let res = s.post_auth("/v1/me/mfa/recovery-codes", &ann.access, json!({})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    // A reauth token opens no session.
    let res = second(&s, json!({"mfa_token": token, "code": app_code(&app.uri, 30)})).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = s.post_auth("/v1/me/mfa/recovery-codes", &ann.access, json!({})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let fresh: Value = res.json().await.unwrap();
    assert_eq!(fresh["recovery_codes"].as_array().unwrap().len(), 10);
    // The old set is gone.
    let t = password_step(&s, "ann@example.com").await;
    let res = second(&s, json!({"mfa_token": t, "recovery_code": app.recovery[0]})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_code").await;
    let res = second(&s, json!({"mfa_token": t, "recovery_code": fresh["recovery_codes"][0]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Removing the app: the password is enough again, and no codes are left.
    let res = s.send(Method::DELETE, "/v1/me/mfa/totp", &ann.access, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let mfa: Value = s.get_auth("/v1/me/mfa", &ann.access).await.json().await.unwrap();
    assert_eq!(mfa, json!({"factors": [], "recovery_codes_remaining": 0}));
    s.login("ann@example.com", PASSWORD).await;
    let res = s.send(Method::DELETE, "/v1/me/mfa/totp", &ann.access, None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    s.stop().await;
}

/// An admin resets a user who lost their factors; the admin view shows them.
async fn admin_resets_second_factors(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let admin = s.admin("admin@example.com").await;
    let ann = s.user("ann@example.com").await;
    let uid = ann.body["user"]["id"].as_str().unwrap().to_owned();
    enrol(&s, &ann.access).await;
    let view: Value = s.get_auth(&format!("/v1/admin/users/{uid}"), &admin.access).await.json().await.unwrap();
    assert_eq!(view["mfa_factors"], json!(["totp"]));
    let list: Value = s.get_auth("/v1/admin/users?email=ann@example.com", &admin.access).await.json().await.unwrap();
    assert_eq!(list["data"][0]["mfa_factors"], json!(["totp"]));
    let pending = password_step(&s, "ann@example.com").await;
    // The user's own token cannot.
    let res = s.send(Method::DELETE, &format!("/v1/admin/users/{uid}/mfa"), &ann.access, None).await;
    assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let res = s.send(Method::DELETE, &format!("/v1/admin/users/{uid}/mfa"), &admin.access, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let view: Value = s.get_auth(&format!("/v1/admin/users/{uid}"), &admin.access).await.json().await.unwrap();
    assert_eq!(view["mfa_factors"], json!([]));
    // A sign-in begun before the reset is over; a new one needs the password only.
    let res = second(&s, json!({"mfa_token": pending, "code": "123456"})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "mfa_token_invalid").await;
    s.login("ann@example.com", PASSWORD).await;
    let records = audit_until(&s, &uid, |r| r.iter().any(|e| e.event_type == "mfa_reset")).await;
    let reset = records.iter().find(|r| r.event_type == "mfa_reset").unwrap();
    assert_eq!(reset.actor.as_deref(), Some(admin.body["user"]["id"].as_str().unwrap()));
    s.stop().await;
}

/// `accounts.mfa = "required"`: the password step answers
/// `mfa_enrollment_required` with a token that works on the enrolment routes
/// only; the enrolment's confirmation is the sign-in.
async fn required_mfa_enrols_at_sign_in(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |cfg| cfg.accounts.mfa = portcullis::config::MfaPolicy::Required).await;
    s.register("ann@example.com", PASSWORD).await;
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    let p = assert_problem(res, StatusCode::FORBIDDEN, "mfa_enrollment_required").await;
    let token = p["mfa_token"].as_str().unwrap().to_owned();
    // Not a bearer token anywhere else.
    assert_eq!(s.me_status(&token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.get_auth("/v1/me/mfa", &token).await.status(), StatusCode::UNAUTHORIZED);
    let res = s.post_auth("/v1/api-keys", &token, json!({"name": "k"})).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Nor does it finish a sign-in by itself.
    let res = second(&s, json!({"mfa_token": token, "code": "123456"})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "mfa_token_invalid").await;
    let res = s.post_auth("/v1/me/mfa/totp", &token, json!({})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let setup: Value = res.json().await.unwrap();
    let uri = setup["otpauth_uri"].as_str().unwrap();
    let res = s.post_auth("/v1/me/mfa/totp/confirm", &token, json!({"code": app_code(uri, 0)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["recovery_codes"].as_array().unwrap().len(), 10);
    let signed = Tokens::from(body.clone());
    assert_eq!(s.me_status(&signed.access).await, StatusCode::OK);
    let claims = crate::common::jwt_part(&signed.access, 1);
    assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
    // The token is spent; the next sign-in asks for the app.
    let res = s.post_auth("/v1/me/mfa/totp", &token, json!({})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "mfa_token_invalid").await;
    let t = password_step(&s, "ann@example.com").await;
    let res = second(&s, json!({"mfa_token": t, "code": app_code(uri, 30)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    s.stop().await;
}

/// Every change of factors and every recovery code used is mailed; a password
/// reset leaves the second factor in place and ends sign-ins begun before it.
async fn notices_and_password_reset_keep_the_second_factor(backend: Backend) {
    let data = Data::new(&backend).await;
    let sink = crate::smtp::Sink::start();
    let url = sink.url();
    let s = TestServer::start_on(&data, |cfg| crate::smtp::smtp(cfg, &url)).await;
    let ann = s.user("ann@example.com").await;
    let app = enrol(&s, &ann.access).await;
    // 1: the address proof of sign-up; 2: the factor added.
    assert_eq!(sink.nth("ann@example.com", 2).await.subject(), "A second sign-in step was added to your Acme account");
    let t = password_step(&s, "ann@example.com").await;
    let res = second(&s, json!({"mfa_token": t, "recovery_code": app.recovery[0]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let notice = sink.nth("ann@example.com", 3).await;
    assert_eq!(notice.subject(), "A recovery code was used to sign in to Acme");
    assert!(!notice.text().contains(&app.recovery[0]));
    let begun = password_step(&s, "ann@example.com").await;
    let res = s.post("/v1/auth/password/forgot", json!({"email": "ann@example.com"})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let link = sink.nth("ann@example.com", 4).await;
    let res = s
        .post("/v1/auth/password/reset", json!({"token": link.token(), "new_password": "a brand new passphrase"}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // The reset ended the sign-in begun with the old password…
    let res = second(&s, json!({"mfa_token": begun, "code": app_code(&app.uri, 30)})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "mfa_token_invalid").await;
    // …and the new password still needs the app.
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": "a brand new passphrase"})).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["mfa_required"], true, "{body}");
    let res = second(&s, json!({"mfa_token": body["mfa_token"], "code": app_code(&app.uri, 30)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let fresh = Tokens::from(res.json::<Value>().await.unwrap());
    let res = s.send(Method::DELETE, "/v1/me/mfa/totp", &fresh.access, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // 5: the password changed; 6: the factor removed.
    assert_eq!(
        sink.nth("ann@example.com", 6).await.subject(),
        "A second sign-in step was removed from your Acme account"
    );
    s.stop().await;
}

/// Regressions of the review: a password change renews no session of an account
/// with a second factor; parallel wrong codes on one pending sign-in are checked at
/// most five times (even from many addresses); a page's pending enrolment is no
/// API bearer token.
async fn a_second_factor_is_not_skipped_sideways(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |cfg| {
        cfg.security.lockout_threshold = 100;
        cfg.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let ann = s.user("ann@example.com").await;
    enrol(&s, &ann.access).await;
    s.db().debug_exec("UPDATE sessions SET auth_time = 1").await.unwrap();
    let res = s
        .post_auth(
            "/v1/me/password",
            &ann.access,
            json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = s.post_auth("/v1/me/mfa/recovery-codes", &ann.access, json!({})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    // Forty wrong codes at once against one pending sign-in.
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": "a brand new passphrase"})).await;
    let token = res.json::<Value>().await.unwrap()["mfa_token"].as_str().unwrap().to_owned();
    let tries = (0..40).map(|i| {
        s.client
            .post(s.url("/v1/auth/login/mfa"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .json(&json!({"mfa_token": token, "code": format!("{:06}", 100_000 + i)}))
            .send()
    });
    let results = futures::future::join_all(tries).await;
    let mut checked = 0;
    for r in results {
        let body: Value = r.unwrap().json().await.unwrap();
        if body["code"] == "invalid_mfa_code" {
            checked += 1;
        }
    }
    assert!(checked <= 5, "{checked} guesses were checked");
    s.stop().await;
}

/// The hidden fields of a page's first form (the second-step page has two).
fn first_form(page: &Seen) -> Vec<(String, String)> {
    let end = page.body.find("</form>").unwrap();
    Seen { status: page.status, location: None, body: page.body[..end].to_owned(), set_cookies: Vec::new() }.form()
}

/// Submits the second-step page with a code (or a recovery code).
async fn submit_code(b: &mut Browser, page: &Seen, field: &str, code: &str) -> Seen {
    let mut form = first_form(page);
    form.push((field.into(), code.into()));
    b.post("/oauth/mfa", &form).await
}

fn has_session_cookie(seen: &Seen) -> bool {
    seen.set_cookies.iter().any(|c| c.starts_with("pcl_session=") && !c.contains("Max-Age=0"))
}

/// The authorization code flow of a user with an authenticator app goes through
/// the second-step page; nothing before it yields a session; the tokens say so.
async fn oauth_code_flow_goes_through_the_second_step(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let ann = t.s.login("ann@example.com", PASSWORD).await;
    let app = enrol(&t.s, &ann.access).await;
    let mut b = Browser::new(&t.s);
    let page = b.get(&authorize_url(&t.client_id, &[])).await;
    let step = b.sign_in(&page, "ann@example.com", PASSWORD).await;
    assert_eq!(step.status, StatusCode::OK);
    assert!(step.body.contains("Two-step verification") && step.body.contains("name=\"mfa_token\""), "{}", step.body);
    assert!(!has_session_cookie(&step), "no session before the second factor");
    // Resuming the request, or asking silently, finds no session.
    let again = b.get(&authorize_url(&t.client_id, &[])).await;
    assert!(again.body.contains("<label for=\"email\">Email</label>"), "{}", again.body);
    let silent = b.get(&authorize_url(&t.client_id, &[("prompt", "none")])).await;
    assert_eq!(silent.redirect_params()["error"], "login_required");
    // A wrong code keeps the step; the app's code finishes it.
    let wrong = submit_code(&mut b, &step, "code", "000000").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("That code is not right"), "{}", wrong.body);
    let consent = submit_code(&mut b, &wrong, "code", &app_code(&app.uri, 30)).await;
    assert!(has_session_cookie(&consent));
    assert!(consent.body.contains("name=\"decision\""), "{}", consent.body);
    let done = b.consent(&consent, true).await;
    let (status, tokens) = exchange(&t, &done.redirect_params()["code"], VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let id = jwt_part(tokens["id_token"].as_str().unwrap(), 1);
    assert_eq!(id["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(id["acr"], "mfa");
    assert_eq!(jwt_part(tokens["access_token"].as_str().unwrap(), 1)["amr"], json!(["pwd", "otp", "mfa"]));
    // A refreshed ID token says the same.
    let (status, refreshed, _) = crate::oauth::token(
        &t.s,
        Some((&t.client_id, &t.secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", tokens["refresh_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jwt_part(refreshed["id_token"].as_str().unwrap(), 1)["acr"], "mfa");
    // A recovery code works on the page too.
    let mut b = Browser::new(&t.s);
    let page = b.get(&authorize_url(&t.client_id, &[])).await;
    let step = b.sign_in(&page, "ann@example.com", PASSWORD).await;
    let next = submit_code(&mut b, &step, "recovery_code", &app.recovery[0]).await;
    assert_eq!(next.status, StatusCode::SEE_OTHER, "consent was given: {}", next.body);
    let metadata: Value =
        t.s.client.get(t.s.url("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(metadata["acr_values_supported"], json!(["pwd", "mfa"]));
    t.s.stop().await;
}

/// A browser that signed in before its user enrolled steps up before the next
/// code (and `prompt=none` says so); `acr_values=mfa` without any factor is
/// refused.
async fn older_browser_sessions_step_up(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let mut b = Browser::new(&t.s);
    browser_flow(&mut b, &authorize_url(&t.client_id, &[])).await;
    // Without a factor, acr_values=mfa cannot be met.
    let unmet = b.get(&authorize_url(&t.client_id, &[("acr_values", "mfa")])).await;
    assert_eq!(unmet.redirect_params()["error"], "unmet_authentication_requirements");
    let ann = t.s.login("ann@example.com", PASSWORD).await;
    let app = enrol(&t.s, &ann.access).await;
    let silent = b.get(&authorize_url(&t.client_id, &[("prompt", "none")])).await;
    assert_eq!(silent.redirect_params()["error"], "interaction_required");
    // Stepping up keeps prompt=consent.
    let step = b.get(&authorize_url(&t.client_id, &[("prompt", "consent")])).await;
    assert!(step.body.contains("Two-step verification"), "{}", step.body);
    let consent = submit_code(&mut b, &step, "code", &app_code(&app.uri, 30)).await;
    assert!(consent.body.contains("name=\"decision\""), "consent is asked: {}", consent.body);
    let done = b.consent(&consent, true).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let (status, tokens) = exchange(&t, &done.redirect_params()["code"], VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jwt_part(tokens["id_token"].as_str().unwrap(), 1)["acr"], "mfa");
    // Now acr_values=mfa is met without asking again.
    let met = b.get(&authorize_url(&t.client_id, &[("acr_values", "mfa"), ("prompt", "none")])).await;
    assert!(met.redirect_params().contains_key("code"), "{:?}", met.location);
    t.s.stop().await;
}

/// `accounts.mfa = "required"` on the hosted pages: the password leads to the
/// authenticator-app enrolment, then the recovery codes, then the request.
async fn required_mfa_enrols_on_the_hosted_pages(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    t.s.stop().await;
    let s = TestServer::start_on(&data, |cfg| cfg.accounts.mfa = portcullis::config::MfaPolicy::Required).await;
    let mut b = Browser::new(&s);
    let page = b.get(&authorize_url(&t.client_id, &[])).await;
    let enrol_page = b.sign_in(&page, "ann@example.com", PASSWORD).await;
    assert_eq!(enrol_page.status, StatusCode::OK);
    assert!(enrol_page.body.contains("<svg") && !enrol_page.body.contains("<?xml"), "{}", enrol_page.body);
    assert!(!has_session_cookie(&enrol_page));
    // The page's pending enrolment is no bearer token of the JSON API.
    let page_token = first_form(&enrol_page).into_iter().find(|(k, _)| k == "mfa_token").unwrap().1;
    assert_eq!(s.post_auth("/v1/me/mfa/totp", &page_token, json!({})).await.status(), StatusCode::UNAUTHORIZED);
    let key = enrol_page.body.split("<code>").nth(1).unwrap().split("</code>").next().unwrap();
    let uri = format!("otpauth://totp/Portcullis:ann?secret={key}");
    let codes = submit_code(&mut b, &enrol_page, "code", &app_code(&uri, 0)).await;
    assert_eq!(codes.status, StatusCode::OK, "{}", codes.body);
    assert!(has_session_cookie(&codes));
    assert_eq!(codes.body.matches("<li><code>").count(), 10, "{}", codes.body);
    let next = codes.body.split("href=\"").nth(2).unwrap().split('"').next().unwrap();
    let next = crate::oauth::html_decode(next);
    assert!(next.starts_with("/oauth/authorize?"), "{next}");
    let consent = b.get(&next).await;
    assert!(consent.body.contains("name=\"decision\""), "{}", consent.body);
    let done = b.consent(&consent, true).await;
    let (status, tokens) = exchange(
        &crate::oauth::Setup { s, admin: t.admin, client_id: t.client_id, secret: t.secret, user_id: t.user_id },
        &done.redirect_params()["code"],
        VERIFIER,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(jwt_part(tokens["id_token"].as_str().unwrap(), 1)["amr"], json!(["pwd", "otp", "mfa"]));
}

crate::backend_tests!(
    authenticator_app_enrolment_and_sign_in,
    an_app_code_works_once_under_parallel_use,
    a_recovery_code_works_once_under_parallel_use,
    wrong_codes_end_the_pending_sign_in_and_lock,
    reauth_takes_the_second_factor,
    admin_resets_second_factors,
    required_mfa_enrols_at_sign_in,
    notices_and_password_reset_keep_the_second_factor,
    a_second_factor_is_not_skipped_sideways,
    oauth_code_flow_goes_through_the_second_step,
    older_browser_sessions_step_up,
    required_mfa_enrols_on_the_hosted_pages,
);
