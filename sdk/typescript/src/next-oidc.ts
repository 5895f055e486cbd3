/**
 * The OpenID Connect relying party behind the Next.js session: a confidential client
 * (`client_secret_basic`, RFC 6749 §2.3.1) running the code flow with S256 PKCE
 * (RFC 7636), `state` and `nonce`; the ID token checked as OIDC Core §3.1.3.7 asks
 * (signature from the JWKS, `iss`, `aud`, `azp`, `nonce`, `exp`); refresh (RFC 6749
 * §6) shared by concurrent callers, revocation (RFC 7009) and userinfo.
 */
import { createRemoteJWKSet, decodeJwt, jwtVerify, type JWTVerifyGetKey } from "jose";

import { PortcullisError, isObject, problem } from "./errors.js";
import { sha256 } from "./next-cookies.js";
import type { AccessTokenClaims } from "./verify.js";

/** Settings of the Next.js session; each defaults to its `PORTCULLIS_*` variable. */
export interface SessionConfig {
  /** `PORTCULLIS_ISSUER`: the Portcullis issuer URL. */
  issuer: string;
  /** `PORTCULLIS_CLIENT_ID`: the confidential client registered for this app. */
  clientId: string;
  /** `PORTCULLIS_CLIENT_SECRET`. */
  clientSecret: string;
  /** `PORTCULLIS_BASE_URL`: this app's own URL, e.g. `https://app.example.com`. */
  baseUrl: string;
  /** `PORTCULLIS_SESSION_SECRET`: 32 characters or more; a list rotates (the first seals). */
  secret: string | string[];
  /** `PORTCULLIS_SCOPE`: scopes asked for (default `openid profile email offline_access`). */
  scope?: string;
  /** Where the auth routes are mounted (default `/api/auth`). */
  basePath?: string;
  /** Where logout returns to, a path of this app (default `/`); register `${baseUrl}${it}` at Portcullis. */
  postLogoutRedirect?: string;
  /** Seconds the session cookie lives without a refresh (default 30 days, the server's `tokens.refresh_ttl`). */
  maxAge?: number;
}

export interface ResolvedConfig {
  issuer: string;
  clientId: string;
  clientSecret: string;
  baseUrl: string;
  origin: string;
  secrets: string[];
  scope: string;
  basePath: string;
  postLogoutRedirect: string;
  maxAge: number;
  redirectUri: string;
}

const trim = (s: string) => s.replace(/\/+$/, "");

/** `config` completed from the environment; throws naming what is missing. */
export function resolveConfig(config: Partial<SessionConfig> = {}): ResolvedConfig {
  const env: Record<string, string | undefined> = typeof process === "undefined" ? {} : process.env;
  const pick = (v: string | undefined, name: string): string => {
    const value = v ?? env[name];
    if (!value) throw new Error(`@portcullis/sdk/next: set ${name} or pass it to the session config`);
    return value;
  };
  const issuer = trim(pick(config.issuer, "PORTCULLIS_ISSUER"));
  const baseUrl = trim(pick(config.baseUrl, "PORTCULLIS_BASE_URL"));
  const secret = config.secret ?? pick(undefined, "PORTCULLIS_SESSION_SECRET");
  const secrets = (Array.isArray(secret) ? secret : [secret]).filter(Boolean);
  const basePath = trim(config.basePath ?? "/api/auth");
  const origin = new URL(baseUrl).origin;
  return {
    issuer,
    clientId: pick(config.clientId, "PORTCULLIS_CLIENT_ID"),
    clientSecret: pick(config.clientSecret, "PORTCULLIS_CLIENT_SECRET"),
    baseUrl,
    origin,
    secrets,
    scope: config.scope ?? env.PORTCULLIS_SCOPE ?? "openid profile email offline_access",
    basePath,
    postLogoutRedirect: config.postLogoutRedirect ?? "/",
    maxAge: config.maxAge ?? 30 * 86_400,
    redirectUri: `${baseUrl}${basePath}/callback`,
  };
}

/** Whether a session can be configured from `config` and the environment. */
export function sessionConfigured(config: Partial<SessionConfig> = {}): boolean {
  const env: Record<string, string | undefined> = typeof process === "undefined" ? {} : process.env;
  return Boolean(config.secret ?? env.PORTCULLIS_SESSION_SECRET);
}

/** The discovery document fields the session uses. */
export interface Metadata {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  jwks_uri: string;
  userinfo_endpoint?: string;
  revocation_endpoint?: string;
  end_session_endpoint?: string;
  authorization_response_iss_parameter_supported?: boolean;
}

/** What the token endpoint answered. */
export interface TokenSet {
  access_token: string;
  refresh_token?: string;
  id_token?: string;
  expires_in?: number;
  scope?: string;
}

