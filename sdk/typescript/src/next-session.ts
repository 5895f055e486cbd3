/**
 * Sessions for Next.js (App Router) with the tokens kept on the server: the app is a
 * confidential OpenID Connect client of Portcullis, and the browser holds only a
 * sealed cookie (see `next-cookies.ts`) that it cannot read.
 *
 * - `handleAuth()` → `{ GET, POST }` for `app/api/auth/[...portcullis]/route.ts`:
 *   `login`, `callback`, `logout` and `session` (the JSON the `@portcullis/react`
 *   provider reads in server mode; never a token).
 * - `auth()` in server components, route handlers and server actions.
 * - `loadSession()` for the middleware and `withAuth` (`next.ts`).
 *
 * Refresh: an access token with less than 30 s left (or half its lifetime, when it
 * lives less than a minute) is renewed with the refresh token before use, once per
 * refresh token in the process (`refreshOnce`). Server components cannot set
 * cookies, so the rotated cookie is written by the middleware, route handlers and
 * server actions; run `portcullisMiddleware` in front of pages that call `auth()`.
 */
import { refusalResponse } from "./guard.js";
import { PortcullisError, problem } from "./errors.js";
import {
  Sealer,
  base64url,
  parseCookies,
  randomToken,
  readChunked,
  serializeCookie,
  writeChunked,
  type CookieJar,
  type CookieWrite,
} from "./next-cookies.js";
import {
  SessionEnded,
  accessClaims,
  discover,
  exchangeCode,
  isEnded,
  markEnded,
  refreshOnce,
  resolveConfig,
  revoke,
  userinfo,
  verifyIdToken,
  type ResolvedConfig,
  type SessionConfig,
  type TokenSet,
} from "./next-oidc.js";
import type { AccessTokenClaims } from "./verify.js";

export type { SessionConfig } from "./next-oidc.js";

/** What the session cookie holds. */
interface Stored {
  /** Access token. */
  at: string;
  /** Refresh token (absent without `offline_access`). */
  rt?: string;
  /** ID token, for `id_token_hint` at logout. */
  idt?: string;
  sub: string;
}

/** What the transaction cookie holds between `login` and `callback`. */
interface Transaction {
  state: string;
  nonce: string;
  verifier: string;
  returnTo: string;
}

/** Sign-in must finish within this many seconds of `login`. */
const TRANSACTION_TTL = 600;

/** One configured session: settings, sealers and cookie names. */
export class SessionKit {
  readonly sessions: Sealer;
  readonly transactions: Sealer;
  /** `__Host-` (no Domain, Path=/, Secure: no subdomain can plant it) when the app is on https. */
  readonly cookieName: string;
  readonly txPrefix: string;

  constructor(readonly config: ResolvedConfig) {
    this.sessions = new Sealer(config.secrets, "portcullis next session v1");
    this.transactions = new Sealer(config.secrets, "portcullis next transaction v1");
    const prefix = config.baseUrl.startsWith("https:") ? "__Host-" : "";
    this.cookieName = `${prefix}portcullis_session`;
    this.txPrefix = `${prefix}portcullis_tx.`;
  }
}

const kits = new Map<string, SessionKit>();

/** The kit for `config` completed from the environment (read at first use, not at import). */
export function sessionKit(config: Partial<SessionConfig> = {}): SessionKit {
  const resolved = resolveConfig(config);
  const id = JSON.stringify(resolved);
  let kit = kits.get(id);
  if (!kit) {
    kit = new SessionKit(resolved);
    kits.set(id, kit);
  }
  return kit;
}

/** The signed-in session of a request, as the SDK hands it out. */
export interface Session {
  userId: string;
  sessionId: string | null;
  claims: AccessTokenClaims;
  /** Kept inside the SDK: never send it to the browser. */
  accessToken: string;
}

/** A loaded session and the cookie writes that must reach the browser. */
export interface Loaded {
  session: Session | null;
  writes: CookieWrite[];
}

const now = () => Date.now() / 1000;

/** Seconds before expiry at which the access token is renewed: 30, or half the lifetime of a shorter-lived token. */
export function renewWithin(claims: AccessTokenClaims): number {
  const lifetime = claims.exp - (claims.iat ?? claims.exp);
  return Math.min(30, Math.max(1, lifetime / 2));
}

