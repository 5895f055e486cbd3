/**
 * Offline checks of Portcullis access tokens (RFC 9068 JWTs), with the same rules
 * as the Rust `portcullis-verify`: `typ: at+jwt`, RS256/ES256/EdDSA only (never
 * `none` or HMAC), `iss`, `aud` (the issuer unless told otherwise), `exp`/`nbf`
 * with leeway. Keys come from the issuer's JWKS, cached per URL by jose: a token
 * with an unknown `kid` refetches it (at most once per cooldown), so a key
 * rotation is picked up without a restart.
 */
import { createLocalJWKSet, createRemoteJWKSet, errors, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";

import { PortcullisError, problem } from "./errors.js";

/** The claims of a Portcullis access token. */
export interface AccessTokenClaims {
  iss: string;
  sub: string;
  aud: string;
  exp: number;
  iat: number;
  nbf: number;
  jti: string;
  /** The session, for user tokens. */
  sid?: string;
  /** The OAuth client the token was issued to. */
  client_id?: string;
  roles: string[];
  /** Space-separated granted permissions. */
  scope: string;
  amr?: string[];
  metadata?: unknown;
  [claim: string]: unknown;
}

export interface VerifyOptions {
  /** The server's `issuer` (e.g. `https://auth.example.com`); tokens must carry it as `iss`. */
  issuer: string;
  /** The `aud` tokens must carry (`tokens.audience` on the server); defaults to the issuer. */
  audience?: string;
  /** Allowed clock skew on `exp`/`nbf`, in seconds (default 30, the server's leeway). */
  clockTolerance?: number;
  /** Where to reach Portcullis when that is not the issuer URL (an internal address). */
  baseUrl?: string;
  /** How long fetched keys are used before they are fetched again (60 s, the server's Cache-Control). */
  jwksMaxAgeMs?: number;
  /** Least time between two JWKS fetches caused by unknown key ids or failures (5 s). */
  refetchIntervalMs?: number;
}

/** Algorithms Portcullis signs with; anything else is refused before any key is used. */
const ALGORITHMS = ["RS256", "ES256", "EdDSA"];

const keySets = new Map<string, JWTVerifyGetKey>();

function trimSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

/**
 * The cached JWKS of one server (one per URL and settings, for the life of the
 * process): jose's remote set (fetched keys kept `maxAgeMs`, one fetch for many
 * concurrent cold calls, unknown kids refetch at most every `refetchMs`), plus what
 * portcullis-verify does in an outage: when the keys cannot be fetched, the keys
 * fetched before keep working, and for `refetchMs` no call waits on a new attempt.
 */
export function jwks(server: string, maxAgeMs = 60_000, refetchMs = 5_000): JWTVerifyGetKey {
  const url = `${trimSlash(server)}/.well-known/jwks.json`;
  const id = `${url} ${maxAgeMs} ${refetchMs}`;
  let set = keySets.get(id);
  if (!set) {
    const remote = createRemoteJWKSet(new URL(url), {
      cacheMaxAge: maxAgeMs,
      cooldownDuration: refetchMs,
      timeoutDuration: 5_000,
    });
    let failedAt = -Infinity;
    let local: { keys: JSONWebKeySet; set: JWTVerifyGetKey } | undefined;
    const cached = (): JWTVerifyGetKey | undefined => {
      const keys = remote.jwks();
      if (!keys) return undefined;
      if (local?.keys !== keys) local = { keys, set: createLocalJWKSet(keys) };
      return local.set;
    };
    set = async (header, token) => {
      const fallback = cached();
      if (fallback && Date.now() - failedAt < refetchMs) return fallback(header, token);
      try {
        return await remote(header, token);
      } catch (err) {
        if (!fetchFailed(err) || !fallback) throw err;
        failedAt = Date.now();
        return fallback(header, token);
      }
    };
    keySets.set(id, set);
  }
  return set;
}

/** The JWKS could not be fetched (as opposed to a verdict on the token). */
function fetchFailed(err: unknown): boolean {
  return (
    !(err instanceof errors.JOSEError) ||
    err instanceof errors.JWKSTimeout ||
    err instanceof errors.JWKSInvalid ||
    err.code === "ERR_JOSE_GENERIC"
  );
}

/**
 * Checks an access token (without `Bearer `) and returns its claims. Throws a
 * `PortcullisError`: 401 `token_expired` or `invalid_token`, or 503 `overloaded`
 * when the keys cannot be fetched.
 */
export async function verifyToken(token: string, options: VerifyOptions): Promise<AccessTokenClaims> {
  const issuer = trimSlash(options.issuer);
  if (!/^https?:\/\//.test(issuer)) {
    throw new TypeError(`issuer must be an http(s) URL, got ${options.issuer}`);
  }
  try {
    const { payload } = await jwtVerify(token, jwks(options.baseUrl ?? issuer, options.jwksMaxAgeMs, options.refetchIntervalMs), {
      typ: "at+jwt",
      algorithms: ALGORITHMS,
      issuer,
      audience: options.audience ?? issuer,
      clockTolerance: options.clockTolerance ?? 30,
      requiredClaims: ["exp", "nbf", "iat", "iss", "aud", "sub"],
    });
    return payload as unknown as AccessTokenClaims;
  } catch (err) {
    throw toError(err);
  }
}

function invalid(detail: string, cause: unknown): PortcullisError {
  return new PortcullisError({ status: 401, code: "invalid_token", problem: problem(401, "invalid_token", detail), cause });
}

function toError(err: unknown): PortcullisError {
  if (err instanceof errors.JWTExpired) {
    const p = problem(401, "token_expired", "the credential has expired");
    return new PortcullisError({ status: 401, code: "token_expired", problem: p, cause: err });
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    const why: Record<string, string> = { iss: "wrong issuer", aud: "wrong audience", nbf: "token not yet valid" };
    return invalid(why[err.claim] ?? "invalid token", err);
  }
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) {
    return invalid("unknown signing key", err);
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return invalid("algorithm not allowed", err);
  if (err instanceof errors.JWSSignatureVerificationFailed) return invalid("bad signature", err);
  if (err instanceof errors.JWTInvalid || err instanceof errors.JWSInvalid || err instanceof errors.JOSENotSupported) {
    return invalid("invalid token", err);
  }
  if (fetchFailed(err)) {
    // The keys could not be fetched: not the caller's fault, and not a verdict.
    const p = problem(503, "overloaded", "credentials cannot be checked now; retry");
    return new PortcullisError({ status: 503, code: "overloaded", problem: p, cause: err });
  }
  return invalid("invalid token", err);
}
