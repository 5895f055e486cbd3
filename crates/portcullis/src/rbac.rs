//! Role-based access control: what a permission string may look like, the
//! `require_scope` / `require_role` guards every protected operation goes through,
//! and the rule that a credential never exceeds the permissions behind it.

use portcullis_proto::FieldError;

use crate::ctx::Principal;

/// Roles that ship with Portcullis: editable, never deletable (registration and the
/// admin API rely on them).
pub const BUILTIN_ROLES: &[&str] = &["admin", "member"];

/// The role every new user gets.
pub const DEFAULT_ROLE: &str = "member";

/// Longest permission or role name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Whether `s` is a well-formed permission or role name: `[a-z0-9_.:-]+`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b))
}

/// Validates a list of permissions; returns per-item field errors under `field`.
pub fn check_permissions(field: &str, perms: &[String]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if perms.len() > 256 {
        errors.push(FieldError { field: field.into(), code: "too_many".into(), message: "at most 256 entries".into() });
    }
    for (i, p) in perms.iter().enumerate() {
        if !valid_name(p) {
            errors.push(FieldError {
                field: format!("{field}[{i}]"),
                code: "invalid_format".into(),
                message: "must match [a-z0-9_.:-]+ (at most 128 characters)".into(),
            });
        }
    }
    errors
}

/// Sorted, deduplicated copy.
pub fn normalized(perms: &[String]) -> Vec<String> {
    let mut v = perms.to_vec();
    v.sort();
    v.dedup();
    v
}

/// A refused authorization: the scopes that would have allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Scopes the caller lacks.
    pub required: Vec<String>,
}

/// The one who answers for a credential (an API key, an OAuth client) as it stands
/// now: a credential never does more than its owner may do today, and dies with the
/// owner's ban or deletion. API keys and client-credentials clients share this.
#[derive(Debug, Clone)]
pub enum Owner {
    /// Registered by an operator at the command line: bounded by nothing but itself.
    Operator,
    /// A user who may act, with the permissions they hold now (sorted). One who
    /// holds `admin:roles:write` is bounded by nothing: they could put any
    /// permission into a role of their own (the rule of `may_grant`).
    Active(std::sync::Arc<Vec<String>>),
    /// The user is banned: the credential is dead while the ban lasts.
    Banned,
    /// The user was deleted: the credential is dead.
    Gone,
}

/// The permission to define permissions: its holders may grant anything.
pub const ROLES_WRITE: &str = "admin:roles:write";

impl Owner {
    /// The scopes among `scopes` the owner still holds; `None` when the owner can no
    /// longer act at all.
    pub fn bound<'a>(&self, scopes: impl IntoIterator<Item = &'a str>) -> Option<Vec<String>> {
        match self {
            Owner::Operator => Some(scopes.into_iter().map(str::to_owned).collect()),
            Owner::Active(held) if held.iter().any(|h| h == ROLES_WRITE) => {
                Some(scopes.into_iter().map(str::to_owned).collect())
            }
            Owner::Active(held) => Some(within(scopes, held)),
            Owner::Banned | Owner::Gone => None,
        }
    }

    /// Why the owner cannot act, for audit records.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Owner::Banned => Some("owner_banned"),
            Owner::Gone => Some("owner_deleted"),
            Owner::Operator | Owner::Active(_) => None,
        }
    }
}

/// Loads a credential owner's standing now: `operator`, or the user's ban state and
/// current permissions.
pub async fn owner_now(db: &crate::store::Db, owner: &str) -> Result<Owner, crate::store::StoreError> {
    if owner == crate::ctx::OPERATOR {
        return Ok(Owner::Operator);
    }
    Ok(match db.user_by_id(owner).await? {
        None => Owner::Gone,
        Some(u) if u.banned_at.is_some() => Owner::Banned,
        Some(u) => Owner::Active(std::sync::Arc::new(db.role_permissions(&u.roles).await?)),
    })
}

/// The scopes among `scopes` that appear in `held` (sorted, as `role_permissions`
/// returns them): what a credential may do is what it was given AND what stands
/// behind it now.
pub fn within<'a>(scopes: impl IntoIterator<Item = &'a str>, held: &[String]) -> Vec<String> {
    scopes.into_iter().filter(|s| held.binary_search_by(|h| h.as_str().cmp(s)).is_ok()).map(str::to_owned).collect()
}

/// Passes when the principal holds every scope in `required`.
pub fn require_scope(who: &Principal, required: &[&str]) -> Result<(), Denied> {
    let missing: Vec<String> =
        required.iter().filter(|s| !who.scopes().iter().any(|h| h == *s)).map(|s| (*s).to_owned()).collect();
    if missing.is_empty() { Ok(()) } else { Err(Denied { required: missing }) }
}

/// Passes when the principal is a user holding `role` (API keys carry no roles).
pub fn require_role(who: &Principal, role: &str) -> Result<(), Denied> {
    if who.roles().iter().any(|r| r == role) { Ok(()) } else { Err(Denied { required: vec![format!("role:{role}")] }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(scopes: &[&str], roles: &[&str]) -> Principal {
        let user = crate::store::UserRow {
            id: "usr_1".into(),
            roles: roles.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        };
        Principal::Session {
            user: std::sync::Arc::new(user),
            session_id: "ses_1".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn names_are_checked() {
        for ok in ["read:users", "write:orders", "a.b-c_d:e", "x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Read:users", "a b", "a*", "ü", &"a".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn guards_report_what_is_missing() {
        let w = who(&["read:users"], &["member"]);
        assert!(require_scope(&w, &["read:users"]).is_ok());
        assert_eq!(
            require_scope(&w, &["read:users", "write:users"]),
            Err(Denied { required: vec!["write:users".into()] })
        );
        assert!(require_role(&w, "member").is_ok());
        assert!(require_role(&w, "admin").is_err());
        // Prefixes are not wildcards.
        assert!(require_scope(&who(&["admin"], &[]), &["admin:users:read"]).is_err());
    }
}