function toSession(stored: Stored): Session | null {
  const claims = accessClaims(stored.at);
  if (!claims || typeof claims.exp !== "number" || claims.sub !== stored.sub) return null;
  return { userId: claims.sub, sessionId: claims.sid ?? null, claims, accessToken: stored.at };
}

async function sealWrites(kit: SessionKit, jar: CookieJar, stored: Stored | undefined): Promise<CookieWrite[]> {
  const { maxAge } = kit.config;
  const value = stored === undefined ? undefined : await kit.sessions.seal(kit.cookieName, stored, now() + maxAge);
  return writeChunked(jar, kit.cookieName, value, maxAge);
}

/**
 * The session in `jar`, renewed first when its access token is (nearly) expired.
 * A refused refresh signs out (the cookie is cleared); when Portcullis cannot be
 * asked, a still valid access token is used, else `PortcullisError` 503 is thrown.
 */
export async function loadSession(kit: SessionKit, jar: CookieJar): Promise<Loaded> {
  const raw = readChunked(jar, kit.cookieName);
  if (raw === undefined) return { session: null, writes: [] };
  const stored = await kit.sessions.open<Stored>(kit.cookieName, raw);
  const current = stored && toSession(stored);
  // Unreadable (another secret, tampered, expired) or signed out here: clear it.
  if (!stored || !current || (current.sessionId && isEnded(current.sessionId))) return { session: null, writes: await sealWrites(kit, jar, undefined) };
  const left = current.claims.exp - now();
  if (left >= renewWithin(current.claims)) return { session: current, writes: [] };
  if (!stored.rt) {
    return left > 0 ? { session: current, writes: [] } : { session: null, writes: await sealWrites(kit, jar, undefined) };
  }
  let set: TokenSet;
  try {
    set = await refreshOnce(kit.config, stored.rt);
  } catch (err) {
    if (err instanceof SessionEnded) return { session: null, writes: await sealWrites(kit, jar, undefined) };
    if (left > 0) return { session: current, writes: [] };
    throw err;
  }
  const next: Stored = { at: set.access_token, rt: set.refresh_token ?? stored.rt, idt: set.id_token ?? stored.idt, sub: stored.sub };
  const session = toSession(next);
  // A token for someone else is not this session's.
  if (!session) return { session: null, writes: await sealWrites(kit, jar, undefined) };
  return { session, writes: await sealWrites(kit, jar, next) };
}

// ---------------------------------------------------------------------------
// Responses

function respond(status: number, body: unknown, writes: CookieWrite[], extra: Record<string, string> = {}): Response {
  const headers = new Headers({ "cache-control": "no-store", ...extra });
  if (body !== undefined && !headers.has("content-type")) headers.set("content-type", "application/json");
  for (const w of writes) headers.append("set-cookie", serializeCookie(w));
  return new Response(body === undefined ? null : JSON.stringify(body), { status, headers });
}

function redirect(location: string, writes: CookieWrite[], status = 302): Response {
  return respond(status, undefined, writes, { location });
}

function problemResponse(status: number, code: string, detail: string, writes: CookieWrite[] = []): Response {
  const titles: Record<number, string> = { 400: "Bad Request", 502: "Bad Gateway" };
  const body = problem(status, code, detail, titles[status] ? { title: titles[status] } : {});
  return respond(status, body, writes, { "content-type": "application/problem+json" });
}

function errorResponse(err: unknown, writes: CookieWrite[] = []): Response {
  const { status, headers, body } = refusalResponse(err);
  return respond(status, body, writes, headers);
}

/** `cookies` with `writes` applied: what the next handler of this request should see. */
export function applyWrites(jar: CookieJar, writes: CookieWrite[]): CookieJar {
  const out = new Map(jar);
  for (const w of writes) {
    if (w.maxAge <= 0) out.delete(w.name);
    else out.set(w.name, w.value);
  }
  return out;
}

