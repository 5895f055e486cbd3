"""Python SDK for Portcullis: :class:`Portcullis` / :class:`AsyncPortcullis` HTTP
clients, :func:`verify_token` for access tokens, and (extra ``fastapi``)
:mod:`portcullis.fastapi` dependencies."""

from .client import AsyncPortcullis, Portcullis
from .errors import PortcullisError
from .models import (
    AccessTokenClaims,
    ApiKey,
    ApiKeyCreated,
    ApiKeyVerdict,
    ClientToken,
    MfaChallenge,
    Session,
    TokenPair,
    User,
)
from .verify import ApiKeyVerifier, AuthContext, TokenVerifier, verify_token

__version__ = "0.1.0"

__all__ = [
    "AccessTokenClaims",
    "ApiKey",
    "ApiKeyCreated",
    "ApiKeyVerdict",
    "ApiKeyVerifier",
    "AsyncPortcullis",
    "AuthContext",
    "ClientToken",
    "MfaChallenge",
    "Portcullis",
    "PortcullisError",
    "Session",
    "TokenPair",
    "TokenVerifier",
    "User",
    "verify_token",
]
