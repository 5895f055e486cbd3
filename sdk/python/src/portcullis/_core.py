"""What the sync and the async client share: configuration, credential state, and
the pure parts of the retry and refresh rules."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any, Literal, Mapping
from urllib.parse import quote_plus

import httpx

from .errors import PortcullisError
from .models import TokenPair

#: Methods whose network errors are retried (they are safe to send twice).
IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE"})
#: Codes of a 401 that a new access token can cure.
REFRESHABLE = frozenset({"token_expired", "invalid_token"})
#: Answers retried with backoff.
RETRIED_STATUSES = frozenset({429, 503})

USER_AGENT = "portcullis-python/0.1.0"


@dataclass(frozen=True)
class Credential:
    kind: Literal["user", "client", "api_key"]
    header: str
    value: str
    token: str


def bearer(kind: Literal["user", "client"], token: str) -> Credential:
    return Credential(kind, "authorization", f"Bearer {token}", token)


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (RFC 9110 §10.2.3): delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        at = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, at.timestamp() - time.time())


def basic_auth(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding."""
    import base64

    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def has_header(headers: Mapping[str, str] | None, name: str) -> bool:
    return bool(headers) and any(k.lower() == name for k in headers)  # type: ignore[union-attr]


def parse_json(res: httpx.Response) -> Any:
    if res.status_code == 204 or not res.content:
        return None
    try:
        return res.json()
    except ValueError:
        raise PortcullisError(
            res.status_code, "unexpected_response", message="the answer is not JSON", response=res
        ) from None


def error_code(res: httpx.Response) -> str:
    return PortcullisError.from_response(res).code


class Base:
    """Configuration and credential state; I/O lives in the subclasses."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        scope: str | None = None,
        max_retries: int = 3,
        retry_base: float = 0.2,
        retry_max: float = 10.0,
    ) -> None:
        if (client_id is None) != (client_secret is None):
            raise ValueError("client_id and client_secret go together")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._access_token = access_token
        self._refresh_token = refresh_token
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self.max_retries = max_retries
        self.retry_base = retry_base
        self.retry_max = retry_max
        # Client-credentials token and the monotonic time to renew it at.
        self._cc: tuple[str, float] | None = None
        # The refresh token whose last presentation failed, and why: never presented
        # again automatically (a lost answer may have spent it; presenting a spent
        # token is theft detection, which ends every session).
        self._refresh_failed: tuple[str, PortcullisError] | None = None

    @property
    def access_token(self) -> str | None:
        """The access token now in use (after refreshes), if any."""
        return self._access_token

    @property
    def refresh_token(self) -> str | None:
        """The refresh token now held, if any (dropped when the server refuses it)."""
        return self._refresh_token

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + ("" if path.startswith("/") else "/") + path

    def backoff(self, attempt: int) -> float:
        # Full jitter: uniform in [0, min(cap, base·2^n)].
        return random.uniform(0, min(self.retry_max, self.retry_base * 2**attempt))

    def wait_for(self, res: httpx.Response, attempt: int) -> float:
        after = retry_after(res.headers.get("retry-after"))
        return min(self.retry_max, after if after is not None else self.backoff(attempt))

    def cached_client_token(self) -> str | None:
        if self._cc and time.monotonic() < self._cc[1]:
            return self._cc[0]
        return None

    def store_client_token(self, token: str, expires_in: int) -> None:
        ttl = float(expires_in or 60)
        # Renew 10 % of the lifetime (at most 30 s) early, so no call carries a dying token.
        self._cc = (token, time.monotonic() + ttl - min(30.0, ttl / 10))

    def forget_client_token(self, token: str) -> None:
        if self._cc and self._cc[0] == token:
            self._cc = None

    def token_request(self) -> tuple[dict[str, str], dict[str, str]]:
        assert self._client_id is not None and self._client_secret is not None
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        headers = {"authorization": basic_auth(self._client_id, self._client_secret), "accept": "application/json"}
        return form, headers

    def refusal_blocking(self) -> PortcullisError | None:
        """The error of the last failed refresh when the refresh token held is the
        one that failed: it is not presented again automatically."""
        if self._refresh_failed and self._refresh_failed[0] == self._refresh_token:
            return self._refresh_failed[1]
        return None

    def refresh_failed(self, presented: str, err: PortcullisError) -> None:
        if err.status in (400, 401) and self._refresh_token == presented:
            # Reused, revoked or expired: this pair will never work again.
            self._refresh_token = None
            self._access_token = None
        self._refresh_failed = (presented, err)

    def refreshed(self, res: httpx.Response) -> TokenPair:
        body = parse_json(res)
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise PortcullisError(res.status_code, "unexpected_response", message="refresh answer lacks tokens")
        pair = TokenPair.from_dict(body)
        self._access_token = pair.access_token
        self._refresh_token = pair.refresh_token
        self._refresh_failed = None
        return pair

    def set_tokens(self, pair: TokenPair) -> None:
        self._access_token = pair.access_token
        self._refresh_token = pair.refresh_token
        self._refresh_failed = None

    @staticmethod
    def network_error(exc: Exception, what: str) -> PortcullisError:
        err = PortcullisError(0, "network_error", message=f"{what}: {exc}")
        err.__cause__ = exc
        return err
