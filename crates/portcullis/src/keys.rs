//! Signing keys: generation (RS256, ES256, EdDSA), sealing at rest with the master
//! key, the in-memory [`KeyRing`] every request signs and verifies with, the JWKS it
//! publishes, and rotation.
//!
//! Lifecycle of a key: published from its creation; signs from `activates_at` until
//! a newer key activates; stays published until `publish_until`, which rotation sets
//! to the successor's activation plus the longest token lifetime, so every token a
//! key signed verifies until it expires (RFC 7517 key rollover).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use aws_lc_rs::{
    encoding::{AsDer, Pkcs8V1Der},
    rand::SystemRandom,
    rsa::KeySize,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    crypto::{MasterKey, b64url},
    store::{Db, KeyRow},
};

/// JWS algorithms we sign with. Verifiers accept only these, per key (RFC 8725 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys: the most widely supported.
    #[serde(rename = "RS256", alias = "rs256")]
    #[value(name = "RS256", alias = "rs256")]
    Rs256,
    /// ECDSA P-256 with SHA-256: small, fast to sign.
    #[serde(rename = "ES256", alias = "es256")]
    #[value(name = "ES256", alias = "es256")]
    Es256,
    /// Ed25519: fastest to sign, deterministic.
    #[serde(rename = "EdDSA", alias = "eddsa")]
    #[value(name = "EdDSA", alias = "eddsa")]
    EdDsa,
}

impl Algorithm {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }

    fn jwt_alg(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

enum KeyPair {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A parsed private key: parsing once matters (re-parsing an RSA key per signature
/// costs two thirds of the signing rate).
pub struct Signer {
    kid: String,
    alg: Algorithm,
    pair: KeyPair,
    /// base64url of the JWS header of access tokens, computed once.
    at_header: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl Signer {
    fn from_pkcs8(kid: &str, alg: Algorithm, der: &[u8]) -> anyhow::Result<Self> {
        let pair = match alg {
            Algorithm::Rs256 => KeyPair::Rsa(
                aws_lc_rs::rsa::KeyPair::from_pkcs8(der).map_err(|e| anyhow::anyhow!("bad RSA key {kid}: {e}"))?,
            ),
            Algorithm::Es256 => KeyPair::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|e| anyhow::anyhow!("bad EC key {kid}: {e}"))?,
            ),
            Algorithm::EdDsa => {
                KeyPair::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(|e| anyhow::anyhow!("bad Ed25519 key {kid}: {e}"))?)
            }
        };
        let header = json!({"alg": alg.as_str(), "kid": kid, "typ": "at+jwt"});
        Ok(Self { kid: kid.to_owned(), alg, pair, at_header: b64url(header.to_string().as_bytes()) })
    }

    /// The key id that goes into the JWS header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Signs `input` (the JWS signing input) and returns the raw signature.
    pub fn sign(&self, input: &[u8]) -> anyhow::Result<Vec<u8>> {
        let rng = SystemRandom::new();
        match &self.pair {
            KeyPair::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                    .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
                Ok(sig)
            }
            KeyPair::Ec(kp) => {
                Ok(kp.sign(&rng, input).map_err(|_| anyhow::anyhow!("ECDSA signing failed"))?.as_ref().to_vec())
            }
            KeyPair::Ed(kp) => Ok(kp.sign(input).as_ref().to_vec()),
        }
    }

    /// A compact JWS of `claims` with header `typ` set to `typ`.
    pub fn sign_jwt<T: Serialize>(&self, typ: &str, claims: &T) -> anyhow::Result<String> {
        let header = json!({"alg": self.alg.as_str(), "kid": self.kid, "typ": typ});
        let mut token = b64url(header.to_string().as_bytes());
        token.push('.');
        token.push_str(&b64url(&serde_json::to_vec(claims)?));
        let sig = self.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&b64url(&sig));
        Ok(token)
    }

    /// A compact JWS of `claims` with header `typ: at+jwt` (RFC 9068 §2.1).
    pub fn sign_access_token<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let payload = serde_json::to_vec(claims)?;
        let mut token = String::with_capacity(self.at_header.len() + payload.len() * 4 / 3 + 400);
        token.push_str(&self.at_header);
        token.push('.');
        token.push_str(&b64url(&payload));
        let sig = self.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&b64url(&sig));
        Ok(token)
    }
}

