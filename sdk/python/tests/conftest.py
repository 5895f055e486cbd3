"""Test kit: a real ``portcullis serve`` ($PORTCULLIS_BIN) on a free loopback port
with its own data dir, seeded through the CLI and the admin API, and a counting,
fault-injecting HTTP proxy to put in front of it."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpx
import pytest

PASSWORD = "correct horse battery staple"

RELAXED = {
    # Tests sign in far more than the default 5 times a minute from 127.0.0.1.
    "PORTCULLIS_SECURITY__LOGIN_RATE": "100000/1m",
    "PORTCULLIS_SECURITY__REGISTER_RATE": "100000/1m",
    "PORTCULLIS_SECURITY__API_KEY_VERIFY_RATE": "100000/1m",
    "PORTCULLIS_SECURITY__REFRESH_FAILURE_RATE": "100000/1m",
    "PORTCULLIS_SECURITY__ACCOUNT_FAILURE_CEILING": "100000/1m",
    "PORTCULLIS_SECURITY__HASH_CONCURRENCY": "2",
    "PORTCULLIS_KEYS__RELOAD_INTERVAL": "1s",
    "PORTCULLIS_LOG__LEVEL": "warn",
}


def binary() -> str:
    path = os.environ.get("PORTCULLIS_BIN", "")
    if not path:
        pytest.fail("set PORTCULLIS_BIN to a built portcullis binary (cargo build -p portcullis)")
    return path


def clean_env() -> dict[str, str]:
    """The environment without the caller's PORTCULLIS_* settings (hermetic tests)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="portcullis-sdk-py-")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log = open(os.path.join(self.data_dir, "server.log"), "w+b")
        self.proc = subprocess.Popen(
            [binary(), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", self.data_dir],
            env={**clean_env(), **RELAXED, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"portcullis exited: {self.output()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"portcullis not ready after 20 s: {self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def cli(self, *args: str, input: str | None = None) -> str:
        out = subprocess.run(
            [binary(), *args, "--data-dir", self.data_dir],
            env={**clean_env(), "PORTCULLIS_LOG__LEVEL": "warn"},
            input=input,
            capture_output=True,
            text=True,
            timeout=20,
        )
        if out.returncode != 0:
            raise RuntimeError(f"portcullis {' '.join(args)}: {out.stderr}")
        return out.stdout

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, f"{self.base}{path}", headers=headers, json=body, timeout=10)

    def register(self, email: str) -> str:
        r = self.call("POST", "/v1/auth/register", body={"email": email, "password": PASSWORD})
        assert r.status_code in (200, 201), r.text
        return str(r.json()["user"]["id"])

    def login(self, email: str) -> dict[str, Any]:
        r = self.call("POST", "/v1/auth/login", body={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def admin(self) -> str:
        """An admin (created through the CLI), signed in: the access token."""
        self.cli("users", "create", "--email", "admin@example.com", "--role", "admin", "--password-stdin",
                 input=f"{PASSWORD}\n")
        return str(self.login("admin@example.com")["access_token"])

    def user_with(self, admin: str, email: str, role: str, permissions: list[str]) -> dict[str, Any]:
        """A role holding ``permissions`` granted to a new user; their fresh login."""
        r = self.call("POST", "/v1/admin/roles", admin, {"name": role, "permissions": permissions})
        assert r.status_code == 201, r.text
        uid = self.register(email)
        r = self.call("POST", f"/v1/admin/users/{uid}/roles", admin, {"role": role})
        assert r.status_code == 200, r.text
        # A token carries the scopes held at login: sign in after the grant.
        return self.login(email)

    def api_key(self, token: str, scopes: list[str]) -> str:
        r = self.call("POST", "/v1/api-keys", token, {"name": "test", "scopes": scopes})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    def client(self, scope: str = "api_keys:verify") -> tuple[str, str]:
        out = json.loads(self.cli("clients", "create", "--name", "svc", "--grant-type", "client_credentials",
                                  "--scope", scope))
        return str(out["client_id"]), str(out["client_secret"])


class Proxy:
    """A proxy on 127.0.0.1 counting requests by ``METHOD path``; ``faults[key]``
    holds answers ``(status, headers)`` served once each instead of forwarding."""

    def __init__(self, target: str) -> None:
        self.target = httpx.URL(target)
        self.counts: dict[str, int] = defaultdict(int)
        self.faults: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_any(self) -> None:
                key = f"{self.command} {self.path.split('?')[0]}"
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.counts[key] += 1
                    fault = proxy.faults[key].pop(0) if proxy.faults[key] else None
                if fault:
                    status, headers = fault
                    doc = json.dumps({"type": "about:blank", "title": "injected", "status": status,
                                      "code": "overloaded"}).encode()
                    self.send_response(status)
                    self.send_header("content-type", "application/problem+json")
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(doc)))
                    self.end_headers()
                    self.wfile.write(doc)
                    return
                conn = http.client.HTTPConnection(proxy.target.host, proxy.target.port, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    up = conn.getresponse()
                    data = up.read()
                except OSError:
                    self.send_response(502)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                finally:
                    conn.close()
                self.send_response(up.status)
                for k, v in up.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = do_HEAD = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, key: str) -> int:
        with self.lock:
            return self.counts[key]

    def fail(self, key: str, *answers: tuple[int, dict[str, str]]) -> None:
        with self.lock:
            self.faults[key] = list(answers)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def proxy(server: Server) -> Iterator[Proxy]:
    p = Proxy(server.base)
    yield p
    p.stop()