export function cookieHeader(jar: CookieJar): string {
  return [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
}

/** Adds `writes` to a response (copying it when its headers are immutable). */
export function withCookies(res: Response, writes: CookieWrite[]): Response {
  if (writes.length === 0) return res;
  try {
    for (const w of writes) res.headers.append("set-cookie", serializeCookie(w));
    return res;
  } catch {
    const copy = new Response(res.body, { status: res.status, statusText: res.statusText, headers: res.headers });
    for (const w of writes) copy.headers.append("set-cookie", serializeCookie(w));
    return copy;
  }
}

// ---------------------------------------------------------------------------
// The route handlers

/**
 * `returnTo` if it is a path of this app, else `/`: only same-origin relative paths
 * are followed after sign-in, so the login route cannot be used as an open
 * redirect (`//evil.example`, `/\evil.example`, `https://evil.example`, …).
 */
export function safeReturnTo(returnTo: string | null | undefined, config: ResolvedConfig): string {
  if (!returnTo || !returnTo.startsWith("/") || returnTo.startsWith("//") || /[\\\u0000-\u001f\u007f]/.test(returnTo)) {
    return "/";
  }
  try {
    const url = new URL(returnTo, config.origin);
    if (url.origin !== config.origin) return "/";
    return `${url.pathname}${url.search}${url.hash}`;
  } catch {
    return "/";
  }
}

function sameString(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

async function login(kit: SessionKit, request: Request, jar: CookieJar): Promise<Response> {
  const { config } = kit;
  const url = new URL(request.url);
  const meta = await discover(config.issuer);
  const tx: Transaction = {
    state: randomToken(32),
    nonce: randomToken(32),
    verifier: randomToken(32),
    returnTo: safeReturnTo(url.searchParams.get("returnTo"), config),
  };
  const challenge = base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(tx.verifier))));
  const authorize = new URL(meta.authorization_endpoint);
  const params: Record<string, string> = {
    response_type: "code",
    client_id: config.clientId,
    redirect_uri: config.redirectUri,
    scope: config.scope,
    state: tx.state,
    nonce: tx.nonce,
    code_challenge: challenge,
    code_challenge_method: "S256",
  };
  for (const pass of ["prompt", "login_hint", "max_age"]) {
    const v = url.searchParams.get(pass);
    if (v) params[pass] = v;
  }
  for (const [k, v] of Object.entries(params)) authorize.searchParams.set(k, v);
  const name = `${kit.txPrefix}${tx.state}`;
  const writes: CookieWrite[] = [
    { name, value: await kit.transactions.seal(name, tx, now() + TRANSACTION_TTL), maxAge: TRANSACTION_TTL },
  ];
  // Each sign-in in progress has its own cookie (two tabs may sign in at once);
  // abandoned ones expire, and past a few the oldest are dropped.
  const pending = [...jar.keys()].filter((n) => n.startsWith(kit.txPrefix));
  for (const n of pending.slice(0, Math.max(0, pending.length - 3))) writes.push({ name: n, value: "", maxAge: 0 });
  return redirect(authorize.href, writes);
}

async function callback(kit: SessionKit, request: Request, jar: CookieJar): Promise<Response> {
  const { config } = kit;
  const url = new URL(request.url);
  const state = url.searchParams.get("state") ?? "";
  const name = `${kit.txPrefix}${state}`;
  const valid = /^[A-Za-z0-9_-]{32,64}$/.test(state);
  const tx = valid ? await kit.transactions.open<Transaction>(name, jar.get(name)) : undefined;
  // The transaction works once, whatever happens next.
  const writes: CookieWrite[] = valid && jar.has(name) ? [{ name, value: "", maxAge: 0 }] : [];
  // RFC 6749 §10.12: a callback this browser did not start (login CSRF) stops here.
  if (!tx || !sameString(tx.state, state)) {
    return problemResponse(400, "invalid_state", "this sign-in was not started here, or it expired: sign in again", writes);
  }
  const error = url.searchParams.get("error");
  if (error) {
    const desc = url.searchParams.get("error_description");
    return problemResponse(400, error.replace(/[^a-z_]/g, "") || "access_denied", desc ?? "sign-in did not complete", writes);
  }
  const meta = await discover(config.issuer);
  // RFC 9207: the answer must come from our issuer (stops a mix-up with another server).
  const iss = url.searchParams.get("iss");
  if ((iss !== null || meta.authorization_response_iss_parameter_supported) && iss !== config.issuer) {
    return problemResponse(400, "invalid_issuer", "the sign-in answer is not from this app's issuer", writes);
  }
  const code = url.searchParams.get("code");
  if (!code) return problemResponse(400, "invalid_request", "the callback has no code", writes);
  let tokens: TokenSet;
  try {
    tokens = await exchangeCode(config, code, tx.verifier);
  } catch (err) {
    if (err instanceof PortcullisError && err.status === 503) return errorResponse(err, writes);
    const why = err instanceof PortcullisError ? err.code : "token_exchange_failed";
    return problemResponse(400, "invalid_grant", `the code could not be exchanged (${why}): sign in again`, writes);
  }
  if (!tokens.id_token) return problemResponse(502, "invalid_id_token", "Portcullis sent no ID token (is `openid` in the scope?)", writes);
  let idClaims: Record<string, unknown>;
  try {
    idClaims = await verifyIdToken(config, tokens.id_token, tx.nonce);
  } catch (err) {
    const detail = err instanceof Error ? err.message : "invalid";
    return problemResponse(400, "invalid_id_token", `the ID token was refused: ${detail}`, writes);
  }
  const stored: Stored = { at: tokens.access_token, rt: tokens.refresh_token, idt: tokens.id_token, sub: String(idClaims.sub) };
  if (!toSession(stored)) {
    return problemResponse(400, "invalid_id_token", "the access token and the ID token are not about the same user", writes);
  }
  writes.push(...(await sealWrites(kit, jar, stored)));
  return redirect(`${config.baseUrl}${tx.returnTo}`, writes);
}