/// A freshly generated key: the row to store and its public JWK.
pub fn generate(alg: Algorithm, master: &MasterKey, now: i64, activates_at: i64) -> anyhow::Result<KeyRow> {
    let rng = SystemRandom::new();
    let (pkcs8, mut jwk) = match alg {
        Algorithm::Rs256 => {
            let kp = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048)
                .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
            let der: Pkcs8V1Der<'static> = kp.as_der().map_err(|_| anyhow::anyhow!("RSA key export failed"))?;
            let public = kp.public_key();
            let jwk = json!({
                "kty": "RSA",
                "n": b64url(public.modulus().big_endian_without_leading_zero()),
                "e": b64url(public.exponent().big_endian_without_leading_zero()),
            });
            (der.as_ref().to_vec(), jwk)
        }
        Algorithm::Es256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| anyhow::anyhow!("EC key generation failed"))?;
            let kp = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                .map_err(|e| anyhow::anyhow!("EC key parse failed: {e}"))?;
            // Uncompressed SEC1 point: 0x04 || X (32 bytes) || Y (32 bytes).
            let point = kp.public_key().as_ref();
            let (x, y) = match point {
                [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
                _ => anyhow::bail!("unexpected EC public key encoding"),
            };
            (doc.as_ref().to_vec(), json!({"kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y)}))
        }
        Algorithm::EdDsa => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("Ed25519 generation failed"))?;
            let kp = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|e| anyhow::anyhow!("Ed25519 parse: {e}"))?;
            let x = b64url(kp.public_key().as_ref());
            (doc.as_ref().to_vec(), json!({"kty": "OKP", "crv": "Ed25519", "x": x}))
        }
    };
    let kid = thumbprint(&jwk)?;
    if let Some(obj) = jwk.as_object_mut() {
        obj.insert("kid".into(), json!(kid));
        obj.insert("alg".into(), json!(alg.as_str()));
        obj.insert("use".into(), json!("sig"));
    }
    Ok(KeyRow {
        private_key: master.seal(&format!("signing-key:{kid}"), &pkcs8)?,
        kid,
        alg: alg.as_str().to_owned(),
        public_jwk: jwk.to_string(),
        created_at: now,
        activates_at,
        publish_until: None,
    })
}

/// RFC 7638 JWK thumbprint: SHA-256 over the required members in lexicographic order.
fn thumbprint(jwk: &serde_json::Value) -> anyhow::Result<String> {
    let get = |k: &str| jwk.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let canonical = match get("kty").as_str() {
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, get("e"), get("n")),
        "EC" => format!(r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#, get("crv"), get("x"), get("y")),
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, get("crv"), get("x")),
        other => anyhow::bail!("unsupported kty {other}"),
    };
    Ok(b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref()))
}

/// A verification key: the algorithm it is allowed with and the parsed public key.
pub struct Verifier {
    /// The only algorithm a token naming this `kid` may use.
    pub alg: jsonwebtoken::Algorithm,
    /// Parsed public key.
    pub key: jsonwebtoken::DecodingKey,
}

/// The key set at one moment: who signs, who verifies, what the JWKS says.
pub struct KeyRing {
    signer: Option<Arc<Signer>>,
    verifiers: HashMap<String, Verifier>,
    jwks: bytes::Bytes,
    published: Vec<String>,
}

impl KeyRing {
    /// The key that signs new tokens now.
    pub fn signer(&self) -> Option<&Arc<Signer>> {
        self.signer.as_ref()
    }

    /// The verifier for a `kid`, if that key is published.
    pub fn verifier(&self, kid: &str) -> Option<&Verifier> {
        self.verifiers.get(kid)
    }

    /// `{"keys": [...]}`, serialized once per change.
    pub fn jwks(&self) -> bytes::Bytes {
        self.jwks.clone()
    }
}

/// Owns the current [`KeyRing`] and keeps it in step with the database.
pub struct KeyManager {
    db: Db,
    master: Arc<MasterKey>,
    ring: RwLock<Arc<KeyRing>>,
    forced: std::sync::Mutex<Option<Instant>>,
    /// Longest lifetime of a token we sign: how long a retired key stays published.
    token_ttl: Duration,
}

/// Status of a key, for `portcullis keys list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, will sign from `activates_at`.
    Next,
    /// Signing now.
    Current,
    /// Published for verification only, until `publish_until`.
    Retired,
    /// No longer published.
    Expired,
}

impl KeyManager {
    /// Loads the key set; on an empty database, or when the configured algorithm
    /// changed, rotates in a new key first.
    pub async fn init(
        db: Db,
        master: Arc<MasterKey>,
        alg: Option<Algorithm>,
        token_ttl: Duration,
    ) -> anyhow::Result<Self> {
        let mgr = Self {
            db,
            master,
            ring: RwLock::new(Arc::new(KeyRing {
                signer: None,
                verifiers: HashMap::new(),
                jwks: bytes::Bytes::from_static(b"{\"keys\":[]}"),
                published: Vec::new(),
            })),
            forced: std::sync::Mutex::new(None),
            token_ttl,
        };
        mgr.reload().await?;
        let Some(alg) = alg else { return Ok(mgr) };
        let needs_key = match mgr.ring().signer() {
            None => true,
            Some(s) => s.alg() != alg,
        };
        if needs_key {
            let row = mgr.rotate(alg, Duration::ZERO).await?;
            tracing::info!(kid = %row.kid, alg = %row.alg, "generated a new signing key");
        }
        Ok(mgr)
    }

