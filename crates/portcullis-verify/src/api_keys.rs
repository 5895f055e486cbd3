//! API keys, checked with Portcullis (`POST /v1/api-keys/verify`) and the verdict
//! kept for a few seconds, by SHA-256 of the key (the key itself is never stored).

use std::{collections::HashMap, sync::Mutex, time::Instant};

use portcullis_proto::{ApiKeyVerifyRequest, ApiKeyVerifyResponse};

use crate::{Auth, Config, VerifyError};

/// Verdicts kept at most; past it, expired ones go, then all.
const MAX_VERDICTS: usize = 10_000;

/// Until when a verdict holds, and the verdict.
type Verdict = (Instant, Result<Auth, VerifyError>);

/// The verdict cache, and when Portcullis last said "not so often".
#[derive(Default)]
pub(crate) struct KeyVerdicts {
    cache: Mutex<HashMap<[u8; 32], Verdict>>,
    held_off_until: Mutex<Option<Instant>>,
}

impl KeyVerdicts {
    pub(crate) async fn verify(
        &self,
        http: &reqwest::Client,
        config: &Config,
        verifier_key: &str,
        key: &str,
    ) -> Result<Auth, VerifyError> {
        // A made-up key (wrong shape or checksum) is refused here: junk keys cost
        // no call, so they cannot spend this service's verification allowance.
        if !portcullis_proto::api_key::well_formed(key) {
            return Err(VerifyError::Invalid("the API key is not valid"));
        }
        let digest = sha256(key);
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock()
            && let Some((until, verdict)) = cache.get(&digest)
            && *until > now
        {
            return verdict.clone();
        }
        if self.held_off_until.lock().ok().and_then(|h| *h).is_some_and(|until| until > now) {
            return Err(VerifyError::Unavailable("Portcullis asked this service to slow down".into()));
        }
        let verdict = match ask(http, config, verifier_key, key).await {
            Err(Asked::SlowDown(secs)) => {
                // Honour Retry-After instead of asking again at once, for every key.
                if let Ok(mut h) = self.held_off_until.lock() {
                    *h = Some(now + std::time::Duration::from_secs(secs.clamp(1, 60)));
                }
                Err(VerifyError::Unavailable(format!("rate limited by Portcullis for {secs} s")))
            }
            Err(Asked::Failed(e)) => Err(e),
            Ok(auth) => Ok(auth),
        };
        // A failure to ask is not a verdict about the key: never kept.
        if !matches!(verdict, Err(VerifyError::Unavailable(_)))
            && let Ok(mut cache) = self.cache.lock()
        {
            if cache.len() >= MAX_VERDICTS {
                cache.retain(|_, (until, _)| *until > now);
                if cache.len() >= MAX_VERDICTS {
                    cache.clear();
                }
            }
            cache.insert(digest, (now + config.api_key_cache_ttl, verdict.clone()));
        }
        verdict
    }
}

/// Why a verification call gave no verdict, or the verdict "invalid".
enum Asked {
    /// 429: wait this many seconds.
    SlowDown(u64),
    /// Anything else.
    Failed(VerifyError),
}

async fn ask(http: &reqwest::Client, config: &Config, verifier_key: &str, key: &str) -> Result<Auth, Asked> {
    let url = format!("{}/v1/api-keys/verify", config.server());
    let res = http
        .post(&url)
        .header("x-api-key", verifier_key)
        .json(&ApiKeyVerifyRequest { key: key.to_owned() })
        .send()
        .await
        .map_err(|e| Asked::Failed(VerifyError::Unavailable(format!("{url}: {e}"))))?;
    let status = res.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let secs = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1);
        return Err(Asked::SlowDown(secs));
    }
    if !status.is_success() {
        // 401/403: this service's own verifier key is wrong: not the caller's fault,
        // so not a verdict on their key.
        return Err(Asked::Failed(VerifyError::Unavailable(format!("{url}: HTTP {status}"))));
    }
    let reply: ApiKeyVerifyResponse = res
        .json()
        .await
        .map_err(|e| Asked::Failed(VerifyError::Unavailable(format!("{url}: unexpected answer: {e}"))))?;
    if !reply.active {
        return Err(Asked::Failed(VerifyError::Invalid("the API key is not valid")));
    }
    Ok(Auth {
        user_id: reply.owner,
        session_id: None,
        client_id: None,
        api_key_id: reply.key_id,
        scopes: reply.scopes.unwrap_or_default(),
        roles: Vec::new(),
        claims: None,
    })
}

fn sha256(s: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