/** Process-wide state, on `globalThis` so the proxy and the app bundles of one process share it. */
interface Shared {
  metadata: Map<string, { at: number; value: Promise<Metadata> }>;
  jwks: Map<string, JWTVerifyGetKey>;
  refreshes: Map<string, Flight>;
  /** Sessions signed out here (sid → until when, ms): a copy of their cookie is refused. */
  ended: Map<string, number>;
}
const SHARED = Symbol.for("@portcullis/sdk/next");
function shared(): Shared {
  const g = globalThis as unknown as Record<symbol, Shared | undefined>;
  let s = g[SHARED];
  if (!s) {
    s = { metadata: new Map(), jwks: new Map(), refreshes: new Map(), ended: new Map() };
    g[SHARED] = s;
  }
  return s;
}

const DISCOVERY_TTL_MS = 3_600_000;
const TIMEOUT_MS = 10_000;

function unavailable(detail: string, cause?: unknown): PortcullisError {
  return new PortcullisError({ status: 503, code: "overloaded", problem: problem(503, "overloaded", detail), cause });
}

/** `${issuer}/.well-known/openid-configuration`, cached for an hour (a failure is not cached). */
export function discover(issuer: string): Promise<Metadata> {
  const cache = shared().metadata;
  const hit = cache.get(issuer);
  if (hit && Date.now() - hit.at < DISCOVERY_TTL_MS) return hit.value;
  const value = (async () => {
    let res: Response;
    try {
      res = await fetch(`${issuer}/.well-known/openid-configuration`, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    } catch (err) {
      throw unavailable("Portcullis cannot be reached", err);
    }
    if (!res.ok) throw unavailable(`discovery answered ${res.status}`);
    const meta = (await res.json()) as Metadata;
    // OIDC Discovery §4.3: the document must be the issuer's own.
    if (trim(meta.issuer) !== issuer) throw new Error(`discovery issuer ${meta.issuer} is not ${issuer}`);
    return meta;
  })();
  cache.set(issuer, { at: Date.now(), value });
  value.catch(() => cache.delete(issuer));
  return value;
}

function basic(config: ResolvedConfig): string {
  // RFC 6749 §2.3.1: both halves form-encoded before base64.
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, "+");
  return `Basic ${btoa(`${enc(config.clientId)}:${enc(config.clientSecret)}`)}`;
}

/** A form POST to an endpoint with the client's credentials; the parsed JSON, or throws. */
async function post(config: ResolvedConfig, url: string, form: Record<string, string>): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { authorization: basic(config), "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
      body: new URLSearchParams(form).toString(),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
  } catch (err) {
    throw unavailable("Portcullis cannot be reached", err);
  }
  if (!res.ok) throw await PortcullisError.fromResponse(res);
  const text = await res.text();
  return text ? (JSON.parse(text) as unknown) : {};
}

function tokenSet(body: unknown): TokenSet {
  if (!isObject(body) || typeof body.access_token !== "string") throw new Error("the token endpoint answered no access_token");
  return body as unknown as TokenSet;
}

/** RFC 6749 §4.1.3 with the PKCE verifier. */
export async function exchangeCode(config: ResolvedConfig, code: string, verifier: string): Promise<TokenSet> {
  const meta = await discover(config.issuer);
  return tokenSet(
    await post(config, meta.token_endpoint, {
      grant_type: "authorization_code",
      code,
      redirect_uri: config.redirectUri,
      code_verifier: verifier,
    }),
  );
}

const ALGORITHMS = ["RS256", "ES256", "EdDSA"];

/** OIDC Core §3.1.3.7; returns the ID token's claims. */
export async function verifyIdToken(config: ResolvedConfig, idToken: string, nonce: string): Promise<Record<string, unknown>> {
  const meta = await discover(config.issuer);
  const cache = shared().jwks;
  let keys = cache.get(meta.jwks_uri);
  if (!keys) {
    keys = createRemoteJWKSet(new URL(meta.jwks_uri), { timeoutDuration: 5_000 });
    cache.set(meta.jwks_uri, keys);
  }
  const { payload } = await jwtVerify(idToken, keys, {
    issuer: config.issuer,
    audience: config.clientId,
    algorithms: ALGORITHMS,
    clockTolerance: 30,
    requiredClaims: ["sub", "exp", "iat"],
  });
  if (payload.nonce !== nonce) throw new Error("the ID token's nonce is not the one sent");
  const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
  if ((aud.length > 1 || payload.azp !== undefined) && payload.azp !== config.clientId) {
    throw new Error("the ID token's azp is not this client");
  }
  return payload;
}