async function logout(kit: SessionKit, request: Request, jar: CookieJar): Promise<Response> {
  const { config } = kit;
  const raw = readChunked(jar, kit.cookieName);
  const stored = raw === undefined ? undefined : await kit.sessions.open<Stored>(kit.cookieName, raw);
  // Revoking the refresh token ends the grant and its access tokens (RFC 7009 §2.1).
  if (stored?.rt) await revoke(config, stored.rt, "refresh_token");
  else if (stored?.at) await revoke(config, stored.at, "access_token");
  const ended = stored && toSession(stored);
  if (ended?.sessionId) markEnded(ended.sessionId, ended.claims.exp * 1000);
  const writes = await sealWrites(kit, jar, undefined);
  const status = request.method === "POST" ? 303 : 302;
  const back = `${config.baseUrl}${safeReturnTo(config.postLogoutRedirect, config)}`;
  const meta = stored?.idt ? await discover(config.issuer).catch(() => undefined) : undefined;
  if (!stored?.idt || !meta?.end_session_endpoint) return redirect(back, writes, status);
  // OIDC RP-Initiated Logout §2: the browser's session at Portcullis ends too.
  const end = new URL(meta.end_session_endpoint);
  end.searchParams.set("id_token_hint", stored.idt);
  end.searchParams.set("post_logout_redirect_uri", back);
  end.searchParams.set("client_id", config.clientId);
  return redirect(end.href, writes, status);
}

/** The JSON `@portcullis/react` reads in server mode: who is signed in, never a token. */
export interface SessionInfo {
  isSignedIn: boolean;
  userId?: string | null;
  sessionId?: string | null;
  claims?: AccessTokenClaims | null;
  user?: Record<string, unknown> | null;
}

async function sessionInfo(kit: SessionKit, jar: CookieJar): Promise<Response> {
  let loaded: Loaded;
  try {
    loaded = await loadSession(kit, jar);
  } catch (err) {
    return errorResponse(err);
  }
  const { session, writes } = loaded;
  if (!session) return respond(200, { isSignedIn: false } satisfies SessionInfo, writes);
  const user = await userinfo(kit.config, session.accessToken);
  // The session ended at Portcullis (signed out elsewhere, revoked): so here too.
  if (user === "refused") return respond(200, { isSignedIn: false } satisfies SessionInfo, await sealWrites(kit, jar, undefined));
  const body: SessionInfo = { isSignedIn: true, userId: session.userId, sessionId: session.sessionId, claims: session.claims, user };
  return respond(200, body, writes);
}

type RouteHandler = (request: Request, ctx?: unknown) => Promise<Response>;

/**
 * The auth routes, for `app/api/auth/[...portcullis]/route.ts`:
 * `export const { GET, POST } = handleAuth()`. Settings default to the
 * `PORTCULLIS_*` environment, read at the first request (not at build time).
 */
export function handleAuth(config: Partial<SessionConfig> = {}): { GET: RouteHandler; POST: RouteHandler } {
  const route = (method: "GET" | "POST"): RouteHandler => async (request) => {
    const kit = sessionKit(config);
    const path = new URL(request.url).pathname;
    const base = kit.config.basePath;
    const action = path.startsWith(`${base}/`) ? path.slice(base.length + 1).replace(/\/+$/, "") : "";
    const jar = parseCookies(request.headers.get("cookie"));
    try {
      if (action === "logout") return await logout(kit, request, jar);
      if (method === "GET" && action === "login") return await login(kit, request, jar);
      if (method === "GET" && action === "callback") return await callback(kit, request, jar);
      if (method === "GET" && action === "session") return await sessionInfo(kit, jar);
    } catch (err) {
      return errorResponse(err);
    }
    return problemResponse(404, "not_found", `no auth route ${method} ${path}`);
  };
  return { GET: route("GET"), POST: route("POST") };
}

