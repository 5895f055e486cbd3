/**
 * Next.js (App Router) helpers on web-standard `Request`/`Response`, so they run in
 * route handlers and in edge middleware without importing `next`:
 *
 * - `withAuth(handler, { scope? })` wraps a route handler: the handler gets
 *   `ctx.auth`, refusals are Portcullis problem documents (401/403).
 * - `portcullisMiddleware({ protect })` + `createRouteMatcher([...])` protect path
 *   patterns in `middleware.ts`, like `clerkMiddleware` + `createRouteMatcher`.
 *
 * Settings come from the options or, by default, from the environment:
 * `PORTCULLIS_ISSUER`, `PORTCULLIS_AUDIENCE`, `PORTCULLIS_URL` (where to reach the
 * server when not at the issuer URL) and `PORTCULLIS_VERIFIER_KEY` (turns on
 * `X-API-Key` checks).
 */
import type { Auth } from "./auth.js";
import { authenticator, refusalResponse, scopeRefusal, type AuthOptions } from "./guard.js";

export type { Auth } from "./auth.js";

export interface NextAuthOptions extends Partial<AuthOptions> {
  /** Scopes the caller must hold (one, or all of a list). */
  scope?: string | string[];
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

/** The caller of `request`, or the refusal `Response` (401, 403, 503). */
export async function authenticate(request: Request, options: NextAuthOptions = {}): Promise<Auth | Response> {
  const { scope, ...rest } = options;
  const headers = {
    authorization: request.headers.get("authorization") ?? undefined,
    "x-api-key": request.headers.get("x-api-key") ?? undefined,
  };
  let auth: Auth;
  try {
    auth = await cachedAuthenticator(settings(rest))(headers);
  } catch (err) {
    return toResponse(err);
  }
  const scopes = scope === undefined ? [] : Array.isArray(scope) ? scope : [scope];
  const refusal = scopeRefusal(auth, scopes);
  return refusal ? toResponse(refusal) : auth;
}

function toResponse(err: unknown): Response {
  const { status, headers, body } = refusalResponse(err);
  return new Response(JSON.stringify(body), { status, headers });
}

/** A route handler that only runs for an accepted caller, who is `ctx.auth`. */
export function withAuth<C extends object = { params: Promise<Record<string, string | string[]>> }>(
  handler: (request: Request, ctx: C & { auth: Auth }) => Response | Promise<Response>,
  options: NextAuthOptions = {},
): (request: Request, ctx: C) => Promise<Response> {
  return async (request, ctx) => {
    const auth = await authenticate(request, options);
    if (auth instanceof Response) return auth;
    return handler(request, { ...(ctx ?? ({} as C)), auth });
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
}

/**
 * A Next.js `middleware`: refuses unauthenticated requests to protected paths and
 * lets the rest through (returns `undefined`, which Next treats as `next()`). The
 * handler behind still has to check what it needs (`withAuth`): middleware is a
 * first gate, not the only one.
 */
export function portcullisMiddleware(options: MiddlewareOptions = {}): (request: Request) => Promise<Response | undefined> {
  const { protect, ...rest } = options;
  const matches =
    protect === undefined ? () => true : typeof protect === "function" ? protect : createRouteMatcher(protect);
  return async (request) => {
    if (!matches(request)) return undefined;
    const auth = await authenticate(request, rest);
    return auth instanceof Response ? auth : undefined;
  };
}
