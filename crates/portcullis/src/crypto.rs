//! Small cryptographic building blocks shared by every capability: randomness, opaque
//! ids, SHA-256 of high-entropy secrets, constant-time comparison, the master key and
//! AES-256-GCM sealing of data at rest. All of it is aws-lc-rs underneath.

use std::{fmt, path::Path};

use aws_lc_rs::{aead, constant_time, digest, hmac, rand};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};

/// Fills a buffer from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The system RNG failing is unrecoverable for an auth server: better to stop
    // than to hand out predictable secrets.
    #[allow(clippy::expect_used)]
    rand::fill(&mut buf).expect("operating system RNG failed");
    buf
}

/// base64url without padding, the encoding of JWTs and of our opaque tokens.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// SHA-256 of a high-entropy secret, base64url: what we store instead of the secret.
/// (A slow hash adds nothing for 256-bit random values and would cost every request.)
pub fn sha256_b64(secret: &str) -> String {
    b64url(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref())
}

/// SHA-256 of `data`, raw.
pub fn sha256(data: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data.as_bytes()).as_ref());
    out
}

/// Compares two secrets without leaking, through timing, how much of them matched.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    #[allow(deprecated)]
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new opaque id such as `usr_01jd…`: 48 bits of milliseconds then 80 random bits,
/// Crockford base32, so ids sort by creation time (stable cursors) yet cannot be guessed.
pub fn new_id(prefix: &str, now_ms: i64) -> String {
    let rand: [u8; 10] = random_bytes();
    let mut value: u128 = (u128::from(now_ms.max(0) as u64) & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in rand.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..26).rev() {
        let idx = ((value >> (5 * i)) & 31) as usize;
        out.push(char::from(CROCKFORD.get(idx).copied().unwrap_or(b'0')));
    }
    out
}

/// A secret string that never shows up in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The 256-bit key that encrypts signing keys (and later other secrets) at rest.
pub struct MasterKey {
    key: aead::LessSafeKey,
    /// HMAC key derived from the master key, for low-entropy one-time codes.
    mac: hmac::Key,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// Where the master key came from, so start-up can warn when it is the dev fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `PORTCULLIS_MASTER_KEY` or `master_key_file`: what production uses.
    Configured,
    /// Read from `<data_dir>/master.key`, generated on an earlier start.
    DataDirFile,
    /// Generated just now into `<data_dir>/master.key`.
    Generated,
}

impl MasterKey {
    /// Builds the key from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> anyhow::Result<Self> {
        let unbound =
            aead::UnboundKey::new(&aead::AES_256_GCM, bytes).map_err(|_| anyhow::anyhow!("invalid AES-256 key"))?;
        // A separate key for MACs, so no value is ever both a cipher and a MAC key.
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, bytes), b"portcullis one-time code mac v1");
        Ok(Self { key: aead::LessSafeKey::new(unbound), mac: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()) })
    }

    /// Parses base64 (standard or url-safe) or hex of exactly 32 bytes.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2).unwrap_or(""), 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()
        } else {
            STANDARD.decode(text).ok().or_else(|| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok())
        };
        let bytes: [u8; 32] = bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
            anyhow::anyhow!(
                "the master key must be 32 bytes, written as base64 or 64 hex digits (try: openssl rand -base64 32)"
            )
        })?;
        Self::from_bytes(&bytes)
    }

    /// The configured key, else `<data_dir>/master.key`, created (mode 0600) if missing.
    pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<(Self, MasterKeySource)> {
        if let Some(text) = configured {
            return Ok((Self::parse(text)?, MasterKeySource::Configured));
        }
        let path = data_dir.join("master.key");
        if path.exists() {
            let text =
                std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            return Ok((Self::parse(&text)?, MasterKeySource::DataDirFile));
        }
        create_private_dir(data_dir)?;
        let bytes: [u8; 32] = random_bytes();
        write_private_file(&path, format!("{}\n", STANDARD.encode(bytes)).as_bytes())?;
        Ok((Self::from_bytes(&bytes)?, MasterKeySource::Generated))
    }

    /// Encrypts with a fresh random nonce; `context` is bound as associated data so a
    /// ciphertext cannot be moved to another row.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> anyhow::Result<String> {
        let nonce_bytes: [u8; 12] = random_bytes();
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce_bytes),
                aead::Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(b64url(&out))
    }

    /// HMAC-SHA256 of `value` bound to `context`, base64url: how a 6-digit code is
    /// stored. A plain hash of six digits is reversed by trying a million values;
    /// this one needs the master key, which the database does not hold.
    pub fn mac(&self, context: &str, value: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(context.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        b64url(ctx.sign().as_ref())
    }

    /// Decrypts what [`MasterKey::seal`] produced with the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> anyhow::Result<Vec<u8>> {
        let raw = b64url_decode(sealed).ok_or_else(|| anyhow::anyhow!("sealed value is not base64url"))?;
        if raw.len() < 12 + 16 {
            anyhow::bail!("sealed value is too short");
        }
        let (nonce, body) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| anyhow::anyhow!("bad nonce"))?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(context.as_bytes()), &mut body)
            .map_err(|_| anyhow::anyhow!("decryption failed: wrong master key or tampered data"))?;
        Ok(plain.to_vec())
    }
}

/// A Standard Webhooks signing secret (`whsec_` and base64): its key bytes.
pub fn webhook_key(secret: &str) -> anyhow::Result<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = STANDARD.decode(b64).map_err(|_| anyhow::anyhow!("a webhook secret is whsec_ and base64"))?;
    if key.len() < 24 {
        anyhow::bail!("a webhook secret needs at least 24 bytes of key");
    }
    Ok(key)
}

/// The Standard Webhooks `webhook-signature` header of a message: `v1,` and the
/// base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`. Receivers verify it with any
/// Standard Webhooks library; the webhooks of events will sign the same way.
pub fn webhook_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
    ctx.update(format!("{id}.{timestamp}.").as_bytes());
    ctx.update(body);
    format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
}

/// Creates the data directory readable by its owner only (0700): it holds the
/// database (password hashes, audit trail) and the master key. An existing directory
/// open to others is warned about, not changed behind the operator's back.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(dir)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(dir = %dir.display(), "the data directory is readable by other users; chmod 700 it");
            }
        }
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", dir.display()))
}

/// Writes a file readable by its owner only (0600), never briefly world-readable.
pub fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signatures_follow_the_standard() {
        // The example of the Standard Webhooks specification.
        let key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            webhook_signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(webhook_key("whsec_short").is_err());
    }

    #[test]
    fn ids_are_prefixed_sortable_and_unique() {
        let a = new_id("usr", 1_700_000_000_000);
        let b = new_id("usr", 1_700_000_000_001);
        assert!(a.starts_with("usr_") && a.len() == 30, "{a}");
        assert!(a < b);
        assert_ne!(new_id("usr", 5), new_id("usr", 5));
    }

    #[test]
    fn seal_round_trips_and_binds_context() {
        let key = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let sealed = key.seal("kid-1", b"secret").unwrap();
        assert_eq!(key.open("kid-1", &sealed).unwrap(), b"secret");
        assert!(key.open("kid-2", &sealed).is_err());
        let other = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open("kid-1", &sealed).is_err());
    }

    #[test]
    fn master_key_parses_base64_and_hex() {
        assert!(MasterKey::parse(&STANDARD.encode([1u8; 32])).is_ok());
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::parse("short").is_err());
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret([redacted])");
    }
}
