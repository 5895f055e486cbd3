"""Verifies a Portcullis access token with PyJWT, knowing only the JWKS URL.

Usage: pyjwt_verify.py JWKS_URL TOKEN ISSUER AUDIENCE
Prints the verified claims (plus the header alg) as JSON; exits non-zero on failure.
This is what a resource server written in Python does, unmodified.
"""
import json
import sys

import jwt

jwks_url, token, issuer, audience = sys.argv[1:5]
client = jwt.PyJWKClient(jwks_url)
signing_key = client.get_signing_key_from_jwt(token)
header = jwt.get_unverified_header(token)
claims = jwt.decode(
    token,
    signing_key.key,
    algorithms=["RS256", "ES256", "EdDSA"],
    audience=audience,
    issuer=issuer,
    options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
)
claims["alg"] = header["alg"]
print(json.dumps(claims))
