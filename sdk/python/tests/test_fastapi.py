"""``portcullis.fastapi`` and ``verify_token`` against a real Portcullis:
401/403/200, forged tokens, API keys, key rotation, the JWKS refetch rule."""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from portcullis import PortcullisError, TokenVerifier, verify_token
from portcullis.fastapi import AuthContext, PortcullisAuth

from conftest import Server


def make_app(auth: PortcullisAuth) -> FastAPI:
    app = FastAPI()

    @app.get("/whoami")
    def whoami(ctx: AuthContext = Depends(auth)) -> dict[str, Any]:
        return {
            "user_id": ctx.user_id,
            "session_id": ctx.session_id,
            "client_id": ctx.client_id,
            "scopes": ctx.scopes,
            "roles": ctx.roles,
            "claims": ctx.claims,
            "api_key_id": ctx.api_key_id,
        }

    @app.get("/orders")
    def orders(ctx: AuthContext = Depends(auth.require_scope("read:orders"))) -> dict[str, Any]:
        return {"orders": [], "for": ctx.user_id}

    return app


class World:
    def __init__(self, server: Server) -> None:
        self.server = server
        admin = server.admin()
        self.reader = server.user_with(admin, "reader@example.com", "orders", ["read:orders"])["access_token"]
        server.register("plain@example.com")
        self.plain = server.login("plain@example.com")["access_token"]
        service = server.user_with(admin, "service@example.com", "verifier", ["api_keys:verify"])["access_token"]
        self.verifier_key = server.api_key(service, ["api_keys:verify"])
        self.reader_key = server.api_key(self.reader, ["read:orders"])
        self.plain_key = server.api_key(self.plain, [])
        self.auth = PortcullisAuth(issuer=server.base, api_key_verifier_key=self.verifier_key)
        self.api = TestClient(make_app(self.auth))
        self.no_keys = TestClient(make_app(PortcullisAuth(issuer=server.base)))


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[World]:
    w = World(server)
    yield w
    w.api.close()
    w.no_keys.close()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_no_credential_401_missing_token(world: World) -> None:
    r = world.api.get("/orders")
    assert r.status_code == 401
    assert r.headers["content-type"].split(";")[0] == "application/problem+json"
    assert r.headers["www-authenticate"] == 'Bearer realm="portcullis"'
    body = r.json()
    assert body["code"] == "missing_token" and body["status"] == 401
    assert body["type"] == "https://portcullis.dev/problems/missing-token"
    # A scheme other than Bearer is no bearer token.
    assert world.api.get("/orders", headers={"authorization": "Basic YTpi"}).json()["code"] == "missing_token"


def test_forged_tokens_401_invalid_token(world: World) -> None:
    h, p, s = world.reader.split(".")
    claims = jwt.decode(world.reader, options={"verify_signature": False})
    header = jwt.get_unverified_header(world.reader)
    widened = b64({**claims, "scope": "read:orders admin:users:write"})
    # Signed by a key of our own under the server's kid.
    own = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    foreign = jwt.encode(claims, own, algorithm="RS256", headers={"typ": "at+jwt", "kid": header["kid"]})
    none = f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': header['kid']})}.{p}."
    hs = jwt.encode(claims, "a shared secret of 32 bytes.....", algorithm="HS256",
                    headers={"typ": "at+jwt", "kid": header["kid"]})
    id_like = f"{b64({**header, 'typ': 'JWT'})}.{p}.{s}"
    for token in [f"{h}.{widened}.{s}", foreign, none, hs, id_like, "not-a-jwt", f"{h}.{p}.{s}x"]:
        r = world.api.get("/orders", headers=bearer(token))
        assert r.status_code == 401, token
        assert r.json()["code"] == "invalid_token", token
        assert r.headers["www-authenticate"].startswith('Bearer realm="portcullis", error="invalid_token"')
    empty = world.api.get("/orders", headers={"authorization": "Bearer "})
    assert empty.status_code == 401 and empty.json()["code"] == "invalid_token"


def test_wrong_audience_or_issuer_401(world: World) -> None:
    strict = TestClient(make_app(PortcullisAuth(issuer=world.server.base, audience="https://api.example.com")))
    other = TestClient(make_app(PortcullisAuth(issuer="http://127.0.0.1:1", base_url=world.server.base)))
    for client in (strict, other):
        r = client.get("/orders", headers=bearer(world.reader))
        assert r.status_code == 401
        assert r.json()["code"] == "invalid_token"


def test_missing_scope_403_naming_it(world: World) -> None:
    r = world.api.get("/orders", headers=bearer(world.plain))
    assert r.status_code == 403
    assert r.json()["code"] == "insufficient_scope"
    assert r.json()["required_scopes"] == ["read:orders"]
    assert r.headers["www-authenticate"] == 'Bearer realm="portcullis", error="insufficient_scope", scope="read:orders"'
    # Authenticated all the same.
    assert world.api.get("/whoami", headers=bearer(world.plain)).status_code == 200


