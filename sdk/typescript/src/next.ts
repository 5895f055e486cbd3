/**
 * Next.js (App Router) helpers on web-standard `Request`/`Response`, so they run in
 * route handlers and in middleware/proxy (`next` is imported only where Next runs
 * them: `next/headers` in `auth()`, `next/server` when the middleware forwards a
 * renewed cookie):
 *
 * - `handleAuth()` and `auth()`: sign-in through Portcullis with the tokens kept on
 *   the server behind a sealed cookie (`next-session.ts`).
 * - `withAuth(handler, { scope? })` wraps a route handler: the caller is a Bearer
 *   token, an API key or the session cookie; the handler gets `ctx.auth`, refusals
 *   are Portcullis problem documents (401/403).
 * - `portcullisMiddleware({ protect })` + `createRouteMatcher([...])` protect path
 *   patterns in `proxy.ts` / `middleware.ts`, like `clerkMiddleware` +
 *   `createRouteMatcher`; with a session, signed-out visitors of pages go to
 *   sign-in, and sessions are renewed on the way in.
 *
 * Settings come from the options or, by default, from the environment:
 * `PORTCULLIS_ISSUER`, `PORTCULLIS_AUDIENCE`, `PORTCULLIS_URL` (where to reach the
 * server when not at the issuer URL), `PORTCULLIS_VERIFIER_KEY` (turns on
 * `X-API-Key` checks), and for the session `PORTCULLIS_CLIENT_ID`,
 * `PORTCULLIS_CLIENT_SECRET`, `PORTCULLIS_BASE_URL`, `PORTCULLIS_SESSION_SECRET`.
 */
import { authFromClaims, type Auth } from "./auth.js";
import { PortcullisError, problem } from "./errors.js";
import { authenticator, missing, refusalResponse, scopeRefusal, type AuthOptions } from "./guard.js";
import type { CookieJar, CookieWrite } from "./next-cookies.js";
import { sessionConfigured, type SessionConfig } from "./next-oidc.js";
import { applyWrites, cookieHeader, sessionFromRequest, sessionKit, withCookies } from "./next-session.js";

export type { Auth } from "./auth.js";
export {
  auth,
  currentUser,
  handleAuth,
  safeReturnTo,
  type SessionAuth,
  type SessionConfig,
  type SessionInfo,
} from "./next-session.js";

export interface NextAuthOptions extends Partial<AuthOptions> {
  /** Scopes the caller must hold (one, or all of a list). */
  scope?: string | string[];
  /**
   * The session cookie's settings (`handleAuth`'s); by default on when
   * `PORTCULLIS_SESSION_SECRET` is set. `false`: Bearer tokens and API keys only.
   */
  session?: Partial<SessionConfig> | false;
}

/** Options from the environment, completed by `options`. */
function settings(options: Partial<AuthOptions>): AuthOptions {
  const env = typeof process === "undefined" ? {} : process.env;
  const issuer = options.issuer ?? env.PORTCULLIS_ISSUER;
  if (!issuer) throw new Error("set PORTCULLIS_ISSUER or pass { issuer }");
  const verifierKey = env.PORTCULLIS_VERIFIER_KEY;
  return {
    audience: env.PORTCULLIS_AUDIENCE || undefined,
    baseUrl: env.PORTCULLIS_URL || undefined,
    apiKeys: verifierKey ? { verifierKey } : undefined,
    ...options,
    issuer,
  };
}

const authenticators = new Map<string, (headers: Record<string, string | undefined>) => Promise<Auth>>();

