"""``Portcullis`` (sync, thread-safe) and ``AsyncPortcullis`` (asyncio): HTTP clients
that inject credentials, refresh once on 401 (single flight), cache
client-credentials tokens, retry 429/503 with backoff, and raise
:class:`~portcullis.PortcullisError` for every non-2xx answer."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any, Awaitable, Callable, Mapping, Union

import httpx

from ._core import (
    IDEMPOTENT,
    REFRESHABLE,
    RETRIED_STATUSES,
    USER_AGENT,
    Base,
    Credential,
    bearer,
    error_code,
    has_header,
    parse_json,
)
from .errors import PortcullisError
from .models import ApiKey, ApiKeyCreated, ApiKeyVerdict, ClientToken, MfaChallenge, Session, TokenPair, User

__all__ = ["Portcullis", "AsyncPortcullis", "OnTokens", "AsyncOnTokens"]

#: Called with every new token pair; store it, the old refresh token no longer works.
OnTokens = Callable[[TokenPair], None]
AsyncOnTokens = Callable[[TokenPair], Union[None, Awaitable[None]]]

Params = Mapping[str, Any]


class Portcullis(Base):
    """A synchronous client, safe to share between threads.

    Credentials, in this order of use: ``access_token`` (refreshed with
    ``refresh_token`` on 401), ``client_id`` + ``client_secret`` (client-credentials
    tokens from ``POST /oauth/token``), ``api_key`` (sent as ``X-API-Key``).
    """

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
        on_tokens: OnTokens | None = None,
        max_retries: int = 3,
        retry_base: float = 0.2,
        retry_max: float = 10.0,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            access_token=access_token,
            refresh_token=refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
            max_retries=max_retries,
            retry_base=retry_base,
            retry_max=retry_max,
        )
        self.on_tokens = on_tokens
        self._http = httpx.Client(
            timeout=timeout, transport=transport, headers={"user-agent": USER_AGENT}, follow_redirects=False
        )
        self._refresh_lock = threading.Lock()
        self._cc_lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Portcullis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- typed calls ------------------------------------------------------------

    def me(self) -> User:
        """``GET /v1/me``: the signed-in user."""
        return User.from_dict(self.request("GET", "/v1/me"))

    def login(self, email: str, password: str) -> TokenPair | MfaChallenge:
        """``POST /v1/auth/login``. On success the client uses the new tokens (and
        ``on_tokens`` gets them); an account with a second factor answers an
        :class:`MfaChallenge` instead."""
        body = self.request("POST", "/v1/auth/login", json={"email": email, "password": password}, auth=False)
        if body.get("mfa_required"):
            return MfaChallenge.from_dict(body)
        pair = TokenPair.from_dict(body)
        self.set_tokens(pair)
        if self.on_tokens:
            self.on_tokens(pair)
        return pair

    def refresh(self) -> TokenPair:
        """``POST /v1/auth/refresh`` with the refresh token held, now. Never retried."""
        with self._refresh_lock:
            return self._refresh_locked()

    def logout(self) -> None:
        """``POST /v1/auth/logout``: ends this session; the client forgets its tokens."""
        self.request("POST", "/v1/auth/logout")
        self._access_token = None
        self._refresh_token = None

    def sessions(self) -> list[Session]:
        """``GET /v1/me/sessions``."""
        return [Session.from_dict(s) for s in self.request("GET", "/v1/me/sessions").get("data", [])]

    def revoke_session(self, session_id: str) -> None:
        """``DELETE /v1/me/sessions/{id}``."""
        self.request("DELETE", f"/v1/me/sessions/{session_id}")

    def api_keys(self) -> list[ApiKey]:
        """``GET /v1/api-keys``: the caller's keys (never their secrets)."""
        return [ApiKey.from_dict(k) for k in self.request("GET", "/v1/api-keys").get("data", [])]

    def create_api_key(self, name: str, scopes: list[str] | None = None) -> ApiKeyCreated:
        """``POST /v1/api-keys``; the answer's ``key`` is shown this once."""
        body: dict[str, Any] = {"name": name}
        if scopes is not None:
            body["scopes"] = scopes
        return ApiKeyCreated.from_dict(self.request("POST", "/v1/api-keys", json=body))

    def revoke_api_key(self, key_id: str) -> None:
        """``DELETE /v1/api-keys/{id}``."""
        self.request("DELETE", f"/v1/api-keys/{key_id}")

    def verify_api_key(self, key: str) -> ApiKeyVerdict:
        """``POST /v1/api-keys/verify`` (the caller needs ``api_keys:verify``)."""
        return ApiKeyVerdict.from_dict(self.request("POST", "/v1/api-keys/verify", json={"key": key}))

    def client_token(self) -> str:
        """The client-credentials access token, fetched or cached."""
        return self._client_token()

    # -- generic ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Params | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> Any:
        """Any route: the parsed JSON answer (``None`` for 204). ``auth=False``
        sends no credential."""
        return parse_json(self.send(method, path, json=json, params=params, data=data, headers=headers, auth=auth))

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Params | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        """Like :meth:`request` but answers the (2xx) ``httpx.Response``."""
        method = method.upper()
        kw: dict[str, Any] = {"json": json, "params": params, "data": data}
        # The caller's own credential wins, and is never refreshed.
        own = has_header(headers, "authorization") or has_header(headers, "x-api-key")
        cred = self._credential() if auth and not own else None
        res = self._with_retries(method, self.url(path), headers, cred, kw)
        if res.status_code == 401 and cred and cred.kind != "api_key" and error_code(res) in REFRESHABLE:
            retry: Credential | None = None
            if cred.kind == "user":
                retry = self._after_401(cred.token)
            else:
                self.forget_client_token(cred.token)
                retry = bearer("client", self._client_token())
            if retry:
                res.close()
                res = self._with_retries(method, self.url(path), headers, retry, kw)
        if res.is_success:
            return res
        raise PortcullisError.from_response(res)

    # -- internals --------------------------------------------------------------

    def _with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        cred: Credential | None,
        kw: dict[str, Any],
    ) -> httpx.Response:
        h = {"accept": "application/json", **(headers or {})}
        if cred:
            h[cred.header] = cred.value
        attempt = 0
        while True:
            try:
                res = self._http.request(method, url, headers=h, **kw)
            except httpx.TransportError as e:
                if attempt >= self.max_retries or method not in IDEMPOTENT:
                    raise self.network_error(e, f"{method} {url}") from e
                time.sleep(self.backoff(attempt))
                attempt += 1
                continue
            if res.status_code not in RETRIED_STATUSES or attempt >= self.max_retries:
                return res
            wait = self.wait_for(res, attempt)
            res.close()
            time.sleep(wait)
            attempt += 1

    def _credential(self) -> Credential | None:
        if self._access_token:
            return bearer("user", self._access_token)
        if self._refresh_token:
            with self._refresh_lock:
                if self._access_token:
                    return bearer("user", self._access_token)
                blocked = self.refusal_blocking()
                if blocked:
                    raise blocked
                return bearer("user", self._refresh_locked().access_token)
        if self._client_id:
            return bearer("client", self._client_token())
        if self.api_key:
            return Credential("api_key", "x-api-key", self.api_key, self.api_key)
        return None

    def _after_401(self, used: str) -> Credential | None:
        """One refresh for every concurrent 401 (single flight); ``None`` when there
        is nothing to refresh with."""
        with self._refresh_lock:
            if self._access_token and self._access_token != used:
                # Another call refreshed while this one was out: use its token.
                return bearer("user", self._access_token)
            if not self._refresh_token:
                # A concurrent refresh was refused and the pair dropped: say why.
                return self._dead()
            blocked = self.refusal_blocking()
            if blocked:
                raise blocked
            return bearer("user", self._refresh_locked().access_token)

    def _dead(self) -> Credential | None:
        if self._refresh_failed and self._access_token is None:
            raise self._refresh_failed[1]
        return None

    def _refresh_locked(self) -> TokenPair:
        presented = self._refresh_token
        if not presented:
            raise PortcullisError(401, "missing_token", message="no refresh token")
        try:
            res = self._http.post(
                self.url("/v1/auth/refresh"), json={"refresh_token": presented}, headers={"accept": "application/json"}
            )
        except httpx.TransportError as e:
            # The server may have rotated the token and the answer was lost:
            # re-presenting it would look like theft. Let the app decide.
            err = self.network_error(e, "the refresh got no answer")
            self.refresh_failed(presented, err)
            raise err from e
        if not res.is_success:
            err = PortcullisError.from_response(res)
            self.refresh_failed(presented, err)
            raise err
        pair = self.refreshed(res)
        if self.on_tokens:
            self.on_tokens(pair)
        return pair

    def _client_token(self) -> str:
        if self._client_id is None:
            raise ValueError("no client credentials configured")
        cached = self.cached_client_token()
        if cached:
            return cached
        with self._cc_lock:
            cached = self.cached_client_token()
            if cached:
                return cached
            form, headers = self.token_request()
            res = self._with_retries("POST", self.url("/oauth/token"), headers, None, {"data": form})
            if not res.is_success:
                raise PortcullisError.from_response(res)
            tok = ClientToken.from_dict(parse_json(res))
            self.store_client_token(tok.access_token, tok.expires_in)
            return tok.access_token