def test_right_scope_200_and_context(world: World) -> None:
    r = world.api.get("/orders", headers=bearer(world.reader))
    assert r.status_code == 200
    who = world.api.get("/whoami", headers=bearer(world.reader)).json()
    assert who["user_id"].startswith("usr_")
    assert who["session_id"].startswith("ses_")
    assert who["client_id"] is None
    assert "read:orders" in who["scopes"] and "orders" in who["roles"]
    assert who["claims"]["iss"] == world.server.base
    assert r.json()["for"] == who["user_id"]


def test_api_keys(world: World) -> None:
    ok = world.api.get("/orders", headers={"x-api-key": world.reader_key})
    assert ok.status_code == 200, ok.text
    who = world.api.get("/whoami", headers={"x-api-key": world.reader_key}).json()
    assert who["user_id"].startswith("usr_") and who["api_key_id"] and who["claims"] is None
    lacking = world.api.get("/orders", headers={"x-api-key": world.plain_key})
    assert lacking.status_code == 403 and lacking.json()["required_scopes"] == ["read:orders"]
    unknown = world.api.get("/orders", headers={"x-api-key": world.reader_key[:-4] + "AAAA"})
    assert unknown.status_code == 401 and unknown.json()["code"] == "invalid_token"
    off = world.no_keys.get("/orders", headers={"x-api-key": world.reader_key})
    assert off.status_code == 401 and off.json()["code"] == "missing_token"
    # Verdicts are cached: asking again does not reach the server.
    asked = world.auth.api_keys.asked  # type: ignore[union-attr]
    for _ in range(5):
        assert world.api.get("/orders", headers={"x-api-key": world.reader_key}).status_code == 200
    assert world.auth.api_keys.asked == asked  # type: ignore[union-attr]


def test_verify_token_function(world: World) -> None:
    claims = verify_token(world.reader, issuer=world.server.base)
    assert claims["iss"] == world.server.base and "read:orders" in claims["scope"]
    with pytest.raises(PortcullisError) as e:
        verify_token(world.reader, issuer=world.server.base, audience="https://elsewhere.example")
    assert e.value.status == 401 and e.value.code == "invalid_token"


def test_unknown_kid_refetches_at_most_once_per_interval(world: World) -> None:
    v = TokenVerifier(world.server.base, refetch_interval=5.0)
    v.verify(world.reader)
    assert v.fetches == 1
    h, p, s = world.reader.split(".")
    header = jwt.get_unverified_header(world.reader)
    for i in range(10):
        made_up = f"{b64({**header, 'kid': f'made-up-{i}'})}.{p}.{s}"
        with pytest.raises(PortcullisError) as e:
            v.verify(made_up)
        assert e.value.code == "invalid_token"
    assert v.fetches == 1  # the 5 s cooldown since the first fetch holds
    v.verify(world.reader)
    assert v.fetches == 1


def test_cached_keys_kept_when_server_unreachable(world: World) -> None:
    import httpx

    up = True
    real = httpx.HTTPTransport()

    def handler(request: httpx.Request) -> httpx.Response:
        if not up:
            raise httpx.ConnectError("down", request=request)
        return real.handle_request(request)

    v = TokenVerifier(world.server.base, refetch_interval=0.0, jwks_max_age=0.0,
                      transport=httpx.MockTransport(handler))
    v.verify(world.reader)
    up = False
    # Stale keys and every refetch fails: the cached keys still verify.
    assert v.verify(world.reader)["sub"]
    cold = TokenVerifier(world.server.base, transport=httpx.MockTransport(handler))
    with pytest.raises(PortcullisError) as e:
        cold.verify(world.reader)
    assert e.value.status == 503 and e.value.code == "overloaded"


def test_key_rotation_picked_up_without_restart(world: World) -> None:
    # Warm the JWKS cache with the old key.
    assert world.api.get("/orders", headers=bearer(world.reader)).status_code == 200
    world.server.cli("keys", "rotate", "--algorithm", "ES256")
    # The server reloads its keys every second (keys.reload_interval): wait for an ES256 token.
    token = ""
    for _ in range(100):
        t = world.server.login("reader@example.com")["access_token"]
        if jwt.get_unverified_header(t)["alg"] == "ES256":
            token = t
            break
        time.sleep(0.1)
    assert token, "the server never signed with the new key"
    # The unknown kid refetches the JWKS (at most once per 5 s cooldown).
    status = 0
    for _ in range(40):
        status = world.api.get("/orders", headers=bearer(token)).status_code
        if status == 200:
            break
        time.sleep(0.25)
    assert status == 200
    # Tokens of the old key still pass: it stays published until its tokens expire.
    assert world.api.get("/orders", headers=bearer(world.reader)).status_code == 200
