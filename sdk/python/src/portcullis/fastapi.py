"""FastAPI dependencies: ``auth = PortcullisAuth(issuer=...)``, then
``Depends(auth)`` or ``Depends(auth.require_scope("read:orders"))`` gives an
:class:`AuthContext`. Refusals are answered as Portcullis answers: RFC 9457
problem documents (``application/problem+json``) with ``WWW-Authenticate``
(RFC 6750 §3): 401 ``missing_token`` / ``invalid_token`` / ``token_expired``,
403 ``insufficient_scope`` with ``required_scopes``, 503 ``overloaded``.

The problem handler installs itself on first use; :meth:`PortcullisAuth.install`
does it up front (needed only if another handler for ``HTTPException`` subclasses
must not see these)."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from .errors import PortcullisError, problem
from .verify import ApiKeyVerifier, AuthContext, TokenVerifier, auth_from_claims

__all__ = ["PortcullisAuth", "AuthContext", "ProblemException", "problem_handler"]


class ProblemException(HTTPException):
    """A refusal carrying its problem document (``detail``) and headers."""

    def __init__(self, err: PortcullisError) -> None:
        doc = err.problem or problem(err.status, err.code, str(err))
        super().__init__(status_code=err.status, detail=doc, headers=_headers(err.code, doc, err.status))
        self.problem = doc


def _quoted(s: str) -> str:
    return s.replace('"', "'").replace("\\", "'")


def _headers(code: str, doc: dict[str, Any], status: int) -> dict[str, str]:
    if code == "missing_token":
        return {"WWW-Authenticate": 'Bearer realm="portcullis"'}
    if code in ("invalid_token", "token_expired"):
        detail = _quoted(str(doc.get("detail") or ""))
        return {"WWW-Authenticate": f'Bearer realm="portcullis", error="invalid_token", error_description="{detail}"'}
    if code == "insufficient_scope":
        scope = _quoted(" ".join(doc.get("required_scopes") or []))
        return {"WWW-Authenticate": f'Bearer realm="portcullis", error="insufficient_scope", scope="{scope}"'}
    if status == 503:
        return {"Retry-After": "1"}
    return {}


async def problem_handler(request: Request, exc: Exception) -> Response:
    """Writes a :class:`ProblemException` as ``application/problem+json``."""
    assert isinstance(exc, ProblemException)
    return JSONResponse(
        exc.problem, status_code=exc.status_code, headers=exc.headers, media_type="application/problem+json"
    )


def _missing() -> PortcullisError:
    return PortcullisError(401, "missing_token", problem(401, "missing_token", "this needs a bearer token"))


class PortcullisAuth:
    """A FastAPI dependency checking ``Authorization: Bearer`` (offline, against the
    issuer's cached JWKS) or, with ``api_key_verifier_key``, ``X-API-Key`` (through
    ``POST /v1/api-keys/verify``, verdicts cached ``api_key_cache_ttl`` seconds).

    It is a plain (sync) dependency: FastAPI runs it in its thread pool, so the
    rare JWKS fetch or key check never blocks the event loop."""

    def __init__(
        self,
        issuer: str,
        audience: str | None = None,
        *,
        base_url: str | None = None,
        api_key_verifier_key: str | None = None,
        api_key_cache_ttl: float = 10.0,
        leeway: float = 30.0,
        refetch_interval: float = 5.0,
    ) -> None:
        self.tokens = TokenVerifier(
            issuer, audience, base_url=base_url, leeway=leeway, refetch_interval=refetch_interval
        )
        self.api_keys = (
            ApiKeyVerifier(self.tokens.server, api_key_verifier_key, ttl=api_key_cache_ttl)
            if api_key_verifier_key
            else None
        )

    def install(self, app: FastAPI) -> None:
        """Registers the problem-document handler on ``app``."""
        app.add_exception_handler(ProblemException, problem_handler)

    def authenticate(self, authorization: str | None, api_key: str | None) -> AuthContext:
        """The caller of a request with these headers, or :class:`PortcullisError`."""
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer":
                raise _missing()
            token = token.strip()
            if not token:
                raise PortcullisError(401, "invalid_token", problem(401, "invalid_token", "the bearer token is empty"))
            return auth_from_claims(self.tokens.verify(token))
        if self.api_keys is not None and api_key is not None:
            return self.api_keys.verify(api_key.strip())
        raise _missing()

    def __call__(self, request: Request) -> AuthContext:
        _ensure_handler(request)
        cached = getattr(request.state, "portcullis_auth", None)
        if isinstance(cached, AuthContext):
            return cached
        try:
            ctx = self.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"))
        except PortcullisError as err:
            raise ProblemException(err) from None
        request.state.portcullis_auth = ctx
        return ctx

    def require_scope(self, *scopes: str) -> Callable[..., AuthContext]:
        """A dependency: 401 without a valid credential, 403 ``insufficient_scope``
        naming the missing scopes unless it holds every one of ``scopes``."""

        def dependency(ctx: AuthContext = Depends(self)) -> AuthContext:  # noqa: B008
            lacking = [s for s in scopes if s not in ctx.scopes]
            if lacking:
                detail = f"this needs the scope(s): {' '.join(lacking)}"
                doc = problem(403, "insufficient_scope", detail, required_scopes=lacking)
                raise ProblemException(PortcullisError(403, "insufficient_scope", doc))
            return ctx

        return dependency


def _ensure_handler(request: Request) -> None:
    # Starlette's ExceptionMiddleware puts its (mutable) handler table in the scope;
    # registering there once makes every later refusal a bare problem document.
    # Without it (another framework layout), FastAPI's own handler still answers the
    # right status and headers, with the problem under "detail".
    handlers = request.scope.get("starlette.exception_handlers")
    if isinstance(handlers, tuple) and handlers and isinstance(handlers[0], dict):
        handlers[0].setdefault(ProblemException, problem_handler)
