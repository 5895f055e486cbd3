//! Signing keys: rotation by another process reaches a running server, and tokens
//! signed by the retired key keep verifying until they expire.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{Backend, Data, TestServer, jwt_part};

crate::backend_tests!(rotation_by_the_cli_reaches_a_running_server, keys_are_encrypted_at_rest);

/// Runs the real `portcullis` binary against `data`, as an operator would.
pub fn cli(data: &Data, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.arg("--data-dir").arg(data.data_dir());
    if let Some(url) = &data.database_url {
        cmd.arg("--database-url").arg(url);
    }
    cmd.args(args).env("RUST_LOG", "warn").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

async fn jwks_kids(srv: &TestServer) -> Vec<String> {
    let jwks: Value = srv.client.get(srv.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

async fn rotation_by_the_cli_reaches_a_running_server(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let before = srv.user("rot@example.com").await;
    let old_kid = jwt_part(&before.access, 0)["kid"].as_str().unwrap().to_owned();
    assert_eq!(jwks_kids(&srv).await, vec![old_kid.clone()]);

    let data_ref = &data;
    let out = tokio::task::block_in_place(|| cli(data_ref, &["keys", "rotate", "--algorithm", "ES256"], None));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Within 5 seconds the running server publishes and signs with the new key.
    let deadline = Instant::now() + Duration::from_secs(5);
    let new_token = loop {
        let t = srv.login("rot@example.com", crate::common::PASSWORD).await;
        if jwt_part(&t.access, 0)["kid"] != old_kid.as_str() {
            break t;
        }
        assert!(Instant::now() < deadline, "the server did not pick up the rotated key within 5s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(jwt_part(&new_token.access, 0)["alg"], "ES256");
    let kids = jwks_kids(&srv).await;
    assert_eq!(kids.len(), 2, "old key still published: {kids:?}");
    assert!(kids.contains(&old_kid));
    // Tokens of the retired key still verify; so do new ones.
    assert_eq!(srv.me_status(&before.access).await, StatusCode::OK);
    assert_eq!(srv.me_status(&new_token.access).await, StatusCode::OK);

    let list = tokio::task::block_in_place(|| cli(data_ref, &["keys", "list"], None));
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("current") && text.contains("retired"), "{text}");
    srv.stop().await;
}

async fn keys_are_encrypted_at_rest(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let db = portcullis::store::Db::connect(&srv.cfg.database_url()).await.unwrap();
    let master = std::fs::read_to_string(data.data_dir().join("master.key")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.data_dir().join("master.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let rows = db.keys_all().await.unwrap();
    assert_eq!(rows.len(), 1);
    let sealed = &rows[0].private_key;
    // Not PKCS#8 DER (which starts 0x30 0x82) in any encoding, and only the right
    // master key opens it.
    let raw = portcullis::crypto::b64url_decode(sealed).unwrap();
    assert_ne!(&raw[..2], &[0x30, 0x82]);
    let key = portcullis::crypto::MasterKey::parse(&master).unwrap();
    let der = key.open(&format!("signing-key:{}", rows[0].kid), sealed).unwrap();
    assert_eq!(&der[..2], &[0x30, 0x82]);
    let wrong = portcullis::crypto::MasterKey::from_bytes(&[9u8; 32]).unwrap();
    assert!(wrong.open(&format!("signing-key:{}", rows[0].kid), sealed).is_err());
    db.close().await;
    srv.stop().await;
}