// ---------------------------------------------------------------------------
// auth()

/** Who is signed in, for server code. Signed out: every field `null`. */
export interface SessionAuth {
  userId: string | null;
  sessionId: string | null;
  /** The access token's claims. */
  claims: AccessTokenClaims | null;
  /** The access token's permissions (`scope`). */
  scopes: string[];
  roles: string[];
  /**
   * An access token valid for at least 30 s (renewed when needed), to call APIs
   * from the server; `null` when signed out. Never hand it to the browser.
   */
  getToken(): Promise<string | null>;
}

interface CookieStore {
  getAll(): Array<{ name: string; value: string }>;
  set(name: string, value: string, options: Record<string, unknown>): unknown;
}

/** Next's cookie store of the current request (`next/headers`, Next 15 and 16). */
async function nextCookies(): Promise<CookieStore> {
  const mod = (await import("next/headers")) as { cookies: () => Promise<CookieStore> | CookieStore };
  return await mod.cookies();
}

/** Writes into Next's store; `false` where Next forbids it (a server component). */
function writeStore(store: CookieStore, writes: CookieWrite[]): boolean {
  try {
    for (const w of writes) {
      store.set(w.name, w.value, { httpOnly: true, secure: true, sameSite: "lax", path: "/", maxAge: w.maxAge });
    }
    return true;
  } catch {
    // "Cookies can only be modified in a Server Action or Route Handler": the
    // rotated tokens stay with the refresh's outcome (refreshOnce) until the
    // middleware or a route handler writes them.
    return false;
  }
}

export function sessionAuth(session: Session | null, renew?: () => Promise<Session | null>): SessionAuth {
  if (!session) {
    return { userId: null, sessionId: null, claims: null, scopes: [], roles: [], getToken: async () => null };
  }
  let current: Session | null = session;
  const claims = session.claims;
  return {
    userId: session.userId,
    sessionId: session.sessionId,
    claims,
    scopes: typeof claims.scope === "string" ? claims.scope.split(/\s+/).filter(Boolean) : [],
    roles: Array.isArray(claims.roles) ? claims.roles : [],
    getToken: async () => {
      if (!current) return null;
      if (renew && current.claims.exp - now() < renewWithin(current.claims)) current = await renew();
      return current?.accessToken ?? null;
    },
  };
}

/**
 * The signed-in user of the current request, for server components, route handlers
 * and server actions (reads Next's `cookies()`). Renews the access token when it is
 * (nearly) expired; the rotated cookie is written where Next allows it (route
 * handlers, server actions) and by the middleware otherwise.
 */
export async function auth(config: Partial<SessionConfig> = {}): Promise<SessionAuth> {
  // cookies() first: at build time it marks the page dynamic before any setting is read.
  const store = await nextCookies();
  const kit = sessionKit(config);
  let jar: CookieJar = new Map(store.getAll().map((c) => [c.name, c.value] as [string, string]));
  const load = async () => {
    const { session, writes } = await loadSession(kit, jar);
    if (writes.length) {
      writeStore(store, writes);
      jar = applyWrites(jar, writes);
    }
    return session;
  };
  return sessionAuth(await load(), load);
}

/**
 * The signed-in user's `/oauth/userinfo` claims (`sub`, `email`, `name`, … by
 * scope), or `null` when signed out. One call to Portcullis per use.
 */
export async function currentUser(config: Partial<SessionConfig> = {}): Promise<Record<string, unknown> | null> {
  const token = await (await auth(config)).getToken();
  if (!token) return null;
  const user = await userinfo(sessionKit(config).config, token);
  return user === "refused" ? null : user;
}

/** The session of a `Request` (route handlers, middleware), with the cookie writes it needs. */
export async function sessionFromRequest(request: Request, config: Partial<SessionConfig> = {}): Promise<Loaded & { kit: SessionKit; jar: CookieJar }> {
  const kit = sessionKit(config);
  const jar = parseCookies(request.headers.get("cookie"));
  return { ...(await loadSession(kit, jar)), kit, jar };
}
