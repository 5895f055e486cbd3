//! SMS codes, end to end: every message goes through the outbox to a real HTTP
//! receiver the test starts, in Twilio's Messages API format or as a Standard
//! Webhooks POST whose signature PyPI `standardwebhooks` verifies.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    common::{Backend, Data, PASSWORD, TestServer, Tokens, assert_problem, jwt_part},
    mfa::password_step,
    receiver::{Received, Receiver},
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn twilio(data: &Data, rx: &Receiver, tweak: impl FnOnce(&mut portcullis::config::Config)) -> TestServer {
    let token_file = data.data_dir().join("twilio-token");
    std::fs::create_dir_all(data.data_dir()).unwrap();
    std::fs::write(&token_file, "tw-auth-token\n").unwrap();
    let url = rx.url.clone();
    TestServer::start_on(data, |cfg| {
        cfg.sms.provider = portcullis::config::SmsProvider::Twilio;
        cfg.sms.base_url = url;
        cfg.sms.account_sid = Some("AC0123".into());
        cfg.sms.auth_token_file = Some(token_file);
        cfg.sms.from = Some("+15550000000".into());
        cfg.email.product_name = "Acme".into();
        tweak(cfg);
    })
    .await
}

/// The six digits of a Twilio message body.
fn code_of(r: &Received) -> String {
    let body = r.form_field("Body");
    body.split_whitespace().next().unwrap().to_owned()
}