    /// The key ring as of the last reload.
    pub fn ring(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads keys from the database and swaps in a new ring.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let rows = self.db.keys_all().await?;
        let now = crate::clock::now_ms();
        let old = self.ring();
        let ring = self.build(&rows, now, &old)?;
        if ring.published != old.published
            || ring.signer.as_ref().map(|s| &s.kid) != old.signer.as_ref().map(|s| &s.kid)
        {
            tracing::info!(keys = ?ring.published, signer = ?ring.signer.as_ref().map(|s| &s.kid), "key set changed");
        }
        match self.ring.write() {
            Ok(mut w) => *w = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
        Ok(())
    }

    /// Reloads at once when a token names a `kid` we do not know (another node may
    /// have just rotated), at most once a second so garbage `kid`s cannot make every
    /// request hit the database.
    pub async fn reload_for_unknown_kid(&self) -> bool {
        {
            let Ok(mut last) = self.forced.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.reload().await.is_ok()
    }

    fn build(&self, rows: &[KeyRow], now: i64, old: &KeyRing) -> anyhow::Result<KeyRing> {
        let mut verifiers = HashMap::new();
        let mut jwks = Vec::new();
        let mut published = Vec::new();
        let mut signer_row: Option<&KeyRow> = None;
        // Rows come newest activation first.
        for row in rows {
            let live = row.publish_until.is_none_or(|t| t > now);
            if !live {
                continue;
            }
            let Some(alg) = Algorithm::parse(&row.alg) else {
                tracing::warn!(kid = %row.kid, alg = %row.alg, "skipping key with unknown algorithm");
                continue;
            };
            let jwk_value: serde_json::Value = serde_json::from_str(&row.public_jwk)?;
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk_value.clone())?;
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwk)?;
            verifiers.insert(row.kid.clone(), Verifier { alg: alg.jwt_alg(), key });
            jwks.push(jwk_value);
            published.push(row.kid.clone());
            if signer_row.is_none() && row.activates_at <= now {
                signer_row = Some(row);
            }
        }
        let signer = match signer_row {
            None => None,
            Some(row) => match old.signer.as_ref().filter(|s| s.kid == row.kid) {
                Some(same) => Some(same.clone()),
                None => {
                    let der = self.master.open(&format!("signing-key:{}", row.kid), &row.private_key).map_err(|e| {
                        anyhow::anyhow!(
                            "signing key {} cannot be decrypted ({e}); every node must use the same PORTCULLIS_MASTER_KEY",
                            row.kid
                        )
                    })?;
                    let alg = Algorithm::parse(&row.alg).unwrap_or(Algorithm::Rs256);
                    Some(Arc::new(Signer::from_pkcs8(&row.kid, alg, &der)?))
                }
            },
        };
        let jwks = bytes::Bytes::from(serde_json::to_vec(&json!({ "keys": jwks }))?);
        Ok(KeyRing { signer, verifiers, jwks, published })
    }

    /// Generates a key that signs after `activate_in` (published at once) and
    /// schedules the keys it replaces to leave the JWKS once their tokens expired.
    pub async fn rotate(&self, alg: Algorithm, activate_in: Duration) -> anyhow::Result<KeyRow> {
        let now = crate::clock::now_ms();
        let activates_at = now + i64::try_from(activate_in.as_millis())?;
        let master = self.master.clone();
        let row = tokio::task::spawn_blocking(move || generate(alg, &master, now, activates_at)).await??;
        let retire_at = activates_at + i64::try_from(self.token_ttl.as_millis())?;
        self.db.key_rotate_in(&row, retire_at).await?;
        // Keys past their publication window verify nothing any more: drop their
        // private halves rather than keep secrets nobody needs.
        let purged = self.db.keys_purge(now).await?;
        if purged > 0 {
            tracing::info!(purged, "removed signing keys whose tokens have all expired");
        }
        self.reload().await?;
        Ok(row)
    }

    /// Every stored key with its state at `now`, newest first.
    pub async fn list(&self, now: i64) -> anyhow::Result<Vec<(KeyRow, KeyState)>> {
        let rows = self.db.keys_all().await?;
        let mut seen_current = false;
        Ok(rows
            .into_iter()
            .map(|row| {
                let state = if row.publish_until.is_some_and(|t| t <= now) {
                    KeyState::Expired
                } else if row.activates_at > now {
                    KeyState::Next
                } else if !seen_current {
                    seen_current = true;
                    KeyState::Current
                } else {
                    KeyState::Retired
                };
                (row, state)
            })
            .collect())
    }
}
