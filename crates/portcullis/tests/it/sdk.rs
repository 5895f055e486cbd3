//! The SDKs' own suites (`sdk/typescript`: `npm test`; `sdk/python`: pytest), run
//! against this build's `portcullis` binary, so `scripts/test` (and CI) runs them
//! with the rest. Each suite starts its own `portcullis serve` processes on
//! loopback ports with SQLite data directories; the storage backends are covered
//! by the Rust suite, the SDKs' rules (refresh, retries, verification) by these.

use std::{path::PathBuf, process::Command, time::Duration};

use crate::interop::require;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `program args` in `dir` with the binary's path, bounded in time; fails with
/// the suite's output.
async fn run_suite(
    dir: PathBuf,
    program: &'static str,
    args: &'static [&'static str],
    env: Vec<(&'static str, String)>,
    what: &'static str,
) {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(&dir).env("PORTCULLIS_BIN", env!("CARGO_BIN_EXE_portcullis")).env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(600), tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than 10 minutes"))
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    eprintln!("{what}: {}", stdout.lines().rev().take(12).collect::<Vec<_>>().join(" | "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_suite() {
    let dir = repo().join("sdk/typescript");
    let ready = Command::new("npm").arg("--version").output().is_ok_and(|o| o.status.success())
        && dir.join("node_modules/openapi-fetch").is_dir();
    if !require(ready, "npm with sdk/typescript/node_modules (npm ci in sdk/typescript)") {
        return;
    }
    run_suite(dir, "npm", &["test", "--silent"], Vec::new(), "the TypeScript SDK suite").await;
}

/// The TypeScript client's types are generated from `docs/openapi.json` (which
/// `openapi::committed_document_is_current` keeps current): regenerate and compare.
#[test]
fn typescript_types_are_current() {
    let dir = repo().join("sdk/typescript");
    let generator = dir.join("node_modules/.bin/openapi-typescript");
    if !require(generator.is_file(), "sdk/typescript/node_modules (npm ci in sdk/typescript)") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let fresh = out.path().join("schema.d.ts");
    let run = Command::new(&generator)
        .arg(repo().join("docs/openapi.json"))
        .arg("-o")
        .arg(&fresh)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(run.status.success(), "openapi-typescript failed: {}", String::from_utf8_lossy(&run.stderr));
    let committed = std::fs::read_to_string(dir.join("src/schema.d.ts")).unwrap();
    assert!(
        std::fs::read_to_string(&fresh).unwrap() == committed,
        "sdk/typescript/src/schema.d.ts is stale: run `npm run generate` in sdk/typescript"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_suite() {
    let ready = Command::new("python3")
        .args(["-c", "import httpx, jwt, fastapi, pytest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !require(ready, "python3 with httpx, PyJWT, fastapi and pytest (pip install -r tests/interop/requirements.txt)")
    {
        return;
    }
    // The package from its source tree, not an installed copy that could be stale.
    let dir = repo().join("sdk/python");
    let mut path = dir.join("src").display().to_string();
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        path = format!("{path}:{}", old.to_string_lossy());
    }
    let args = &["-m", "pytest", "-q", "-p", "no:cacheprovider"];
    run_suite(dir, "python3", args, vec![("PYTHONPATH", path)], "the Python SDK suite").await;
}
