"""Typed models of the main responses (see ``docs/openapi.json``). Unknown fields
are ignored, so a newer server does not break an older SDK."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, TypedDict

__all__ = [
    "AccessTokenClaims",
    "ApiKey",
    "ApiKeyCreated",
    "ApiKeyVerdict",
    "MfaChallenge",
    "Session",
    "TokenPair",
    "ClientToken",
    "User",
]


def _opt_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _strs(v: Any) -> list[str]:
    return [s for s in v if isinstance(s, str)] if isinstance(v, list) else []


@dataclass(frozen=True)
class User:
    """A user as the user themself sees it (``GET /v1/me``)."""

    id: str
    email: str
    email_verified: bool
    roles: list[str]
    created_at: str
    updated_at: str
    name: str | None = None
    public_metadata: dict[str, Any] = field(default_factory=dict)
    unsafe_metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> User:
        return cls(
            id=str(d["id"]),
            email=str(d["email"]),
            email_verified=bool(d.get("email_verified", False)),
            roles=_strs(d.get("roles")),
            created_at=str(d.get("created_at", "")),
            updated_at=str(d.get("updated_at", "")),
            name=_opt_str(d.get("name")),
            public_metadata=dict(d.get("public_metadata") or {}),
            unsafe_metadata=dict(d.get("unsafe_metadata") or {}),
        )


@dataclass(frozen=True)
class TokenPair:
    """A fresh access token and single-use refresh token (login, refresh). Store
    both: the previous refresh token no longer works."""

    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"
    user: User | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenPair:
        user = d.get("user")
        return cls(
            access_token=str(d["access_token"]),
            refresh_token=str(d["refresh_token"]),
            expires_in=int(d.get("expires_in") or 0),
            token_type=str(d.get("token_type", "Bearer")),
            user=User.from_dict(user) if isinstance(user, Mapping) else None,
        )


@dataclass(frozen=True)
class MfaChallenge:
    """A password sign-in that still needs a second factor
    (finish it at ``POST /v1/auth/login/mfa``)."""

    mfa_token: str
    factors: list[str]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MfaChallenge:
        return cls(mfa_token=str(d["mfa_token"]), factors=_strs(d.get("factors")))


@dataclass(frozen=True)
class ClientToken:
    """An ``/oauth/token`` answer (RFC 6749 §5.1)."""

    access_token: str
    expires_in: int
    scope: str = ""
    token_type: str = "Bearer"
    refresh_token: str | None = None
    id_token: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClientToken:
        return cls(
            access_token=str(d["access_token"]),
            expires_in=int(d.get("expires_in") or 0),
            scope=str(d.get("scope", "")),
            token_type=str(d.get("token_type", "Bearer")),
            refresh_token=_opt_str(d.get("refresh_token")),
            id_token=_opt_str(d.get("id_token")),
        )


@dataclass(frozen=True)
class Session:
    """A session as listed under ``/v1/me/sessions``."""

    id: str
    created_at: str
    last_active_at: str
    expires_at: str
    current: bool
    ip: str | None = None
    user_agent: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Session:
        return cls(
            id=str(d["id"]),
            created_at=str(d.get("created_at", "")),
            last_active_at=str(d.get("last_active_at", "")),
            expires_at=str(d.get("expires_at", "")),
            current=bool(d.get("current", False)),
            ip=_opt_str(d.get("ip")),
            user_agent=_opt_str(d.get("user_agent")),
        )


@dataclass(frozen=True)
class ApiKey:
    """An API key as listed: never its secret."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: str
    expires_at: str | None = None
    last_used_at: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ApiKey:
        return cls(
            id=str(d["id"]),
            name=str(d.get("name", "")),
            prefix=str(d.get("prefix", "")),
            scopes=_strs(d.get("scopes")),
            created_at=str(d.get("created_at", "")),
            expires_at=_opt_str(d.get("expires_at")),
            last_used_at=_opt_str(d.get("last_used_at")),
        )


@dataclass(frozen=True)
class ApiKeyCreated(ApiKey):
    """A new (or rotated) key: the only time its secret ``key`` is shown."""

    key: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ApiKeyCreated:
        base = ApiKey.from_dict(d)
        return cls(**{**base.__dict__, "key": str(d.get("key", ""))})


@dataclass(frozen=True)
class ApiKeyVerdict:
    """``POST /v1/api-keys/verify``: inactive keys carry only ``active=False``."""

    active: bool
    key_id: str | None = None
    owner: str | None = None
    scopes: list[str] = field(default_factory=list)
    expires_at: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ApiKeyVerdict:
        return cls(
            active=d.get("active") is True,
            key_id=_opt_str(d.get("key_id")),
            owner=_opt_str(d.get("owner")),
            scopes=_strs(d.get("scopes")),
            expires_at=_opt_str(d.get("expires_at")),
        )


class AccessTokenClaims(TypedDict, total=False):
    """The claims of a Portcullis access token (RFC 9068)."""

    iss: str
    sub: str
    aud: str
    exp: int
    iat: int
    nbf: int
    jti: str
    sid: str
    client_id: str
    roles: list[str]
    scope: str
    amr: list[str]
    metadata: Any
