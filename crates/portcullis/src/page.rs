//! Cursor pagination, the same for every list: `{data, next_cursor}` with
//! `?limit=&cursor=`, the cursor an opaque base64url of the last id of the page.

use portcullis_proto::FieldError;

use crate::{crypto, validate::field};

/// Opaque pagination cursor: the last id of the page, base64url.
pub fn cursor_encode(id: &str) -> String {
    crypto::b64url(id.as_bytes())
}

/// Reads a cursor; a malformed one is a validation error, not a 500.
pub fn cursor_decode(cursor: Option<&str>) -> Result<Option<String>, FieldError> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => crypto::b64url_decode(c)
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| field("cursor", "invalid", "is not a cursor from this API")),
    }
}

/// Cuts a fetch of `limit + 1` rows to one page and derives the next cursor from
/// the last row kept (there is a next page exactly when the extra row came back).
pub fn paginate<T>(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> &str) -> (Vec<T>, Option<String>) {
    let keep = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > keep;
    rows.truncate(keep);
    let next = if more { rows.last().map(|r| cursor_encode(id(r))) } else { None };
    (rows, next)
}

/// Checks `limit` (default 50, 1 to 200).
pub fn page_limit(limit: Option<i64>) -> Result<i64, FieldError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(_) => Err(field("limit", "out_of_range", "must be between 1 and 200")),
    }
}
