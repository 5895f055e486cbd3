"""Access tokens checked offline against the issuer's JWKS, as
``crates/portcullis-verify`` does: ``typ: at+jwt``, RS256/ES256/EdDSA only, the
signature, ``iss``, ``aud`` (the issuer unless told), ``exp``/``nbf`` with 30 s of
leeway. Keys are cached 60 s; a token naming an unknown ``kid`` refetches the set
at most once per 5 s (one fetch at a time); when the server is unreachable the
cached keys keep working. API keys are checked through ``POST /v1/api-keys/verify``
with their verdicts cached ~10 s by SHA-256 of the key."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, cast

import httpx
import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ._core import USER_AGENT
from .errors import PortcullisError, problem
from .models import AccessTokenClaims

__all__ = ["TokenVerifier", "ApiKeyVerifier", "AuthContext", "verify_token", "auth_from_claims"]

#: The algorithms Portcullis signs with; anything else (``none``, HMAC) is refused
#: before a key is even looked up.
ALLOWED = ("RS256", "ES256", "EdDSA")
JWKS_MAX_BYTES = 1 << 20
#: Longer than any key Portcullis issues; anything longer is not asked about.
MAX_KEY_LEN = 512
MAX_VERDICTS = 10_000


def invalid(detail: str) -> PortcullisError:
    return PortcullisError(401, "invalid_token", problem(401, "invalid_token", detail))


def expired() -> PortcullisError:
    return PortcullisError(401, "token_expired", problem(401, "token_expired", "the credential has expired"))


def unavailable(why: str) -> PortcullisError:
    # The cause (an address, a status) is for the operator, not for the caller.
    err = PortcullisError(503, "overloaded", problem(503, "overloaded", "credentials cannot be checked now; retry"))
    err.reason = why  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class AuthContext:
    """Who is calling and what they may do, from a verified credential."""

    #: The user; ``None`` for a client-credentials token (it is about the client).
    user_id: str | None
    #: The session behind a user's token.
    session_id: str | None
    #: The OAuth client the token was issued to; ``None`` for first-party tokens.
    client_id: str | None
    #: Granted permissions: the token's ``scope``, or the key's effective scopes.
    scopes: list[str]
    #: Roles at issue time (tokens only).
    roles: list[str] = field(default_factory=list)
    #: Every claim of the token; ``None`` for API keys.
    claims: AccessTokenClaims | None = None
    #: The API key used, when the credential was one.
    api_key_id: str | None = None

    def has_scopes(self, *scopes: str) -> bool:
        return all(s in self.scopes for s in scopes)


def auth_from_claims(claims: AccessTokenClaims) -> AuthContext:
    sub = claims.get("sub")
    client_id = claims.get("client_id")
    # A client-credentials token has no session and its subject is the client.
    is_user = claims.get("sid") is not None or client_id != sub
    scope = claims.get("scope")
    roles = claims.get("roles")
    return AuthContext(
        user_id=sub if is_user else None,
        session_id=claims.get("sid"),
        client_id=client_id,
        scopes=scope.split() if isinstance(scope, str) else [],
        roles=[r for r in roles if isinstance(r, str)] if isinstance(roles, list) else [],
        claims=claims,
    )


@dataclass
class _Key:
    alg: str
    key: Any


def _algorithm(jwk: Mapping[str, Any]) -> str | None:
    """The key's algorithm: its ``alg``, or what its type implies; ``None`` for
    anything Portcullis does not sign with (symmetric keys above all)."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        implied = "RS256"
    elif kty == "EC" and crv == "P-256":
        implied = "ES256"
    elif kty == "OKP" and crv == "Ed25519":
        implied = "EdDSA"
    else:
        return None
    stated = jwk.get("alg", implied)
    return implied if stated == implied else None


def _load(jwk: Mapping[str, Any], alg: str) -> Any:
    raw = json.dumps(dict(jwk))
    if alg == "RS256":
        return RSAAlgorithm.from_jwk(raw)
    if alg == "ES256":
        return ECAlgorithm.from_jwk(raw)
    return OKPAlgorithm.from_jwk(raw)


