"""The clients against a real Portcullis behind a counting proxy: credentials,
client-credentials caching, retries, refresh rules, typed errors."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from portcullis import AsyncPortcullis, Portcullis, PortcullisError, TokenPair, User

from conftest import PASSWORD, Proxy, Server


@pytest.fixture(scope="module")
def admin(server: Server) -> str:
    return server.admin()


@pytest.fixture(scope="module")
def cc(server: Server, admin: str) -> tuple[str, str]:
    return server.client()


def test_bearer_me_and_typed_errors(proxy: Proxy, admin: str) -> None:
    with Portcullis(proxy.base, access_token=admin) as client:
        me = client.me()
        assert isinstance(me, User)
        assert me.email == "admin@example.com"
        assert "admin" in me.roles
    with Portcullis(proxy.base) as anon:
        with pytest.raises(PortcullisError) as e:
            anon.me()
    assert e.value.status == 401
    assert e.value.code == "missing_token"
    assert e.value.problem and e.value.problem["code"] == "missing_token"


def test_api_key_sent_as_x_api_key(server: Server, proxy: Proxy, admin: str) -> None:
    key = server.api_key(admin, ["admin:users:read"])
    with Portcullis(proxy.base, api_key=key) as client:
        assert client.me().email == "admin@example.com"


def test_login_sessions_logout(proxy: Proxy, admin: str) -> None:
    seen: list[TokenPair] = []
    client = Portcullis(proxy.base, on_tokens=seen.append)
    pair = client.login("admin@example.com", PASSWORD)
    assert isinstance(pair, TokenPair) and seen == [pair]
    assert client.access_token == pair.access_token
    sessions = client.sessions()
    assert any(s.current for s in sessions)
    assert client.me().email == "admin@example.com"
    refreshed = client.refresh()
    assert refreshed.refresh_token != pair.refresh_token and len(seen) == 2
    client.logout()
    assert client.access_token is None and client.refresh_token is None
    with pytest.raises(PortcullisError) as e:
        client.request("GET", "/v1/me", headers={"authorization": f"Bearer {refreshed.access_token}"})
    assert e.value.status == 401
    with pytest.raises(PortcullisError) as e:
        client.login("admin@example.com", "wrong password")
    assert e.value.status == 401
    assert e.value.code == "invalid_credentials"


def test_oauth_errors_carry_error_and_description(proxy: Proxy, cc: tuple[str, str]) -> None:
    client = Portcullis(proxy.base, client_id=cc[0], client_secret="wrong")
    with pytest.raises(PortcullisError) as e:
        client.verify_api_key("x")
    assert e.value.status == 401
    assert e.value.error == "invalid_client"
    assert e.value.code == "invalid_client"


def test_client_credentials_token_fetched_once_and_reused(proxy: Proxy, cc: tuple[str, str]) -> None:
    before = proxy.count("POST /oauth/token")
    client = Portcullis(proxy.base, client_id=cc[0], client_secret=cc[1], scope="api_keys:verify")
    # Concurrent first calls share one token request.
    with ThreadPoolExecutor(5) as pool:
        verdicts = list(pool.map(lambda _: client.verify_api_key("pcl_unknown"), range(5)))
    assert all(v.active is False for v in verdicts)
    assert client.verify_api_key("pcl_unknown").active is False
    assert proxy.count("POST /oauth/token") - before == 1


def test_async_client_credentials_single_flight(proxy: Proxy, cc: tuple[str, str]) -> None:
    async def main() -> None:
        before = proxy.count("POST /oauth/token")
        async with AsyncPortcullis(proxy.base, client_id=cc[0], client_secret=cc[1]) as client:
            verdicts = await asyncio.gather(*(client.verify_api_key("pcl_unknown") for _ in range(5)))
            assert all(v.active is False for v in verdicts)
            await client.verify_api_key("pcl_unknown")
        assert proxy.count("POST /oauth/token") - before == 1

    asyncio.run(main())


def test_503_with_retry_after_retried_then_answered(proxy: Proxy, admin: str) -> None:
    client = Portcullis(proxy.base, access_token=admin)
    proxy.fail("GET /v1/me", (503, {"retry-after": "1"}))
    seen = proxy.count("GET /v1/me")
    t0 = time.monotonic()
    assert client.me().email == "admin@example.com"
    assert time.monotonic() - t0 >= 0.95, "Retry-After honoured"
    assert proxy.count("GET /v1/me") - seen == 2
    # A POST answered 429 then 503: the same JSON body goes out each time.
    proxy.fail("POST /v1/api-keys", (429, {"retry-after": "0"}), (503, {"retry-after": "0"}))
    created = client.create_api_key("retried", [])
    assert created.name == "retried" and created.key


def test_async_503_with_retry_after(proxy: Proxy, admin: str) -> None:
    async def main() -> None:
        async with AsyncPortcullis(proxy.base, access_token=admin) as client:
            proxy.fail("GET /v1/me", (503, {"retry-after": "1"}))
            seen = proxy.count("GET /v1/me")
            t0 = time.monotonic()
            assert (await client.me()).email == "admin@example.com"
            assert time.monotonic() - t0 >= 0.95
            assert proxy.count("GET /v1/me") - seen == 2

    asyncio.run(main())


def test_retries_are_bounded(proxy: Proxy, admin: str) -> None:
    client = Portcullis(proxy.base, access_token=admin, retry_base=0.001)
    proxy.fail("GET /v1/me", *[(503, {})] * 5)
    seen = proxy.count("GET /v1/me")
    with pytest.raises(PortcullisError) as e:
        client.me()
    assert e.value.status == 503
    assert proxy.count("GET /v1/me") - seen == 4
    proxy.fail("GET /v1/me")


def test_network_errors_retried_for_get_only(admin: str) -> None:
    import httpx

    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=request)

    client = Portcullis("http://127.0.0.1:9", access_token=admin, retry_base=0.001,
                        transport=httpx.MockTransport(handler))
    with pytest.raises(PortcullisError) as e:
        client.me()
    assert e.value.status == 0 and e.value.code == "network_error"
    assert calls == 4
    calls = 0
    with pytest.raises(PortcullisError):
        client.create_api_key("x", [])
    assert calls == 1


def test_spent_refresh_token_not_presented_twice(server: Server, proxy: Proxy, admin: str) -> None:
    login = server.login("admin@example.com")
    # Spend it behind the client's back (as another tab would).
    assert server.call("POST", "/v1/auth/refresh", body={"refresh_token": login["refresh_token"]}).status_code == 200
    tokens: list[TokenPair] = []
    client = Portcullis(proxy.base, access_token="garbage", refresh_token=login["refresh_token"],
                        on_tokens=tokens.append)
    before = proxy.count("POST /v1/auth/refresh")
    with pytest.raises(PortcullisError) as e:
        client.me()
    assert e.value.status == 401
    assert e.value.code == "refresh_token_reused"
    assert proxy.count("POST /v1/auth/refresh") - before == 1
    assert client.refresh_token is None and client.access_token is None
    assert tokens == []


def test_refresh_answered_503_is_not_retried(server: Server, proxy: Proxy) -> None:
    login = server.login("admin@example.com")
    client = Portcullis(proxy.base, access_token="garbage", refresh_token=login["refresh_token"])
    proxy.fail("POST /v1/auth/refresh", (503, {"retry-after": "0"}))
    before = proxy.count("POST /v1/auth/refresh")
    with pytest.raises(PortcullisError) as e:
        client.me()
    assert e.value.status == 503
    # Nor presented again by a later call: the app decides (client.refresh()).
    with pytest.raises(PortcullisError):
        client.me()
    assert proxy.count("POST /v1/auth/refresh") - before == 1
    # Kept: a 503 may or may not have spent it.
    assert client.refresh_token == login["refresh_token"]
    assert client.refresh().access_token
    assert client.me().email == "admin@example.com"


def test_sync_refresh_single_flight_across_threads(server: Server, proxy: Proxy) -> None:
    login = server.login("admin@example.com")
    tokens: list[TokenPair] = []
    client = Portcullis(proxy.base, access_token="garbage", refresh_token=login["refresh_token"],
                        on_tokens=tokens.append)
    before = proxy.count("POST /v1/auth/refresh")
    with ThreadPoolExecutor(10) as pool:
        emails = list(pool.map(lambda _: client.me().email, range(10)))
    assert emails == ["admin@example.com"] * 10
    assert proxy.count("POST /v1/auth/refresh") - before == 1
    assert len(tokens) == 1


def test_async_refused_refresh_shared_by_concurrent_calls(server: Server, proxy: Proxy) -> None:
    login = server.login("admin@example.com")
    assert server.call("POST", "/v1/auth/refresh", body={"refresh_token": login["refresh_token"]}).status_code == 200

    async def main() -> None:
        async with AsyncPortcullis(proxy.base, access_token="garbage", refresh_token=login["refresh_token"]) as c:
            before = proxy.count("POST /v1/auth/refresh")
            errors = await asyncio.gather(*(c.me() for _ in range(10)), return_exceptions=True)
            assert all(isinstance(e, PortcullisError) and e.code == "refresh_token_reused" for e in errors), errors
            assert proxy.count("POST /v1/auth/refresh") - before == 1

    asyncio.run(main())
