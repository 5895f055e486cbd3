//! The shape of an API key, shared so that a verifier can refuse a made-up key
//! without asking the server: `pcl_`, 32 base62 characters, and a 6-character
//! base62 CRC-32 of what precedes it.

/// The fixed, greppable prefix of every key.
pub const PREFIX: &str = "pcl_";
/// Random characters after the prefix.
pub const RANDOM_LEN: usize = 32;
const CHECK_LEN: usize = 6;
/// Total length of a key.
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECK_LEN;
/// The key alphabet.
pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The checksum of a key's first 36 characters: secret scanners and verifiers tell a
/// real key from noise with it (it is public, so it proves nothing more).
pub fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62.get((n % 62) as usize).copied().unwrap_or(b'0');
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `key` is shaped like a Portcullis key with a valid checksum; no I/O.
pub fn well_formed(key: &str) -> bool {
    if key.len() != KEY_LEN || !key.starts_with(PREFIX) {
        return false;
    }
    let (body, check) = key.split_at(KEY_LEN - CHECK_LEN);
    let random_ok = body.get(PREFIX.len()..).is_some_and(|r| r.bytes().all(|b| b.is_ascii_alphanumeric()));
    let expected = checksum(body);
    // Constant time: cheap, and no timing hints about the checksum to anyone.
    let diff = expected.bytes().zip(check.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    random_ok && check.bytes().all(|b| b.is_ascii_alphanumeric()) && diff == 0 && check.len() == expected.len()
}
