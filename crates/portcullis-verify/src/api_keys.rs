//! API keys, checked with Portcullis (`POST /v1/api-keys/verify`) and the verdict
//! kept for a few seconds, by SHA-256 of the key (the key itself is never stored).

use std::{collections::HashMap, sync::Mutex, time::Instant};

use portcullis_proto::{ApiKeyVerifyRequest, ApiKeyVerifyResponse};

use crate::{Auth, Config, VerifyError};

/// Verdicts kept at most; past it, expired ones go, then all.
const MAX_VERDICTS: usize = 10_000;

/// Longer than any key Portcullis issues; anything longer is not asked about.
const MAX_KEY_LEN: usize = 512;

/// Until when a verdict holds, and the verdict.
type Verdict = (Instant, Result<Auth, VerifyError>);

/// The verdict cache.
#[derive(Default)]
pub(crate) struct KeyVerdicts {
    cache: Mutex<HashMap<[u8; 32], Verdict>>,
}

impl KeyVerdicts {
    pub(crate) async fn verify(
        &self,
        http: &reqwest::Client,
        config: &Config,
        verifier_key: &str,
        key: &str,
    ) -> Result<Auth, VerifyError> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
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
        let verdict = ask(http, config, verifier_key, key).await;
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

async fn ask(http: &reqwest::Client, config: &Config, verifier_key: &str, key: &str) -> Result<Auth, VerifyError> {
    let url = format!("{}/v1/api-keys/verify", config.server());
    let res = http
        .post(&url)
        .header("x-api-key", verifier_key)
        .json(&ApiKeyVerifyRequest { key: key.to_owned() })
        .send()
        .await
        .map_err(|e| VerifyError::Unavailable(format!("{url}: {e}")))?;
    let status = res.status();
    if !status.is_success() {
        // 401/403: this service's own verifier key is wrong; 429: it asks too often.
        // Neither is the caller's fault, so neither is a verdict on their key.
        return Err(VerifyError::Unavailable(format!("{url}: HTTP {status}")));
    }
    let reply: ApiKeyVerifyResponse =
        res.json().await.map_err(|e| VerifyError::Unavailable(format!("{url}: unexpected answer: {e}")))?;
    if !reply.active {
        return Err(VerifyError::Invalid("the API key is not valid"));
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
