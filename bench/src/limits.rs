//! The machine's own limits, measured in-process in the same run as the load: what
//! one core (and all of them) can do of the expensive primitive behind each endpoint.
//! Argon2id runs at the server's parameters, signatures use aws-lc-rs with the key
//! parsed once (as the server's `keys::Signer` does), verification is measured both
//! with a parsed key and re-parsing per call (what `jsonwebtoken` does today).

use std::{
    hint::black_box,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use aws_lc_rs::{
    digest,
    rand::SystemRandom,
    rsa::KeySize,
    signature::{
        self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ParsedPublicKey, RsaKeyPair, RsaPublicKeyComponents,
        UnparsedPublicKey,
    },
};
use portcullis::{
    keys::Algorithm,
    passwords::{M_COST_KIB, P_COST, T_COST},
};
use serde::Serialize;

/// One primitive measured on 1 thread and, unless pinned, on every core.
#[derive(Debug, Clone, Serialize)]
pub struct Limit {
    /// Stable key used in JSON (`argon2id`, `sign`, `verify`, `verify_per_call`, `sha256`).
    pub key: &'static str,
    /// What was measured, for people.
    pub label: String,
    /// Operations per second on one thread.
    pub one_thread: f64,
    /// Operations per second with `threads` threads, when measured.
    pub all_threads: Option<f64>,
    /// The thread count of `all_threads`.
    pub threads: usize,
}

impl Limit {
    /// The rate the server can reach at best: all cores unless pinned to one.
    pub fn server_rate(&self) -> f64 {
        self.all_threads.unwrap_or(self.one_thread)
    }
}

/// Every limit, in report order.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Argon2id, sign, verify (parsed), verify (per call), SHA-256.
    pub items: Vec<Limit>,
}

impl Limits {
    /// The limit with this key.
    pub fn get(&self, key: &str) -> Option<&Limit> {
        self.items.iter().find(|l| l.key == key)
    }
}

/// How to measure.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Time spent on each primitive and thread count (Argon2id gets 3x: it is slow).
    pub each: Duration,
    /// Thread count of the "all cores" figure; `None` in pinned mode.
    pub threads: Option<usize>,
    /// Core to pin the single-thread measurements to (pinned mode: the server's core).
    pub pin_core: Option<usize>,
    /// The server's signing algorithm.
    pub algorithm: Algorithm,
}

/// Runs `op` on `threads` threads for `dur` and returns operations per second.
/// Each thread checks the clock every `batch` operations, so cheap primitives are
/// not dominated by `Instant::now`.
fn rate<F>(threads: usize, dur: Duration, batch: u64, pin: Option<usize>, op: F) -> f64
where
    F: Fn() + Sync,
{
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    if let Some(core) = pin {
                        core_affinity::set_for_current(core_affinity::CoreId { id: core });
                    }
                    let mut n = 0u64;
                    // Bounded twice: by the deadline and by an absurd count.
                    while n < u64::MAX / 2 && !stop.load(Ordering::Relaxed) {
                        for _ in 0..batch {
                            op();
                        }
                        n += batch;
                        if start.elapsed() >= dur {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let secs = start.elapsed().as_secs_f64();
    if secs > 0.0 { total as f64 / secs } else { 0.0 }
}

/// A JWS signing input of the size the server signs (header + claims ≈ 420 bytes).
fn jws_input() -> Vec<u8> {
    let mut v = b"eyJhbGciOiJSUzI1NiIsImtpZCI6ImFiYyIsInR5cCI6ImF0K2p3dCJ9.".to_vec();
    v.extend(std::iter::repeat_n(b'x', 360));
    v
}

type SignFn = Box<dyn Fn(&[u8]) -> anyhow::Result<Vec<u8>> + Sync>;
type VerifyFn = Box<dyn Fn(&[u8], &[u8]) -> bool + Sync>;

/// A signer and its public key, for the configured algorithm.
struct Keys {
    sign: SignFn,
    verify_parsed: ParsedPublicKey,
    verify_per_call: VerifyFn,
}

fn keys(alg: Algorithm) -> anyhow::Result<Keys> {
    let rng = SystemRandom::new();
    Ok(match alg {
        Algorithm::Rs256 => {
            let kp = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| anyhow!("RSA: {e}"))?;
            let pk = kp.public_key();
            let n = pk.modulus().big_endian_without_leading_zero().to_vec();
            let e = pk.exponent().big_endian_without_leading_zero().to_vec();
            let parsed = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, pk.as_ref())
                .map_err(|e| anyhow!("RSA public key: {e}"))?;
            let modulus_len = kp.public_modulus_len();
            Keys {
                sign: Box::new(move |msg| {
                    let mut sig = vec![0u8; modulus_len];
                    kp.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                        .map_err(|_| anyhow!("RSA sign failed"))?;
                    Ok(sig)
                }),
                verify_parsed: parsed,
                // jsonwebtoken's `DecodingKey::from_jwk` keeps n and e and builds the
                // RSA key on every verification: this is that path.
                verify_per_call: Box::new(move |msg, sig| {
                    RsaPublicKeyComponents { n: &n, e: &e }
                        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                        .is_ok()
                }),
            }
        }
        Algorithm::Es256 => {
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|e| anyhow!("EC: {e}"))?;
            let kp = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).map_err(|e| anyhow!("EC: {e}"))?;
            let public = kp.public_key().as_ref().to_vec();
            let parsed = ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &public)
                .map_err(|e| anyhow!("EC public key: {e}"))?;
            Keys {
                sign: Box::new(move |msg| {
                    Ok(kp.sign(&rng, msg).map_err(|_| anyhow!("ECDSA sign failed"))?.as_ref().to_vec())
                }),
                verify_parsed: parsed,
                verify_per_call: Box::new(move |msg, sig| {
                    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &public).verify(msg, sig).is_ok()
                }),
            }
        }
        Algorithm::EdDsa => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| anyhow!("Ed25519: {e}"))?;
            let kp = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|e| anyhow!("Ed25519: {e}"))?;
            let public = kp.public_key().as_ref().to_vec();
            let parsed =
                ParsedPublicKey::new(&signature::ED25519, &public).map_err(|e| anyhow!("Ed25519 public key: {e}"))?;
            Keys {
                sign: Box::new(move |msg| Ok(kp.sign(msg).as_ref().to_vec())),
                verify_parsed: parsed,
                verify_per_call: Box::new(move |msg, sig| {
                    UnparsedPublicKey::new(&signature::ED25519, &public).verify(msg, sig).is_ok()
                }),
            }
        }
    })
}

