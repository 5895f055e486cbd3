/**
 * Express middleware: `requireAuth` checks `Authorization: Bearer` (offline, see
 * `verifyToken`) or, when enabled, `X-API-Key` (through `POST /v1/api-keys/verify`,
 * verdicts cached ~10 s by SHA-256 of the key), and sets `req.auth`;
 * `requireScope(...)` demands scopes. Refusals are answered as Portcullis answers:
 * RFC 9457 problem documents with `WWW-Authenticate` (RFC 6750 §3).
 */
import type { NextFunction, Request, RequestHandler, Response } from "express";

import type { Auth } from "./auth.js";
import { authenticator, refusalResponse, scopeRefusal, type AuthOptions } from "./guard.js";

export type { Auth } from "./auth.js";
export type { AuthOptions as RequireAuthOptions } from "./guard.js";

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Set by `requireAuth` for an accepted credential. */
      auth?: Auth;
    }
  }
}

/** 401 unless the request carries a valid access token (or API key, when enabled); sets `req.auth`. */
export function requireAuth(options: AuthOptions): RequestHandler {
  const authenticate = authenticator(options);
  return (req: Request, res: Response, next: NextFunction) => {
    authenticate(req.headers).then(
      (auth) => {
        req.auth = auth;
        next();
      },
      (err: unknown) => refuse(res, err),
    );
  };
}

/** 403 `insufficient_scope` (naming the missing scopes) unless `req.auth` holds all of `scopes`. */
export function requireScope(...scopes: string[]): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const refusal = scopeRefusal(req.auth, scopes);
    if (refusal) refuse(res, refusal);
    else next();
  };
}

/** Writes a refusal (a `PortcullisError` from this SDK) as a problem document. */
export function refuse(res: Response, err: unknown): void {
  const { status, headers, body } = refusalResponse(err);
  res.status(status).set(headers).send(JSON.stringify(body));
}