/** The claims of an access token we received from the token endpoint ourselves. */
export function accessClaims(accessToken: string): AccessTokenClaims | null {
  try {
    return decodeJwt(accessToken) as AccessTokenClaims;
  } catch {
    return null;
  }
}

/** Why a refresh ended the session (`invalid_grant`): the refresh token is no good. */
export class SessionEnded extends Error {
  override name = "SessionEnded";
}

interface Flight {
  promise: Promise<TokenSet>;
  settledAt?: number;
}

/**
 * How long the outcome of a refresh is kept for the refresh token it consumed. A
 * refresh token works once (a second use revokes the grant), so a request that
 * still carries the old cookie (sent before the browser got the rotated one, or
 * after a server component could not write it) gets the same rotated tokens
 * instead of presenting the spent token again.
 */
const OUTCOME_TTL_MS = 5 * 60_000;
const MAX_FLIGHTS = 10_000;

function prune(flights: Map<string, Flight>, now: number): void {
  for (const [k, f] of flights) {
    if (f.settledAt !== undefined && now - f.settledAt >= OUTCOME_TTL_MS) flights.delete(k);
  }
  // Past the cap, the oldest settled outcomes go first (a Map iterates in insertion order).
  for (const [k, f] of flights) {
    if (flights.size < MAX_FLIGHTS) break;
    if (f.settledAt !== undefined) flights.delete(k);
  }
}

/**
 * RFC 6749 §6, once per refresh token in this process: concurrent callers share one
 * request, later callers with the same (now spent) token its outcome. Throws
 * `SessionEnded` when Portcullis refused the token, `PortcullisError` 503 when it
 * could not be asked (not remembered: the next call tries again).
 */
export async function refreshOnce(config: ResolvedConfig, refreshToken: string): Promise<TokenSet> {
  const flights = shared().refreshes;
  const key = `${config.issuer} ${config.clientId} ${await sha256(refreshToken)}`;
  const now = Date.now();
  const hit = flights.get(key);
  if (hit && (hit.settledAt === undefined || now - hit.settledAt < OUTCOME_TTL_MS)) return hit.promise;
  prune(flights, now);
  const flight: Flight = {
    promise: (async () => {
      const meta = await discover(config.issuer);
      try {
        const set = tokenSet(
          await post(config, meta.token_endpoint, { grant_type: "refresh_token", refresh_token: refreshToken }),
        );
        return set;
      } catch (err) {
        if (err instanceof PortcullisError && (err.code === "invalid_grant" || err.code === "invalid_client")) {
          throw new SessionEnded(err.error_description ?? err.code, { cause: err });
        }
        throw err;
      }
    })(),
  };
  flights.set(key, flight);
  flight.promise.then(
    () => {
      flight.settledAt = Date.now();
    },
    (err: unknown) => {
      // A verdict is remembered like a success; an outage is not.
      if (err instanceof SessionEnded) flight.settledAt = Date.now();
      else flights.delete(key);
    },
  );
  return flight.promise;
}

/**
 * Remembers that session `sid` was signed out in this process until `untilMs` (its
 * access token's expiry: after it, the revoked refresh token ends any copy of the
 * cookie anyway). Without it, a copy of the cookie taken before logout would look
 * signed in here until then.
 */
export function markEnded(sid: string, untilMs: number): void {
  const ended = shared().ended;
  const now = Date.now();
  for (const [k, until] of ended) if (until <= now) ended.delete(k);
  if (ended.size >= MAX_FLIGHTS) return;
  ended.set(sid, untilMs);
}

export function isEnded(sid: string): boolean {
  const until = shared().ended.get(sid);
  return until !== undefined && until > Date.now();
}

/** RFC 7009: ends the grant behind `token`. Best effort: a failure is returned, not thrown. */
export async function revoke(config: ResolvedConfig, token: string, hint: "refresh_token" | "access_token"): Promise<boolean> {
  try {
    const meta = await discover(config.issuer);
    if (!meta.revocation_endpoint) return false;
    await post(config, meta.revocation_endpoint, { token, token_type_hint: hint });
    return true;
  } catch {
    return false;
  }
}

/**
 * `/oauth/userinfo` for `accessToken`; `null` when it cannot be had, `"refused"`
 * when Portcullis refused the token (401: the session ended there).
 */
export async function userinfo(config: ResolvedConfig, accessToken: string): Promise<Record<string, unknown> | null | "refused"> {
  try {
    const meta = await discover(config.issuer);
    if (!meta.userinfo_endpoint) return null;
    const res = await fetch(meta.userinfo_endpoint, {
      headers: { authorization: `Bearer ${accessToken}`, accept: "application/json" },
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    if (res.status === 401) return "refused";
    if (!res.ok) return null;
    const body = (await res.json()) as unknown;
    return isObject(body) ? body : null;
  } catch {
    return null;
  }
}