function cachedAuthenticator(options: AuthOptions) {
  const id = JSON.stringify(options);
  let a = authenticators.get(id);
  if (!a) {
    a = authenticator(options);
    authenticators.set(id, a);
  }
  return a;
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

function sessionOptions(options: NextAuthOptions): Partial<SessionConfig> | undefined {
  const { session } = options;
  if (session === false) return undefined;
  return sessionConfigured(session ?? {}) ? (session ?? {}) : undefined;
}

function scopesOf(scope: string | string[] | undefined): string[] {
  return scope === undefined ? [] : Array.isArray(scope) ? scope : [scope];
}

/**
 * The caller and the session cookie writes to send back (a renewed session), or
 * the refusal. A credential header wins over the cookie.
 */
async function authenticateRequest(
  request: Request,
  options: NextAuthOptions,
): Promise<{ auth: Auth; writes: CookieWrite[] } | Response> {
  const { scope, session: _session, ...rest } = options;
  const headers = {
    authorization: request.headers.get("authorization") ?? undefined,
    "x-api-key": request.headers.get("x-api-key") ?? undefined,
  };
  const session = sessionOptions(options);
  let auth: Auth;
  let writes: CookieWrite[] = [];
  try {
    if (session && headers.authorization === undefined && headers["x-api-key"] === undefined) {
      const loaded = await sessionFromRequest(request, session);
      writes = loaded.writes;
      if (!loaded.session) return toResponse(missing(), writes);
      // A cookie rides along on cross-site requests too: refuse state changes
      // another site started (SameSite=Lax already keeps most of them out).
      if (!SAFE_METHODS.has(request.method) && crossSite(request, loaded.kit.config.origin)) {
        return toResponse(
          new PortcullisError({
            status: 403,
            code: "cross_site_request",
            problem: problem(403, "cross_site_request", "this request came from another site"),
          }),
          writes,
        );
      }
      auth = authFromClaims(loaded.session.claims);
    } else {
      auth = await cachedAuthenticator(settings(rest))(headers);
    }
  } catch (err) {
    return toResponse(err, writes);
  }
  const refusal = scopeRefusal(auth, scopesOf(scope));
  return refusal ? toResponse(refusal, writes) : { auth, writes };
}

function crossSite(request: Request, origin: string): boolean {
  const from = request.headers.get("origin");
  if (from !== null) return from !== origin;
  return request.headers.get("sec-fetch-site") === "cross-site";
}

/**
 * The caller of `request`, or the refusal `Response` (401, 403, 503). With the
 * session cookie, prefer `withAuth` or the middleware: they also send a renewed
 * cookie back.
 */
export async function authenticate(request: Request, options: NextAuthOptions = {}): Promise<Auth | Response> {
  const out = await authenticateRequest(request, options);
  return out instanceof Response ? out : out.auth;
}

function toResponse(err: unknown, writes: CookieWrite[] = []): Response {
  const { status, headers, body } = refusalResponse(err);
  return withCookies(new Response(JSON.stringify(body), { status, headers }), writes);
}

/** A route handler that only runs for an accepted caller, who is `ctx.auth`. */
export function withAuth<C extends object = { params: Promise<Record<string, string | string[]>> }>(
  handler: (request: Request, ctx: C & { auth: Auth }) => Response | Promise<Response>,
  options: NextAuthOptions = {},
): (request: Request, ctx: C) => Promise<Response> {
  return async (request, ctx) => {
    const out = await authenticateRequest(request, options);
    if (out instanceof Response) return out;
    return withCookies(await handler(request, { ...(ctx ?? ({} as C)), auth: out.auth }), out.writes);
  };
}

/** A path pattern: a string with `:name` segments and `(.*)` wildcards, or a RegExp. */
export type RoutePattern = string | RegExp;

/** `(request) => boolean`: whether the request's path matches one of `patterns`. */
export function createRouteMatcher(patterns: RoutePattern | RoutePattern[]): (request: Request | { url: string }) => boolean {
  const list = (Array.isArray(patterns) ? patterns : [patterns]).map(toRegExp);
  return (request) => {
    const path = new URL(request.url).pathname;
    return list.some((re) => re.test(path));
  };
}

function toRegExp(pattern: RoutePattern): RegExp {
  if (pattern instanceof RegExp) return pattern;
  let re = "";
  for (let i = 0; i < pattern.length; ) {
    if (pattern.startsWith("(.*)", i)) {
      re += ".*";
      i += 4;
    } else if (pattern[i] === ":") {
      const name = /^:[A-Za-z0-9_]+/.exec(pattern.slice(i))?.[0] ?? ":";
      re += "[^/]+";
      i += name.length;
    } else {
      re += (pattern[i] ?? "").replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      i += 1;
    }
  }
  return new RegExp(`^${re}/?$`);
}

export interface MiddlewareOptions extends NextAuthOptions {
  /** Which requests need a credential (default: all that reach the middleware). */
  protect?: ((request: Request) => boolean) | RoutePattern | RoutePattern[];
  /**
   * With a session: protected paths answered `401` when signed out instead of a
   * redirect to sign-in (default `/api/(.*)`).
   */
  apiRoutes?: RoutePattern | RoutePattern[];
}

/**
 * A Next.js `proxy` (Next 16) or `middleware` (Next 15): refuses unauthenticated
 * requests to protected paths and lets the rest through (returns `undefined`, which
 * Next treats as `next()`). With the session cookie, a signed-out visitor of a
 * protected page is sent to `${basePath}/login?returnTo=…` (API paths get `401`),
 * and a session whose access token is (nearly) expired is renewed for every path
 * the middleware sees, the new cookie going both to the browser and to the page
 * rendered behind it (so `auth()` in a server component gets the fresh tokens).
 * The handler behind still has to check what it needs (`withAuth`, `auth()`):
 * middleware is a first gate, not the only one.
 */
export function portcullisMiddleware(options: MiddlewareOptions = {}): (request: Request) => Promise<Response | undefined> {
  const { protect, apiRoutes, ...rest } = options;
  const matches =
    protect === undefined ? () => true : typeof protect === "function" ? protect : createRouteMatcher(protect);
  const isApi = createRouteMatcher(apiRoutes ?? "/api/(.*)");
  return async (request) => {
    const session = sessionOptions(rest);
    const hasCredential = request.headers.has("authorization") || request.headers.has("x-api-key");
    if (!session || hasCredential) {
      if (!matches(request)) return undefined;
      const auth = await authenticate(request, { ...rest, session: false });
      return auth instanceof Response ? auth : undefined;
    }
    const url = new URL(request.url);
    const { basePath } = sessionKit(session).config;
    // The auth routes handle their own cookies.
    if (url.pathname === basePath || url.pathname.startsWith(`${basePath}/`)) return undefined;
    const protectedPath = matches(request);
    let loaded;
    try {
      loaded = await sessionFromRequest(request, session);
    } catch (err) {
      return protectedPath ? toResponse(err) : undefined;
    }
    const { kit, jar, writes } = loaded;
    if (protectedPath && !loaded.session) {
      if (isApi(request)) return toResponse(missing(), writes);
      const login = new URL(`${kit.config.baseUrl}${kit.config.basePath}/login`);
      login.searchParams.set("returnTo", `${url.pathname}${url.search}`);
      return withCookies(new Response(null, { status: 307, headers: { location: login.href, "cache-control": "no-store" } }), writes);
    }
    if (protectedPath && loaded.session) {
      const refusal = scopeRefusal(authFromClaims(loaded.session.claims), scopesOf(rest.scope));
      if (refusal) return toResponse(refusal, writes);
    }
    return writes.length ? continueWith(request, jar, writes) : undefined;
  };
}

/**
 * `next()` with the renewed cookie: set in the browser, and in the request the
 * page behind sees (`NextResponse.next({ request: { headers } })`).
 */
async function continueWith(request: Request, jar: CookieJar, writes: CookieWrite[]): Promise<Response> {
  const headers = new Headers(request.headers);
  headers.set("cookie", cookieHeader(applyWrites(jar, writes)));
  let res: Response;
  try {
    const { NextResponse } = await import("next/server");
    res = NextResponse.next({ request: { headers } });
  } catch {
    // Outside Next (tests): what NextResponse.next writes.
    res = new Response(null, {
      headers: {
        "x-middleware-next": "1",
        "x-middleware-override-headers": "cookie",
        "x-middleware-request-cookie": headers.get("cookie") ?? "",
      },
    });
  }
  return withCookies(res, writes);
}