class AsyncPortcullis(Base):
    """An asyncio client (one event loop), the same rules as :class:`Portcullis`.

    Credentials, in this order of use: ``access_token`` (refreshed with
    ``refresh_token`` on 401), ``client_id`` + ``client_secret`` (client-credentials
    tokens from ``POST /oauth/token``), ``api_key`` (sent as ``X-API-Key``).
    """

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
        on_tokens: AsyncOnTokens | None = None,
        max_retries: int = 3,
        retry_base: float = 0.2,
        retry_max: float = 10.0,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            access_token=access_token,
            refresh_token=refresh_token,
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
            max_retries=max_retries,
            retry_base=retry_base,
            retry_max=retry_max,
        )
        self.on_tokens = on_tokens
        self._http = httpx.AsyncClient(
            timeout=timeout, transport=transport, headers={"user-agent": USER_AGENT}, follow_redirects=False
        )
        self._refresh_lock = asyncio.Lock()
        self._cc_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPortcullis:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- typed calls ------------------------------------------------------------

    async def me(self) -> User:
        """``GET /v1/me``: the signed-in user."""
        return User.from_dict(await self.request("GET", "/v1/me"))

    async def login(self, email: str, password: str) -> TokenPair | MfaChallenge:
        """``POST /v1/auth/login``. On success the client uses the new tokens (and
        ``on_tokens`` gets them); an account with a second factor answers an
        :class:`MfaChallenge` instead."""
        body = await self.request("POST", "/v1/auth/login", json={"email": email, "password": password}, auth=False)
        if body.get("mfa_required"):
            return MfaChallenge.from_dict(body)
        pair = TokenPair.from_dict(body)
        self.set_tokens(pair)
        await self._notify(pair)
        return pair

    async def refresh(self) -> TokenPair:
        """``POST /v1/auth/refresh`` with the refresh token held, now. Never retried."""
        async with self._refresh_lock:
            return await self._refresh_locked()

    async def logout(self) -> None:
        """``POST /v1/auth/logout``: ends this session; the client forgets its tokens."""
        await self.request("POST", "/v1/auth/logout")
        self._access_token = None
        self._refresh_token = None

    async def sessions(self) -> list[Session]:
        """``GET /v1/me/sessions``."""
        return [Session.from_dict(s) for s in (await self.request("GET", "/v1/me/sessions")).get("data", [])]

    async def revoke_session(self, session_id: str) -> None:
        """``DELETE /v1/me/sessions/{id}``."""
        await self.request("DELETE", f"/v1/me/sessions/{session_id}")

    async def api_keys(self) -> list[ApiKey]:
        """``GET /v1/api-keys``: the caller's keys (never their secrets)."""
        return [ApiKey.from_dict(k) for k in (await self.request("GET", "/v1/api-keys")).get("data", [])]

    async def create_api_key(self, name: str, scopes: list[str] | None = None) -> ApiKeyCreated:
        """``POST /v1/api-keys``; the answer's ``key`` is shown this once."""
        body: dict[str, Any] = {"name": name}
        if scopes is not None:
            body["scopes"] = scopes
        return ApiKeyCreated.from_dict(await self.request("POST", "/v1/api-keys", json=body))

    async def revoke_api_key(self, key_id: str) -> None:
        """``DELETE /v1/api-keys/{id}``."""
        await self.request("DELETE", f"/v1/api-keys/{key_id}")

    async def verify_api_key(self, key: str) -> ApiKeyVerdict:
        """``POST /v1/api-keys/verify`` (the caller needs ``api_keys:verify``)."""
        return ApiKeyVerdict.from_dict(await self.request("POST", "/v1/api-keys/verify", json={"key": key}))

    async def client_token(self) -> str:
        """The client-credentials access token, fetched or cached."""
        return await self._client_token()

    # -- generic ----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Params | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> Any:
        """Any route: the parsed JSON answer (``None`` for 204). ``auth=False``
        sends no credential."""
        return parse_json(await self.send(method, path, json=json, params=params, data=data, headers=headers, auth=auth))

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Params | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        """Like :meth:`request` but answers the (2xx) ``httpx.Response``."""
        method = method.upper()
        kw: dict[str, Any] = {"json": json, "params": params, "data": data}
        # The caller's own credential wins, and is never refreshed.
        own = has_header(headers, "authorization") or has_header(headers, "x-api-key")
        cred = await self._credential() if auth and not own else None
        res = await self._with_retries(method, self.url(path), headers, cred, kw)
        if res.status_code == 401 and cred and cred.kind != "api_key" and error_code(res) in REFRESHABLE:
            retry: Credential | None = None
            if cred.kind == "user":
                retry = await self._after_401(cred.token)
            else:
                self.forget_client_token(cred.token)
                retry = bearer("client", await self._client_token())
            if retry:
                await res.aclose()
                res = await self._with_retries(method, self.url(path), headers, retry, kw)
        if res.is_success:
            return res
        raise PortcullisError.from_response(res)

    # -- internals --------------------------------------------------------------

    async def _notify(self, pair: TokenPair) -> None:
        if self.on_tokens:
            out = self.on_tokens(pair)
            if inspect.isawaitable(out):
                await out

    async def _with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        cred: Credential | None,
        kw: dict[str, Any],
    ) -> httpx.Response:
        h = {"accept": "application/json", **(headers or {})}
        if cred:
            h[cred.header] = cred.value
        attempt = 0
        while True:
            try:
                res = await self._http.request(method, url, headers=h, **kw)
            except httpx.TransportError as e:
                if attempt >= self.max_retries or method not in IDEMPOTENT:
                    raise self.network_error(e, f"{method} {url}") from e
                await asyncio.sleep(self.backoff(attempt))
                attempt += 1
                continue
            if res.status_code not in RETRIED_STATUSES or attempt >= self.max_retries:
                return res
            wait = self.wait_for(res, attempt)
            await res.aclose()
            await asyncio.sleep(wait)
            attempt += 1

    async def _credential(self) -> Credential | None:
        if self._access_token:
            return bearer("user", self._access_token)
        if self._refresh_token:
            async with self._refresh_lock:
                if self._access_token:
                    return bearer("user", self._access_token)
                blocked = self.refusal_blocking()
                if blocked:
                    raise blocked
                return bearer("user", (await self._refresh_locked()).access_token)
        if self._client_id:
            return bearer("client", await self._client_token())
        if self.api_key:
            return Credential("api_key", "x-api-key", self.api_key, self.api_key)
        return None

    async def _after_401(self, used: str) -> Credential | None:
        """One refresh for every concurrent 401 (single flight); ``None`` when there
        is nothing to refresh with."""
        async with self._refresh_lock:
            if self._access_token and self._access_token != used:
                # Another call refreshed while this one was out: use its token.
                return bearer("user", self._access_token)
            if not self._refresh_token:
                # A concurrent refresh was refused and the pair dropped: say why.
                return self._dead()
            blocked = self.refusal_blocking()
            if blocked:
                raise blocked
            return bearer("user", (await self._refresh_locked()).access_token)

    def _dead(self) -> Credential | None:
        if self._refresh_failed and self._access_token is None:
            raise self._refresh_failed[1]
        return None

    async def _refresh_locked(self) -> TokenPair:
        presented = self._refresh_token
        if not presented:
            raise PortcullisError(401, "missing_token", message="no refresh token")
        try:
            res = await self._http.post(
                self.url("/v1/auth/refresh"), json={"refresh_token": presented}, headers={"accept": "application/json"}
            )
        except httpx.TransportError as e:
            # The server may have rotated the token and the answer was lost:
            # re-presenting it would look like theft. Let the app decide.
            err = self.network_error(e, "the refresh got no answer")
            self.refresh_failed(presented, err)
            raise err from e
        if not res.is_success:
            err = PortcullisError.from_response(res)
            self.refresh_failed(presented, err)
            raise err
        pair = self.refreshed(res)
        await self._notify(pair)
        return pair

    async def _client_token(self) -> str:
        if self._client_id is None:
            raise ValueError("no client credentials configured")
        cached = self.cached_client_token()
        if cached:
            return cached
        async with self._cc_lock:
            cached = self.cached_client_token()
            if cached:
                return cached
            form, headers = self.token_request()
            res = await self._with_retries("POST", self.url("/oauth/token"), headers, None, {"data": form})
            if not res.is_success:
                raise PortcullisError.from_response(res)
            tok = ClientToken.from_dict(parse_json(res))
            self.store_client_token(tok.access_token, tok.expires_in)
            return tok.access_token
