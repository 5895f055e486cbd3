//! The issuer's signing keys, fetched from its JWKS and cached: refetched in the
//! background when older than `jwks_max_age`, at once when a token names an unknown
//! `kid`, never more often than `refetch_interval`, one fetch at a time; kept when a
//! fetch fails, for at most `jwks_max_stale`.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use portcullis_proto::AccessTokenClaims;

use crate::{Config, VerifyError};

/// The most a JWKS answer may weigh; ours are a few kilobytes.
const JWKS_MAX_BYTES: usize = 1 << 20;

/// The algorithms Portcullis signs with. Anything else (`none`, HMAC) is refused
/// before a key is even looked up.
const ALLOWED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<Key>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

/// The cache; see the module docs.
pub(crate) struct KeyCache {
    url: String,
    keys: RwLock<Keys>,
    fetching: tokio::sync::Mutex<()>,
}

impl KeyCache {
    pub(crate) fn new(url: String) -> Self {
        Self { url, keys: RwLock::default(), fetching: tokio::sync::Mutex::new(()) }
    }

    /// Signature, `typ`, algorithm, issuer, audience and time claims.
    pub(crate) async fn verify(
        self: &Arc<Self>,
        http: &reqwest::Client,
        config: &Config,
        token: &str,
    ) -> Result<AccessTokenClaims, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Invalid("malformed token"))?;
        // RFC 9068 §4: explicit typing keeps ID tokens and other JWTs out.
        let typ = header.typ.as_deref().unwrap_or("").to_ascii_lowercase();
        if typ != "at+jwt" && typ != "application/at+jwt" {
            return Err(VerifyError::Invalid("not an access token"));
        }
        if !ALLOWED.contains(&header.alg) {
            return Err(VerifyError::Invalid("algorithm not allowed"));
        }
        let kid = header.kid.as_deref().ok_or(VerifyError::Invalid("token has no key id"))?;
        let key = self.key(http, config, kid).await?;
        if header.alg != key.alg {
            return Err(VerifyError::Invalid("algorithm not allowed for this key"));
        }
        let mut validation = Validation::new(key.alg);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[config.audience.as_deref().unwrap_or(&config.issuer)]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<AccessTokenClaims>(token, &key.key, &validation).map(|d| d.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                ErrorKind::ImmatureSignature => VerifyError::Invalid("token not yet valid"),
                ErrorKind::InvalidIssuer => VerifyError::Invalid("wrong issuer"),
                ErrorKind::InvalidAudience => VerifyError::Invalid("wrong audience"),
                ErrorKind::InvalidSignature => VerifyError::Invalid("bad signature"),
                _ => VerifyError::Invalid("invalid token"),
            }
        })
    }

    /// The key `kid`. A known key is answered at once (a stale set is refreshed in
    /// the background); an unknown one waits for a fetch, unless one was made within
    /// `refetch_interval`, in which case the answer is "retry shortly".
    async fn key(
        self: &Arc<Self>,
        http: &reqwest::Client,
        config: &Config,
        kid: &str,
    ) -> Result<Arc<Key>, VerifyError> {
        let (found, age) = self.lookup(kid);
        if age.is_some_and(|a| a > config.jwks_max_stale) {
            // Not one good fetch for this long: a key the server withdrew (retired,
            // or compromised) must not stay trusted forever because fetches fail.
            if !self.refresh(http, config).await {
                return Err(self.unavailable("the signing keys are too old and cannot be refreshed"));
            }
            return self.lookup(kid).0.ok_or(VerifyError::Invalid("unknown signing key"));
        }
        if let Some(key) = found {
            if age.is_some_and(|a| a >= config.jwks_max_age) {
                self.refresh_in_background(http, config);
            }
            return Ok(key);
        }
        let fetched = self.refresh(http, config).await;
        if let (Some(key), _) = self.lookup(kid) {
            return Ok(key);
        }
        let keys = self.keys.read().map_err(|_| VerifyError::Unavailable("key cache poisoned".into()))?;
        if keys.fetched_at.is_none() {
            let why = keys.last_error.clone().unwrap_or_else(|| "no signing keys fetched yet".into());
            return Err(VerifyError::Unavailable(why));
        }
        if !fetched {
            // A key minted since the last fetch (a rotation) is refused only for a
            // moment, and as "retry", not as a bad token.
            return Err(VerifyError::Unavailable("signing key not known yet; refetch pending".into()));
        }
        Err(VerifyError::Invalid("unknown signing key"))
    }

    fn unavailable(&self, what: &str) -> VerifyError {
        let last = self.keys.read().ok().and_then(|k| k.last_error.clone()).unwrap_or_default();
        VerifyError::Unavailable(format!("{what}: {last}"))
    }

    /// The key and how old the set is (`None`: never fetched).
    fn lookup(&self, kid: &str) -> (Option<Arc<Key>>, Option<Duration>) {
        let Ok(keys) = self.keys.read() else { return (None, None) };
        (keys.by_kid.get(kid).cloned(), keys.fetched_at.map(|t| t.elapsed()))
    }

    fn refresh_in_background(self: &Arc<Self>, http: &reqwest::Client, config: &Config) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.fetching.try_lock().is_err() {
            return;
        }
        let (me, http, config) = (self.clone(), http.clone(), config.clone());
        runtime.spawn(async move { me.refresh(&http, &config).await });
    }

    /// One fetch at a time, at most one per `refetch_interval`; a failure keeps the
    /// keys there are. Whether this call fetched the set successfully.
    async fn refresh(&self, http: &reqwest::Client, config: &Config) -> bool {
        let _one = self.fetching.lock().await;
        let recent = self
            .keys
            .read()
            .map(|k| k.last_attempt.is_some_and(|t| t.elapsed() < config.refetch_interval))
            .unwrap_or(true);
        if recent {
            return false;
        }
        let result = fetch(http, &self.url).await;
        let Ok(mut keys) = self.keys.write() else { return false };
        keys.last_attempt = Some(Instant::now());
        match result {
            Ok(by_kid) => {
                keys.by_kid = by_kid;
                keys.fetched_at = Some(Instant::now());
                keys.last_error = None;
                true
            }
            Err(why) => {
                keys.last_error = Some(why);
                false
            }
        }
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<HashMap<String, Arc<Key>>, String> {
    let mut res = http.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("{url}: HTTP {}", res.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > JWKS_MAX_BYTES {
            return Err(format!("{url}: the key set is larger than {JWKS_MAX_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("{url}: not a JWK set: {e}"))?;
    let mut out = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else { continue };
        if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
            continue;
        }
        let Some(alg) = algorithm(jwk) else { continue };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            out.insert(kid, Arc::new(Key { alg, key }));
        }
    }
    Ok(out)
}

/// The key's algorithm: its `alg`, or what its type implies; `None` for anything
/// Portcullis does not sign with (symmetric keys above all).
fn algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        _ => return None,
    };
    let stated = match jwk.common.key_algorithm {
        None => implied,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return None,
    };
    (stated == implied).then_some(stated)
}