class TokenVerifier:
    """Checks access tokens of one issuer; thread-safe, share one per process."""

    def __init__(
        self,
        issuer: str,
        audience: str | None = None,
        *,
        base_url: str | None = None,
        leeway: float = 30.0,
        refetch_interval: float = 5.0,
        jwks_max_age: float = 60.0,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience or self.issuer
        self.server = (base_url or self.issuer).rstrip("/")
        for url in (self.issuer, self.server):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url} is not an http(s) URL")
        self.jwks_url = f"{self.server}/.well-known/jwks.json"
        self.leeway = leeway
        self.refetch_interval = refetch_interval
        self.jwks_max_age = jwks_max_age
        self._http = httpx.Client(
            timeout=timeout, transport=transport, headers={"user-agent": USER_AGENT}, follow_redirects=False
        )
        self._keys: dict[str, _Key] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._last_error: str | None = None
        self._fetching = threading.Lock()
        #: How many times the JWKS was fetched (for tests and metrics).
        self.fetches = 0

    def verify(self, token: str) -> AccessTokenClaims:
        """The token's claims, or :class:`PortcullisError` (401 ``invalid_token`` /
        ``token_expired``; 503 ``overloaded`` when no keys could ever be fetched)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid("malformed token") from None
        # RFC 9068 §4: explicit typing keeps ID tokens and other JWTs out.
        typ = str(header.get("typ") or "").lower()
        if typ not in ("at+jwt", "application/at+jwt"):
            raise invalid("not an access token")
        alg = header.get("alg")
        if alg not in ALLOWED:
            raise invalid("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise invalid("token has no key id")
        key = self._key(kid)
        if key.alg != alg:
            raise invalid("algorithm not allowed for this key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.alg],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", "nbf", "iat", "iss", "aud", "sub"], "verify_nbf": True},
            )
        except jwt.ExpiredSignatureError:
            raise expired() from None
        except jwt.ImmatureSignatureError:
            raise invalid("token not yet valid") from None
        except jwt.InvalidIssuerError:
            raise invalid("wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise invalid("wrong audience") from None
        except jwt.InvalidSignatureError:
            raise invalid("bad signature") from None
        except jwt.PyJWTError:
            raise invalid("invalid token") from None
        return cast(AccessTokenClaims, claims)

    def _key(self, kid: str) -> _Key:
        found = self._keys.get(kid)
        if found and self._fresh():
            return found
        self._refresh()
        # After a failed (or skipped) fetch the set is the old one: when the server
        # is unreachable, its last word still holds. After a good fetch, a key it
        # no longer publishes is gone.
        found = self._keys.get(kid)
        if found:
            return found
        if self._fetched_at is None:
            raise unavailable(self._last_error or "no signing keys fetched yet")
        raise invalid("unknown signing key")

    def _fresh(self) -> bool:
        return self._fetched_at is not None and time.monotonic() - self._fetched_at < self.jwks_max_age

    def _refresh(self) -> None:
        """One fetch at a time, at most one per ``refetch_interval``; a failure keeps
        the keys there are."""
        with self._fetching:
            if self._last_attempt is not None and time.monotonic() - self._last_attempt < self.refetch_interval:
                return
            try:
                keys = self._fetch()
            except Exception as e:  # noqa: BLE001 - any failure keeps the old keys
                self._last_attempt = time.monotonic()
                self._last_error = str(e)
                return
            self._last_attempt = time.monotonic()
            self._keys = keys
            self._fetched_at = time.monotonic()
            self._last_error = None

    def _fetch(self) -> dict[str, _Key]:
        self.fetches += 1
        res = self._http.get(self.jwks_url, headers={"accept": "application/json"})
        if not res.is_success:
            raise RuntimeError(f"{self.jwks_url}: HTTP {res.status_code}")
        if len(res.content) > JWKS_MAX_BYTES:
            raise RuntimeError(f"{self.jwks_url}: the key set is larger than {JWKS_MAX_BYTES} bytes")
        body = res.json()
        out: dict[str, _Key] = {}
        for jwk in body.get("keys", []) if isinstance(body, dict) else []:
            if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
                continue
            if jwk.get("use", "sig") != "sig":
                continue
            alg = _algorithm(jwk)
            if alg is None:
                continue
            try:
                out[jwk["kid"]] = _Key(alg, _load(jwk, alg))
            except Exception:  # noqa: BLE001 - a key we cannot read is not ours
                continue
        return out

    def close(self) -> None:
        self._http.close()


_verifiers: dict[tuple[str, str | None, str | None, float], TokenVerifier] = {}
_verifiers_lock = threading.Lock()


def verify_token(
    token: str,
    issuer: str,
    audience: str | None = None,
    *,
    base_url: str | None = None,
    leeway: float = 30.0,
) -> AccessTokenClaims:
    """Checks an access token (without ``Bearer ``) and answers its claims; raises
    :class:`PortcullisError`. The JWKS of each issuer is cached process-wide."""
    key = (issuer.rstrip("/"), audience, base_url, leeway)
    with _verifiers_lock:
        verifier = _verifiers.get(key)
        if verifier is None:
            verifier = _verifiers[key] = TokenVerifier(issuer, audience, base_url=base_url, leeway=leeway)
    return verifier.verify(token)


class ApiKeyVerifier:
    """API keys checked with ``POST /v1/api-keys/verify`` (authenticated with a
    verifier key holding ``api_keys:verify``); verdicts are kept ``ttl`` seconds by
    SHA-256 of the key (the key itself is never stored). A failure to ask is not a
    verdict about the caller's key: never cached, answered 503."""

    def __init__(
        self,
        server: str,
        verifier_key: str,
        *,
        ttl: float = 10.0,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = f"{server.rstrip('/')}/v1/api-keys/verify"
        self.verifier_key = verifier_key
        self.ttl = ttl
        self._http = httpx.Client(
            timeout=timeout, transport=transport, headers={"user-agent": USER_AGENT}, follow_redirects=False
        )
        self._cache: dict[bytes, tuple[float, AuthContext | PortcullisError]] = {}
        self._lock = threading.Lock()
        #: How many times the server was asked (for tests and metrics).
        self.asked = 0

    def verify(self, key: str) -> AuthContext:
        if not key or len(key) > MAX_KEY_LEN:
            raise invalid("the API key is not valid")
        digest = hashlib.sha256(key.encode()).digest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit and hit[0] > now:
            verdict = hit[1]
        else:
            verdict = self._ask(key)
            with self._lock:
                if len(self._cache) >= MAX_VERDICTS:
                    self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                    if len(self._cache) >= MAX_VERDICTS:
                        self._cache.clear()
                self._cache[digest] = (now + self.ttl, verdict)
        if isinstance(verdict, PortcullisError):
            raise verdict
        return verdict

    def _ask(self, key: str) -> AuthContext | PortcullisError:
        self.asked += 1
        try:
            res = self._http.post(
                self.url, json={"key": key}, headers={"x-api-key": self.verifier_key, "accept": "application/json"}
            )
        except httpx.HTTPError as e:
            raise unavailable(f"{self.url}: {e}") from e
        if not res.is_success:
            # 401/403: this service's own verifier key is wrong; 429: it asks too
            # often. Neither is the caller's fault.
            raise unavailable(f"{self.url}: HTTP {res.status_code}")
        try:
            body = res.json()
        except ValueError:
            raise unavailable(f"{self.url}: unexpected answer") from None
        if not isinstance(body, dict) or body.get("active") is not True:
            return invalid("the API key is not valid")
        scopes = body.get("scopes")
        return AuthContext(
            user_id=body.get("owner") if isinstance(body.get("owner"), str) else None,
            session_id=None,
            client_id=None,
            scopes=[s for s in scopes if isinstance(s, str)] if isinstance(scopes, list) else [],
            roles=[],
            claims=None,
            api_key_id=body.get("key_id") if isinstance(body.get("key_id"), str) else None,
        )

    def close(self) -> None:
        self._http.close()
