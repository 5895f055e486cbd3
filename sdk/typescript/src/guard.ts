/**
 * What every framework adapter shares: reading the credential of a request
 * (`Authorization: Bearer`, else `X-API-Key` when enabled), the scope check, and the
 * refusal as Portcullis writes it (RFC 9457 problem + RFC 6750 §3 challenge).
 */
import { ApiKeyVerifier } from "./api-keys.js";
import { authFromClaims, type Auth } from "./auth.js";
import { PortcullisError, problem, type Problem } from "./errors.js";
import { verifyToken } from "./verify.js";

export interface AuthOptions {
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

type Headers = Record<string, string | string[] | undefined>;

/** `(headers) => Auth`, throwing `PortcullisError` (401, or 503 when Portcullis cannot be asked). */
export function authenticator(options: AuthOptions): (headers: Headers) => Promise<Auth> {
  const issuer = options.issuer.replace(/\/+$/, "");
  const server = (options.baseUrl ?? issuer).replace(/\/+$/, "");
  const { apiKeys } = options;
  const keys = apiKeys ? new ApiKeyVerifier(server, apiKeys.verifierKey, apiKeys.cacheTtlMs) : undefined;
  return async (headers) => {
    const header = first(headers.authorization);
    if (header !== undefined) {
      const space = header.indexOf(" ");
      const scheme = space < 0 ? header : header.slice(0, space);
      if (scheme.toLowerCase() !== "bearer") throw missing();
      const token = space < 0 ? "" : header.slice(space + 1).trim();
      if (!token) throw refusal401("invalid_token", "the bearer token is empty");
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
    const key = first(headers["x-api-key"]);
    if (keys && key !== undefined) return keys.verify(key.trim());
    throw missing();
  };
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

export function missing(): PortcullisError {
  return refusal401("missing_token", "this needs a bearer token");
}

function refusal401(code: string, detail: string): PortcullisError {
  return new PortcullisError({ status: 401, code, problem: problem(401, code, detail) });
}

/** `undefined` when `auth` holds every scope, else the 403 `insufficient_scope` naming the missing ones. */
export function scopeRefusal(auth: Auth | undefined, scopes: string[]): PortcullisError | undefined {
  if (!auth) return missing();
  const granted = new Set(auth.scopes);
  const lacking = scopes.filter((s) => !granted.has(s));
  if (lacking.length === 0) return undefined;
  const detail = `this needs the scope(s): ${lacking.join(" ")}`;
  return new PortcullisError({
    status: 403,
    code: "insufficient_scope",
    problem: problem(403, "insufficient_scope", detail, { required_scopes: lacking }),
  });
}

/** The answer to a refusal: status, headers and the problem document. */
export function refusalResponse(err: unknown): { status: number; headers: Record<string, string>; body: Problem } {
  const e =
    err instanceof PortcullisError && err.problem
      ? err
      : new PortcullisError({ status: 500, code: "internal_error", problem: problem(500, "internal_error", "an internal error occurred") });
  const p = e.problem ?? problem(e.status, e.code, e.message);
  const quoted = (s: string) => s.replace(/["\\]/g, "'");
  const headers: Record<string, string> = { "content-type": "application/problem+json" };
  if (e.code === "missing_token") {
    headers["www-authenticate"] = 'Bearer realm="portcullis"';
  } else if (e.code === "invalid_token" || e.code === "token_expired") {
    headers["www-authenticate"] = `Bearer realm="portcullis", error="invalid_token", error_description="${quoted(p.detail ?? "")}"`;
  } else if (e.code === "insufficient_scope") {
    const scope = (p.required_scopes ?? []).join(" ");
    headers["www-authenticate"] = `Bearer realm="portcullis", error="insufficient_scope", scope="${quoted(scope)}"`;
  } else if (e.status === 503) {
    headers["retry-after"] = "1";
  }
  return { status: e.status, headers, body: p };
}
