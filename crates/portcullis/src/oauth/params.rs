//! Request parameters of the OAuth endpoints: how many a request may carry, the
//! duplicate check (RFC 6749 §3.1: parameters MUST NOT repeat), and origins.

/// More parameters than any OAuth request needs: refused before any other work.
pub const MAX_PARAMS: usize = 64;

/// The first parameter name given twice, in linear time.
pub fn first_duplicate(pairs: &[(String, String)]) -> Option<&str> {
    let mut seen = std::collections::HashSet::with_capacity(pairs.len());
    pairs.iter().map(|(k, _)| k.as_str()).find(|k| !seen.insert(*k))
}

/// `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> String {
    url::Url::parse(url).map(|u| u.origin().ascii_serialization()).unwrap_or_default()
}
