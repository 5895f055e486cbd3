//! Input rules shared by every layer: emails, display names, metadata objects, and
//! JSON bodies whose failures name the offending field. Each returns a
//! [`FieldError`] a form can show next to its input.

use portcullis_proto::FieldError;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One field-level error.
pub fn field(field: &str, code: &str, message: &str) -> FieldError {
    FieldError { field: field.into(), code: code.into(), message: message.into() }
}

/// Trims and lower-cases an email and checks its shape. Lower-casing the local part
/// is a deliberate choice: `Ann@x.io` and `ann@x.io` are one person in practice, and
/// treating them as two accounts invites takeover confusion.
pub fn normalize_email(raw: &str) -> Result<String, FieldError> {
    let email = raw.trim().to_lowercase();
    let bad = || field("email", "invalid_format", "must be an email address like name@example.com");
    if email.is_empty() {
        return Err(field("email", "required", "is required"));
    }
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(bad)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('@')
        && domain.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
        return Err(bad());
    }
    Ok(email)
}

/// Largest accepted metadata object, serialized (Clerk's limit).
pub const METADATA_MAX_BYTES: usize = 8 * 1024;

/// Checks a metadata value (a JSON object of at most 8 KiB) and returns its text.
pub fn metadata_text(name: &str, value: &Value, errors: &mut Vec<FieldError>) -> Option<String> {
    if !value.is_object() {
        errors.push(field(name, "invalid_type", "must be a JSON object"));
        return None;
    }
    let text = value.to_string();
    if text.len() > METADATA_MAX_BYTES {
        errors.push(field(name, "too_large", "must be at most 8 KiB of JSON"));
        return None;
    }
    Some(text)
}

/// Trims a display name; empty becomes none; at most 200 characters.
pub fn clean_name(name: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        errors.push(field("name", "too_long", "must be at most 200 characters"));
    } else if name.as_ref().is_some_and(|n| n.chars().any(char::is_control)) {
        errors.push(field("name", "invalid_characters", "must not contain control characters"));
    }
    name
}

/// `a.b[0].c`, as `serde_path_to_error` writes paths.
fn json_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", json_path(parent)),
        Path::Map { parent, key } => match json_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => json_path(parent),
    }
}

/// Deserializes `bytes`, reporting the JSON path of the first bad field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FieldError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // A member the type does not know is refused, whether or not the type says
    // `deny_unknown_fields`: response types (which must read future replies) can
    // then double as requests, as client metadata does.
    let mut unknown = None;
    let value: Result<T, _> = {
        let mut note = |path: serde_ignored::Path<'_>| {
            unknown.get_or_insert_with(|| json_path(&path));
        };
        let tracked = serde_ignored::Deserializer::new(&mut de, &mut note);
        serde_path_to_error::deserialize(tracked)
    };
    if value.is_ok() && de.end().is_err() {
        return Err(field("", "invalid_json", "unexpected data after the JSON value"));
    }
    if let (Ok(_), Some(path)) = (&value, unknown) {
        return Err(field(&path, "unknown_field", "is not a field of this request"));
    }
    value.map_err(|err| {
        let path = err.path().to_string();
        let parent = if path == "." { String::new() } else { path };
        let inner = err.into_inner();
        let msg = inner.to_string();
        // serde's message up to " at line …", which means nothing to a form.
        let short = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        let named = |prefix: &str| {
            short
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('`').nth(1))
                .map(|name| if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") })
        };
        match inner.classify() {
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => {
                field("", "invalid_json", &format!("the body is not valid JSON: {short}"))
            }
            serde_json::error::Category::Data => {
                if let Some(f) = named("missing field") {
                    field(&f, "required", "is required")
                } else if short.starts_with("unknown field") {
                    // Here the path already ends with the unknown field's name.
                    field(&parent, "unknown_field", "is not a field of this request")
                } else if short.starts_with("invalid type") {
                    field(&parent, "invalid_type", &short)
                } else {
                    field(&parent, "invalid", &short)
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{normalize_email, parse_json};

    #[derive(Debug, serde::Deserialize)]
    struct Inner {
        #[allow(dead_code)]
        uri: String,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Lenient {
        #[allow(dead_code)]
        name: String,
        #[serde(default)]
        #[allow(dead_code)]
        items: Vec<Inner>,
    }

    #[test]
    fn unknown_members_are_refused_even_without_deny_unknown_fields() {
        let e = parse_json::<Lenient>(br#"{"name": "a", "nmae": "b"}"#).unwrap_err();
        assert_eq!((e.field.as_str(), e.code.as_str()), ("nmae", "unknown_field"));
        let e =
            parse_json::<Lenient>(br#"{"name": "a", "items": [{"uri": "x"}, {"uri": "y", "url": 1}]}"#).unwrap_err();
        assert_eq!((e.field.as_str(), e.code.as_str()), ("items[1].url", "unknown_field"));
        let meta = parse_json::<crate::clients::ClientMetadata>(br#"{"client_name": "a", "redirect_uri": []}"#);
        assert_eq!(meta.unwrap_err().field, "redirect_uri");
        assert!(parse_json::<Lenient>(br#"{"name": "a", "items": []}"#).is_ok());
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(normalize_email("  Ann.Lee@Example.COM ").unwrap(), "ann.lee@example.com");
        for bad in ["", "ann", "ann@", "@x.io", "ann@x", "ann@.x.io", "ann@x..io", "a b@x.io", "ann@-x.io"] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_email(&format!("{}@x.io", "a".repeat(65))).is_err());
    }
}
