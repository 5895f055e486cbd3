"""PyPI authlib against a running Portcullis: client credentials with
client_secret_basic and with private_key_jwt, then token introspection.

    python3 authlib_client.py genkey   -> {"private_pem": ..., "jwk": {...}}
    python3 authlib_client.py run      (inputs from the environment, see
                                        crates/portcullis/tests/it/interop.rs)

Prints one JSON line on success; exits 1 with the reason otherwise.
"""

import json
import os
import sys

import requests


def genkey():
    from authlib.jose import JsonWebKey

    key = JsonWebKey.generate_key("RSA", 2048, is_private=True)
    public = key.as_dict(is_private=False)
    public.update({"kid": key.thumbprint(), "alg": "RS256", "use": "sig"})
    pem = key.as_pem(is_private=True).decode()
    print(json.dumps({"private_pem": pem, "jwk": public}))


def env(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"{name} is not set")
    return value


def check(cond, what):
    if not cond:
        raise SystemExit(f"check failed: {what}")


def run():
    from authlib.integrations.requests_client import OAuth2Session
    from authlib.oauth2.rfc7523 import PrivateKeyJWT

    issuer = env("ISSUER")
    token_url = f"{issuer}/oauth/token"
    introspect_url = f"{issuer}/oauth/introspect"
    scope = env("SCOPE")

    basic = OAuth2Session(
        env("BASIC_CLIENT_ID"),
        env("BASIC_CLIENT_SECRET"),
        token_endpoint_auth_method="client_secret_basic",
        scope=scope,
    )
    t1 = basic.fetch_token(token_url, grant_type="client_credentials")
    check(t1.get("access_token") and "refresh_token" not in t1, f"basic token {t1}")
    check(t1.get("scope") == scope, f"basic scope {t1.get('scope')}")

    signed = OAuth2Session(
        env("JWT_CLIENT_ID"),
        env("JWT_PRIVATE_PEM"),
        token_endpoint_auth_method=PrivateKeyJWT(token_url, headers={"kid": env("JWT_KID")}),
        scope=scope,
    )
    signed.register_client_auth_method(PrivateKeyJWT(token_url, headers={"kid": env("JWT_KID")}))
    t2 = signed.fetch_token(token_url, grant_type="client_credentials")
    check(t2.get("access_token"), f"private_key_jwt token {t2}")
    # The same assertion cannot be replayed: authlib makes a fresh jti per request.
    t3 = signed.fetch_token(token_url, grant_type="client_credentials")
    check(t3.get("access_token") != t2.get("access_token"), "second private_key_jwt token")

    res = basic.introspect_token(introspect_url, token=t2["access_token"])
    res.raise_for_status()
    info = res.json()
    check(info.get("active") is True, f"introspection of a live token: {info}")
    check(info.get("client_id") == env("JWT_CLIENT_ID"), f"introspected client_id {info}")
    check(info.get("scope") == scope, f"introspected scope {info}")

    dead = basic.introspect_token(introspect_url, token="not-a-token").json()
    check(dead == {"active": False}, f"introspection of garbage: {dead}")

    # Wrong secret: RFC 6749 invalid_client with 401.
    bad = requests.post(
        token_url,
        data={"grant_type": "client_credentials"},
        auth=(env("BASIC_CLIENT_ID"), "pcs_wrong"),
        timeout=10,
    )
    check(bad.status_code == 401 and bad.json().get("error") == "invalid_client", f"wrong secret: {bad.text}")

    print(json.dumps({"ok": True, "introspected": info.get("sub")}))


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "genkey":
        genkey()
    elif mode == "run":
        run()
    else:
        raise SystemExit("usage: authlib_client.py genkey|run")
