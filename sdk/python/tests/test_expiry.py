"""Against a Portcullis whose access tokens live 2 s (and no leeway): expired tokens
refused by the FastAPI dependency, one refresh for 20 concurrent 401s, and
client-credentials tokens renewed near expiry."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterator

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from portcullis import AsyncPortcullis, Portcullis, TokenPair
from portcullis.fastapi import AuthContext, PortcullisAuth

from conftest import Proxy, Server


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server({"PORTCULLIS_TOKENS__ACCESS_TTL": "2s", "PORTCULLIS_TOKENS__LEEWAY": "0s"})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def setup(server: Server) -> dict[str, Any]:
    admin = server.admin()
    login = server.user_with(admin, "reader@example.com", "orders", ["read:orders"])
    cc = server.client()
    # Let the access token expire.
    time.sleep(3)
    return {"login": login, "cc": cc}


def test_expired_token_401_token_expired(server: Server, setup: dict[str, Any]) -> None:
    auth = PortcullisAuth(issuer=server.base, leeway=0)
    app = FastAPI()

    @app.get("/orders")
    def orders(ctx: AuthContext = Depends(auth.require_scope("read:orders"))) -> dict[str, bool]:
        return {"ok": True}

    with TestClient(app) as api:
        r = api.get("/orders", headers={"authorization": f"Bearer {setup['login']['access_token']}"})
    assert r.status_code == 401
    assert r.json()["code"] == "token_expired"
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_20_concurrent_calls_expired_token_one_refresh(proxy: Proxy, setup: dict[str, Any]) -> None:
    login = setup["login"]
    tokens: list[TokenPair] = []

    async def main() -> None:
        async with AsyncPortcullis(proxy.base, access_token=login["access_token"],
                                   refresh_token=login["refresh_token"], on_tokens=tokens.append) as client:
            before = proxy.count("POST /v1/auth/refresh")
            users = await asyncio.gather(*(client.me() for _ in range(20)))
            assert [u.email for u in users] == ["reader@example.com"] * 20
            assert proxy.count("POST /v1/auth/refresh") - before == 1
            assert len(tokens) == 1
            assert client.access_token == tokens[0].access_token
            assert client.refresh_token == tokens[0].refresh_token
            assert tokens[0].refresh_token != login["refresh_token"]
            assert tokens[0].expires_in == 2

    asyncio.run(main())


def test_client_credentials_token_renewed_near_expiry(proxy: Proxy, setup: dict[str, Any]) -> None:
    cid, secret = setup["cc"]
    client = Portcullis(proxy.base, client_id=cid, client_secret=secret)
    before = proxy.count("POST /oauth/token")
    client.verify_api_key("pcl_unknown")
    client.verify_api_key("pcl_unknown")
    assert proxy.count("POST /oauth/token") - before == 1
    # 2 s lifetime, renewed 10 % early: after 1.9 s a call gets a new one.
    time.sleep(1.9)
    client.verify_api_key("pcl_unknown")
    assert proxy.count("POST /oauth/token") - before == 2
