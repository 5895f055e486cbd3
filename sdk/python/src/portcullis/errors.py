"""The one error type of the SDK: a non-2xx answer from Portcullis (an RFC 9457
problem document, or an RFC 6749 §5.2 OAuth error from ``/oauth/*``), or a
credential refused by :func:`portcullis.verify_token` / the FastAPI dependency."""

from __future__ import annotations

import json
from typing import Any, Mapping

import httpx

__all__ = ["PortcullisError", "problem"]

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class PortcullisError(Exception):
    """A refused call or credential.

    ``status`` is the HTTP status (0 when no answer came, e.g. a refresh lost on the
    network), ``code`` the problem's ``code`` (or the OAuth ``error``), ``problem``
    the parsed problem document when the answer was one.
    """

    status: int
    code: str
    problem: dict[str, Any] | None
    error: str | None
    error_description: str | None
    response: httpx.Response | None

    def __init__(
        self,
        status: int,
        code: str,
        problem: Mapping[str, Any] | None = None,
        *,
        message: str | None = None,
        error: str | None = None,
        error_description: str | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.problem = dict(problem) if problem is not None else None
        self.error = error
        self.error_description = error_description
        self.response = response
        detail = self.problem.get("detail") if self.problem else None
        text = message or (detail if isinstance(detail, str) else None) or error_description or code
        super().__init__(f"{status} {code}: {text}" if text != code else f"{status} {code}")

    @property
    def required_scopes(self) -> list[str]:
        """With ``insufficient_scope``: the scopes that would have allowed the call."""
        scopes = (self.problem or {}).get("required_scopes")
        return [s for s in scopes if isinstance(s, str)] if isinstance(scopes, list) else []

    @classmethod
    def from_response(cls, res: httpx.Response) -> PortcullisError:
        """Reads a non-2xx answer (its body must have been read) into an error."""
        try:
            body: Any = json.loads(res.content) if res.content else None
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            return cls(res.status_code, body["code"], body, response=res)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            desc = body.get("error_description")
            return cls(
                res.status_code,
                body["error"],
                error=body["error"],
                error_description=desc if isinstance(desc, str) else None,
                response=res,
            )
        text = res.text[:200] if res.content else ""
        return cls(
            res.status_code,
            f"http_{res.status_code}",
            message=f"HTTP {res.status_code}{': ' + text if text else ''}",
            response=res,
        )


def problem(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem document shaped like the server's (``type`` is the code's URL)."""
    doc: dict[str, Any] = {
        "type": f"https://portcullis.dev/problems/{code.replace('_', '-')}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    doc.update(extra)
    return doc
