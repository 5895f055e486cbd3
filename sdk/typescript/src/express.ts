/**
 * Express middleware: `requireAuth` checks `Authorization: Bearer` (offline, see
 * `verifyToken`) or, when enabled, `X-API-Key` (through `POST /v1/api-keys/verify`,
 * verdicts cached ~10 s by SHA-256 of the key), and sets `req.auth`;
 * `requireScope(...)` demands scopes. Refusals are answered as Portcullis answers:
 * RFC 9457 problem documents with `WWW-Authenticate` (RFC 6750 §3).
 */
import type { NextFunction, Request, RequestHandler, Response } from "express";

import { authFromClaims, type Auth } from "./auth.js";
import { PortcullisError, problem } from "./errors.js";
import { ApiKeyVerifier } from "./api-keys.js";
import { verifyToken } from "./verify.js";

export type { Auth } from "./auth.js";

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Set by `requireAuth` for an accepted credential. */
      auth?: Auth;
    }
  }
}

export interface RequireAuthOptions {
  /** The server's issuer URL; tokens must carry it as `iss`. */
  issuer: string;
  /** The `aud` tokens must carry; defaults to the issuer. */
  audience?: string;
  /** Clock skew allowed on `exp`/`nbf`, in seconds (default 30). */
  clockTolerance?: number;
  /** Where to reach Portcullis when not at the issuer URL. */
  baseUrl?: string;
  /** JWKS cache settings, as in `verifyToken` (60 s and 5 s). */
  jwksMaxAgeMs?: number;
  refetchIntervalMs?: number;
  /** Accept `X-API-Key`: keys are checked with this key, which must hold `api_keys:verify`. */
  apiKeys?: { verifierKey: string; cacheTtlMs?: number };
}

/** 401 unless the request carries a valid access token (or API key, when enabled). */
export function requireAuth(options: RequireAuthOptions): RequestHandler {
  const issuer = options.issuer.replace(/\/+$/, "");
  const server = (options.baseUrl ?? issuer).replace(/\/+$/, "");
  const keys = options.apiKeys ? new ApiKeyVerifier(server, options.apiKeys.verifierKey, options.apiKeys.cacheTtlMs) : undefined;
  return (req: Request, res: Response, next: NextFunction) => {
    authenticate(req).then(
      (auth) => {
        req.auth = auth;
        next();
      },
      (err: unknown) => refuse(res, err),
    );
  };

  async function authenticate(req: Request): Promise<Auth> {
    const header = req.headers.authorization;
    if (header !== undefined) {
      const space = header.indexOf(" ");
      const scheme = space < 0 ? header : header.slice(0, space);
      if (scheme.toLowerCase() !== "bearer") throw missing();
      const token = space < 0 ? "" : header.slice(space + 1).trim();
      if (!token) throw invalid("the bearer token is empty");
      const claims = await verifyToken(token, {
        issuer,
        audience: options.audience,
        clockTolerance: options.clockTolerance,
        baseUrl: server,
        jwksMaxAgeMs: options.jwksMaxAgeMs,
        refetchIntervalMs: options.refetchIntervalMs,
      });
      return authFromClaims(claims);
    }
    const key = req.headers["x-api-key"];
    if (keys && key !== undefined) {
      return keys.verify(String(Array.isArray(key) ? key[0] : key).trim());
    }
    throw missing();
  }
}

/** 403 `insufficient_scope` (naming the missing scopes) unless `req.auth` holds all of `scopes`. */
export function requireScope(...scopes: string[]): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    if (!req.auth) return refuse(res, missing());
    const granted = new Set(req.auth.scopes);
    const lacking = scopes.filter((s) => !granted.has(s));
    if (lacking.length === 0) return next();
    const detail = `this needs the scope(s): ${lacking.join(" ")}`;
    refuse(
      res,
      new PortcullisError({
        status: 403,
        code: "insufficient_scope",
        problem: problem(403, "insufficient_scope", detail, { required_scopes: lacking }),
      }),
    );
  };
}

function missing(): PortcullisError {
  return new PortcullisError({ status: 401, code: "missing_token", problem: problem(401, "missing_token", "this needs a bearer token") });
}

function invalid(detail: string): PortcullisError {
  return new PortcullisError({ status: 401, code: "invalid_token", problem: problem(401, "invalid_token", detail) });
}

/** Writes the refusal as a problem document, with the RFC 6750 challenge. */
export function refuse(res: Response, err: unknown): void {
  const e =
    err instanceof PortcullisError && err.problem
      ? err
      : new PortcullisError({ status: 500, code: "internal_error", problem: problem(500, "internal_error", "an internal error occurred") });
  const p = e.problem ?? problem(e.status, e.code, e.message);
  const quoted = (s: string) => s.replace(/["\\]/g, "'");
  if (e.code === "missing_token") {
    res.setHeader("WWW-Authenticate", 'Bearer realm="portcullis"');
  } else if (e.code === "invalid_token" || e.code === "token_expired") {
    res.setHeader("WWW-Authenticate", `Bearer realm="portcullis", error="invalid_token", error_description="${quoted(p.detail ?? "")}"`);
  } else if (e.code === "insufficient_scope") {
    const scope = (p.required_scopes ?? []).join(" ");
    res.setHeader("WWW-Authenticate", `Bearer realm="portcullis", error="insufficient_scope", scope="${quoted(scope)}"`);
  } else if (e.status === 503) {
    res.setHeader("Retry-After", "1");
  }
  res.status(e.status).type("application/problem+json").send(JSON.stringify(p));
}