/// Enrols `+1 555 010 4567` for the user of `access`; the messages so far.
async fn enrol_phone(s: &TestServer, rx: &Receiver, access: &str, n: usize) -> Value {
    let res = s.post_auth("/v1/me/mfa/sms", access, json!({"phone": "+1 555 010 4567"})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.json::<Value>().await.unwrap()["phone"], "+1••••••4567");
    let sent = rx.nth(n).await;
    let res = s.post_auth("/v1/me/mfa/sms/confirm", access, json!({"code": code_of(&sent)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// Enrolment and sign-in with codes delivered in Twilio's format; a code works
/// once, also under parallel use; the outbox forgets the code once it is sent.
async fn sms_codes_in_twilio_format(backend: Backend) {
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    let s = twilio(&data, &rx, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let res = s.post_auth("/v1/me/mfa/sms", &ann.access, json!({"phone": "555-0104"})).await;
    let p = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(p["errors"][0]["code"], "invalid_phone");
    let res = s.post_auth("/v1/me/mfa/sms", &ann.access, json!({"phone": "+1 555 010 4567"})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let sent = rx.nth(1).await;
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/2010-04-01/Accounts/AC0123/Messages.json");
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("AC0123:tw-auth-token");
    assert_eq!(sent.header("authorization"), Some(format!("Basic {basic}").as_str()));
    assert!(sent.header("content-type").unwrap().starts_with("application/x-www-form-urlencoded"));
    assert_eq!(sent.form_field("To"), "+15550104567");
    assert_eq!(sent.form_field("From"), "+15550000000");
    assert!(sent.form_field("Body").contains("is your Acme code"), "{}", sent.form_field("Body"));
    let code = code_of(&sent);
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let res = s.post_auth("/v1/me/mfa/sms/confirm", &ann.access, json!({"code": wrong})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    let res = s.post_auth("/v1/me/mfa/sms/confirm", &ann.access, json!({"code": code})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["recovery_codes"].as_array().unwrap().len(), 10);
    let mfa: Value = s.get_auth("/v1/me/mfa", &ann.access).await.json().await.unwrap();
    assert_eq!(mfa["factors"][0]["type"], "sms");
    assert_eq!(mfa["factors"][0]["label"], "+1••••••4567");

    // Sign-in: the password, then a code sent on request.
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["factors"], json!(["sms", "recovery_code"]));
    let token = body["mfa_token"].as_str().unwrap().to_owned();
    let res = s.post("/v1/auth/login/mfa/sms", json!({"mfa_token": token})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let code = code_of(&rx.nth(2).await);
    // A code of one pending sign-in does not finish another.
    let other = password_step(&s, "ann@example.com").await;
    let res = s.post("/v1/auth/login/mfa", json!({"mfa_token": other, "code": code})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_code").await;
    let tries = (0..10).map(|_| s.post("/v1/auth/login/mfa", json!({"mfa_token": token, "code": code})));
    let results = futures::future::join_all(tries).await;
    let statuses: Vec<StatusCode> = results.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    let mut signed = None;
    for r in results {
        if r.status() == StatusCode::OK {
            signed = Some(Tokens::from(r.json::<Value>().await.unwrap()));
        }
    }
    assert_eq!(jwt_part(&signed.unwrap().access, 1)["amr"], json!(["pwd", "sms", "mfa"]));
    // Sent codes are erased from the outbox; the number is stored sealed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let dump = s.db().debug_dump_text().await.unwrap();
        let outbox: Vec<&str> = dump.lines().filter(|l| l.starts_with("outbox") && l.contains("kind=sms")).collect();
        if outbox.len() == 2 && outbox.iter().all(|l| !l.contains("sealed")) {
            assert!(!dump.contains("+15550104567") && !dump.contains(&code), "{dump}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{outbox:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.stop().await;
}

/// Sends are bounded per number and per address, and three per pending sign-in;
/// without a provider, SMS is off; removing the number needs a recent sign-in.
async fn sms_sends_are_bounded(backend: Backend) {
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    let s = twilio(&data, &rx, |cfg| cfg.sms.send_rate = "5/1h".parse().unwrap()).await;
    let ann = s.user("ann@example.com").await;
    enrol_phone(&s, &rx, &ann.access, 1).await;
    let token = password_step(&s, "ann@example.com").await;
    for _ in 0..3 {
        let res = s.post("/v1/auth/login/mfa/sms", json!({"mfa_token": token})).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    let res = s.post("/v1/auth/login/mfa/sms", json!({"mfa_token": token})).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Four sends so far (with the enrolment's, five were allowed with the refused one
    // counted): the number's limit refuses a fresh sign-in's code.
    let again = password_step(&s, "ann@example.com").await;
    let res = s.post("/v1/auth/login/mfa/sms", json!({"mfa_token": again})).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(rx.all().len() <= 5, "{}", rx.all().len());
    s.db().debug_exec("UPDATE sessions SET auth_time = 1").await.unwrap();
    let res = s.send(Method::DELETE, "/v1/me/mfa/sms", &ann.access, None).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    s.stop().await;

    // No provider: no SMS.
    let plain = TestServer::start_on(&data, |_| {}).await;
    let bob = plain.user("bob@example.com").await;
    let res = plain.post_auth("/v1/me/mfa/sms", &bob.access, json!({"phone": "+15550104567"})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    plain.stop().await;
}

/// The webhook provider signs its POST with the Standard Webhooks scheme: the
/// reference library verifies it; a failing gateway gets the code again.
async fn sms_webhook_is_signed_and_retried(backend: Backend) {
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    rx.answer(503);
    let url = format!("{}/sms", rx.url);
    let s = TestServer::start_on(&data, |cfg| {
        cfg.sms.provider = portcullis::config::SmsProvider::Webhook;
        cfg.sms.webhook_url = Some(url);
        cfg.sms.webhook_secret = Some(SECRET.into());
    })
    .await;
    let ann = s.user("ann@example.com").await;
    let res = s.post_auth("/v1/me/mfa/sms", &ann.access, json!({"phone": "+442079460958"})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let first = rx.nth(1).await;
    rx.answer(200);
    let second = rx.nth(2).await;
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"), "a retry keeps its id");
    let event: Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(event["type"], "sms.code");
    assert_eq!(event["to"], "+442079460958");
    assert_eq!(event["purpose"], "enrolment");
    let headers = json!({
        "webhook-id": second.header("webhook-id").unwrap(),
        "webhook-timestamp": second.header("webhook-timestamp").unwrap(),
        "webhook-signature": second.header("webhook-signature").unwrap(),
    });
    let script = "import json, sys\nfrom standardwebhooks.webhooks import Webhook\n\
                  body = sys.stdin.read()\n\
                  print(json.dumps(Webhook(sys.argv[1]).verify(body, json.loads(sys.argv[2]))))";
    let verify = |body: &[u8]| {
        let mut child = std::process::Command::new("python3")
            .args(["-c", script, SECRET, &headers.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(body).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = verify(&second.body);
    assert!(out.status.success(), "standardwebhooks refused: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!verify(&[second.body.as_slice(), b" "].concat()).status.success(), "a changed body fails");
    let res = s.post_auth("/v1/me/mfa/sms/confirm", &ann.access, json!({"code": event["code"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    s.stop().await;
}

/// The hosted second step offers "Text me a code" to a user with a number.
async fn sms_on_the_hosted_pages(backend: Backend) {
    use crate::oauth::{Browser, VERIFIER, authorize_url, exchange, setup};
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    t.s.stop().await;
    let rx = Receiver::start().await;
    let s = twilio(&data, &rx, |_| {}).await;
    let ann = s.login("ann@example.com", PASSWORD).await;
    enrol_phone(&s, &rx, &ann.access, 1).await;
    let mut b = Browser::new(&s);
    let page = b.get(&authorize_url(&t.client_id, &[])).await;
    let step = b.sign_in(&page, "ann@example.com", PASSWORD).await;
    assert!(step.body.contains("Text me a code"), "{}", step.body);
    // The forms: code, then "Text me a code".
    let forms: Vec<&str> = step.body.split("</form>").collect();
    let sms_form =
        crate::oauth::Seen { status: step.status, location: None, body: forms[1].to_owned(), set_cookies: Vec::new() }
            .form();
    assert!(sms_form.contains(&("step".into(), "sms".into())));
    let sent = b.post("/oauth/mfa", &sms_form).await;
    assert!(sent.body.contains("We sent a code to +1••••••4567"), "{}", sent.body);
    let code = code_of(&rx.nth(2).await);
    let mut form = crate::oauth::Seen { body: sent.body.split("</form>").next().unwrap().to_owned(), ..sent }.form();
    form.push(("code".into(), code));
    let consent = b.post("/oauth/mfa", &form).await;
    assert!(consent.body.contains("name=\"decision\""), "{}", consent.body);
    let done = b.consent(&consent, true).await;
    let setup = crate::oauth::Setup { s, admin: t.admin, client_id: t.client_id, secret: t.secret, user_id: t.user_id };
    let (status, tokens) = exchange(&setup, &done.redirect_params()["code"], VERIFIER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(jwt_part(tokens["id_token"].as_str().unwrap(), 1)["amr"], json!(["pwd", "sms", "mfa"]));
    setup.s.stop().await;
}

crate::backend_tests!(
    sms_codes_in_twilio_format,
    sms_sends_are_bounded,
    sms_webhook_is_signed_and_retried,
    sms_on_the_hosted_pages,
);