/// Measures every limit. Takes about `plan.each × 12` (× 7 when pinned).
pub fn measure(plan: Plan) -> anyhow::Result<Limits> {
    let mut items = Vec::new();
    let threads = plan.threads.unwrap_or(1);
    let both = |key: &'static str, label: String, each: Duration, batch: u64, op: &(dyn Fn() + Sync)| {
        let one = rate(1, each, batch, plan.pin_core, op);
        let all = plan.threads.map(|n| rate(n, each, batch, None, op));
        Limit { key, label, one_thread: one, all_threads: all, threads }
    };

    let params =
        argon2::Params::new(M_COST_KIB, T_COST, P_COST, Some(32)).map_err(|e| anyhow!("argon2 params: {e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let argon_op = || {
        let mut out = [0u8; 32];
        let _ = black_box(argon.hash_password_into(
            black_box(b"correct horse battery staple"),
            b"sixteen byte salt",
            &mut out,
        ));
    };
    items.push(both(
        "argon2id",
        format!("Argon2id hash (m={M_COST_KIB} KiB, t={T_COST}, p={P_COST})"),
        plan.each * 3,
        1,
        &argon_op,
    ));

    let k = keys(plan.algorithm).context("generating a benchmark key")?;
    let msg = jws_input();
    let sig = (k.sign)(&msg)?;
    let name = plan.algorithm.as_str();
    let sign_op = || {
        let _ = black_box((k.sign)(black_box(&msg)));
    };
    items.push(both("sign", format!("{name} sign"), plan.each, 4, &sign_op));
    let verify_op = || {
        let _ = black_box(k.verify_parsed.verify_sig(black_box(&msg), &sig));
    };
    items.push(both("verify", format!("{name} verify (key parsed once)"), plan.each, 16, &verify_op));
    let verify_per_call_op = || {
        let _ = black_box((k.verify_per_call)(black_box(&msg), &sig));
    };
    items.push(both(
        "verify_per_call",
        format!("{name} verify (key rebuilt per call, as jsonwebtoken does)"),
        plan.each,
        16,
        &verify_per_call_op,
    ));
    let key32 = [7u8; 32];
    let sha_op = || {
        let _ = black_box(digest::digest(&digest::SHA256, black_box(&key32)));
    };
    items.push(both("sha256", "SHA-256 of a 32-byte key".into(), plan.each, 1024, &sha_op));
    if k.verify_parsed.verify_sig(&msg, &sig).is_err() || !(k.verify_per_call)(&msg, &sig) {
        anyhow::bail!("the benchmark signature does not verify: the limits would be meaningless");
    }
    Ok(Limits { items })
}
