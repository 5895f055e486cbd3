/**
 * The Next.js session of `@portcullis/sdk/next` against a real Portcullis, with the
 * route handlers, `withAuth` and the middleware called in-process and the hosted
 * sign-in page driven over HTTP (forms, cookies, no JavaScript). The browser test
 * of the built example is `examples/nextjs` (`npm run test:nextjs`).
 */
import assert from "node:assert/strict";
import { webcrypto } from "node:crypto";
import { after, before, test } from "node:test";

import { handleAuth, portcullisMiddleware, safeReturnTo, withAuth } from "@portcullis/sdk/next";

import { PASSWORD, Portcullis, sleep } from "./harness.js";

const APP = "http://127.0.0.1:3999";
const SECRET = "a-test-session-secret-of-more-than-32-chars";
const SCOPE = "openid profile email offline_access read:invoices";

let pc: Portcullis;
/** A fresh admin token (they live 4 s here). */
const admin = async () => (await pc.login("admin@example.com")).access_token;
let client: { client_id: string; client_secret: string };
let config: Parameters<typeof handleAuth>[0];
let routes: ReturnType<typeof handleAuth>;

/** Counts token-endpoint refreshes made by this process (the SDK runs here). */
let refreshes = 0;
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
  if (url.endsWith("/oauth/token") && String(init?.body ?? "").includes("grant_type=refresh_token")) refreshes++;
  return realFetch(input, init);
};

before(async () => {
  // Access tokens live 4 s, so they are renewed within 2 s of expiry (half the life).
  pc = await Portcullis.start({ PORTCULLIS_TOKENS__ACCESS_TTL: "4s", PORTCULLIS_TOKENS__LEEWAY: "0s", PORTCULLIS_TOKENS__INCLUDE_METADATA: "true" });
  await pc.admin();
  client = JSON.parse(
    pc.cli([
      "clients", "create", "--name", "Next app", "--trusted",
      "--redirect-uri", `${APP}/api/auth/callback`,
      "--post-logout-redirect-uri", `${APP}/`,
      "--grant-type", "authorization_code", "--grant-type", "refresh_token",
      "--scope", SCOPE,
    ]),
  );
  config = { issuer: pc.base, clientId: client.client_id, clientSecret: client.client_secret, baseUrl: APP, secret: SECRET, scope: SCOPE };
  routes = handleAuth(config);
});

after(async () => {
  globalThis.fetch = realFetch;
  await pc?.stop();
});

// ---------------------------------------------------------------------------
// A browser, as far as cookies and redirects go

type Jar = Map<string, string>;

interface SetCookie {
  name: string;
  value: string;
  attrs: string[];
  raw: string;
}

function setCookies(res: Response): SetCookie[] {
  return res.headers.getSetCookie().map((raw) => {
    const [pair = "", ...attrs] = raw.split(";").map((s) => s.trim());
    const i = pair.indexOf("=");
    return { name: pair.slice(0, i), value: pair.slice(i + 1), attrs, raw };
  });
}

function remember(jar: Jar, res: Response): void {
  for (const c of setCookies(res)) {
    if (c.attrs.some((a) => a.toLowerCase() === "max-age=0")) jar.delete(c.name);
    else jar.set(c.name, c.value);
  }
}

const header = (jar: Jar) => [...jar].map(([k, v]) => `${k}=${v}`).join("; ");

/** A request to the app's auth routes, as the browser with `jar` sends it. */
async function app(jar: Jar, path: string, method = "GET"): Promise<Response> {
  const req = new Request(`${APP}${path}`, { method, headers: { cookie: header(jar) } });
  const res = await (method === "POST" ? routes.POST : routes.GET)(req);
  remember(jar, res);
  return res;
}

function attr(tag: string, name: string): string | undefined {
  const m = tag.match(new RegExp(`\\s${name}="([^"]*)"`));
  return m?.[1] === undefined ? undefined : htmlDecode(m[1]);
}

function htmlDecode(s: string): string {
  const named: Record<string, string> = { amp: "&", quot: '"', lt: "<", gt: ">", apos: "'" };
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|quot|lt|gt|apos);/g, (_, e: string) =>
    e.startsWith("#x") ? String.fromCodePoint(parseInt(e.slice(2), 16)) : e.startsWith("#") ? String.fromCodePoint(parseInt(e.slice(1), 10)) : (named[e] ?? ""),
  );
}

/** Follows Portcullis' hosted pages from `start` to the redirect back to the app; returns that URL. */
async function hosted(start: string, email: string): Promise<string> {
  const jar: Jar = new Map();
  let url = start;
  let res = await fetch(url, { redirect: "manual" });
  for (let i = 0; i < 10; i++) {
    remember(jar, res);
    if (res.status >= 300 && res.status < 400) {
      const next = new URL(res.headers.get("location") ?? "", url).href;
      if (next.startsWith(APP)) return next;
      url = next;
      res = await fetch(url, { redirect: "manual", headers: { cookie: header(jar) } });
      continue;
    }
    const html = await res.text();
    const form = html.match(/<form\b[^>]*method="post"[^>]*>([\s\S]*?)<\/form>/i);
    if (res.status !== 200 || !form) throw new Error(`unexpected ${res.status} at ${url}: ${html.slice(0, 300)}`);
    const data = new URLSearchParams();
    for (const input of form[1]?.matchAll(/<input\b[^>]*>/gi) ?? []) {
      const name = attr(input[0], "name");
      if (name) data.set(name, attr(input[0], "value") ?? "");
    }
    if (data.has("email")) data.set("email", email);
    if (data.has("password")) data.set("password", PASSWORD);
    url = new URL(attr(form[0], "action") || url, url).href;
    res = await fetch(url, {
      method: "POST",
      redirect: "manual",
      headers: { cookie: header(jar), "content-type": "application/x-www-form-urlencoded" },
      body: data.toString(),
    });
  }
  throw new Error("no redirect back to the app after 10 steps");
}

/** Signs `email` in through the app; returns the app's cookie jar and where the callback sent the browser. */
async function signIn(email: string, returnTo = "/dashboard", tamper?: (authorize: URL) => void): Promise<{ jar: Jar; landed: string; callback: Response }> {
  const jar: Jar = new Map();
  const login = await app(jar, `/api/auth/login?returnTo=${encodeURIComponent(returnTo)}`);
  assert.equal(login.status, 302);
  const authorize = new URL(login.headers.get("location") ?? "");
  tamper?.(authorize);
  const back = new URL(await hosted(authorize.href, email));
  const callback = await app(jar, `${back.pathname}${back.search}`);
  return { jar, landed: callback.headers.get("location") ?? "", callback };
}

/** Opens a sealed cookie as the README documents it (HKDF-SHA256 → AES-256-GCM, the name as AAD). */
async function unseal(name: string, value: string, purpose = "portcullis next session v1"): Promise<any> {
  const enc = new TextEncoder();
  const subtle = webcrypto.subtle;
  const ikm = await subtle.importKey("raw", enc.encode(SECRET), "HKDF", false, ["deriveKey"]);
  const key = await subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: enc.encode("portcullis-next-session"), info: enc.encode(purpose) },
    ikm,
    { name: "AES-GCM", length: 256 },
    false,
    ["decrypt"],
  );
  const bytes = Buffer.from(value, "base64url");
  assert.equal(bytes[0], 1);
  const plain = await subtle.decrypt({ name: "AES-GCM", iv: bytes.subarray(1, 13), additionalData: enc.encode(name) }, key, bytes.subarray(13));
  return JSON.parse(new TextDecoder().decode(plain)).v;
}

function sessionValue(jar: Jar): string {
  const whole = jar.get("portcullis_session");
  if (whole) return whole;
  let v = "";
  for (let i = 0; jar.has(`portcullis_session.${i}`); i++) v += jar.get(`portcullis_session.${i}`);
  return v;
}

async function introspect(token: string): Promise<{ active: boolean }> {
  const res = await realFetch(`${pc.base}/oauth/introspect`, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: new URLSearchParams({ token }).toString(),
  });
  assert.equal(res.status, 200);
  return (await res.json()) as { active: boolean };
}

async function sessionJson(jar: Jar): Promise<any> {
  const res = await app(jar, "/api/auth/session");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  return res.json();
}

// ---------------------------------------------------------------------------

test("next session: sign-in through the hosted page; the cookie is sealed and flagged, /session has no token", async () => {
  await pc.register("ada@example.com");
  const { jar, landed, callback } = await signIn("ada@example.com", "/dashboard?tab=1");
  assert.equal(callback.status, 302);
  assert.equal(landed, `${APP}/dashboard?tab=1`);
  const cookies = setCookies(callback);
  const session = cookies.find((c) => c.name === "portcullis_session");
  assert.ok(session, `no session cookie in ${cookies.map((c) => c.name).join(", ")}`);
  for (const flag of ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"]) assert.ok(session.attrs.includes(flag), `${flag} missing: ${session.raw}`);
  // The one-time transaction cookie is deleted at the callback.
  assert.ok(cookies.some((c) => c.name.startsWith("portcullis_tx.") && c.attrs.includes("Max-Age=0")));
  assert.deepEqual([...jar.keys()], ["portcullis_session"]);

  const stored = await unseal("portcullis_session", session.value);
  assert.match(stored.at, /^eyJ/);
  assert.ok(stored.rt && stored.idt);
  for (const c of cookies) {
    assert.ok(!c.value.includes("eyJ"), `a JWT in cookie ${c.name}`);
    assert.ok(!c.value.includes(stored.rt), `the refresh token in cookie ${c.name}`);
  }

  const info = await sessionJson(jar);
  assert.equal(info.isSignedIn, true);
  assert.match(info.userId, /^usr_/);
  assert.equal(info.user.email, "ada@example.com");
  assert.equal(info.claims.sub, info.userId);
  const text = JSON.stringify(info);
  for (const secret of [stored.at, stored.rt, stored.idt]) assert.ok(!text.includes(secret));
  assert.ok(!text.includes("eyJ"));

  assert.deepEqual(await sessionJson(new Map()), { isSignedIn: false });
});

test("next session: returnTo must be a path of this app (no open redirect)", async () => {
  const resolved = { origin: APP } as Parameters<typeof safeReturnTo>[1];
  for (const evil of ["https://evil.example/x", "//evil.example/x", "/\\evil.example", "\\\\evil.example", "/%0d//evil", "javascript:alert(1)", "evil", "/\t/evil.example"]) {
    const got = safeReturnTo(evil, resolved);
    assert.ok(got.startsWith("/") && !got.startsWith("//") && new URL(got, APP).origin === APP, `${evil} → ${got}`);
  }
  assert.equal(safeReturnTo("//evil.example/x", resolved), "/");
  assert.equal(safeReturnTo("/orders/7?x=1#top", resolved), "/orders/7?x=1#top");
  await pc.register("grace@example.com");
  const { landed } = await signIn("grace@example.com", "https://evil.example/phish");
  assert.equal(landed, `${APP}/`);
});

test("next session: a callback this browser did not start is refused (state), and so is a wrong nonce", async () => {
  await pc.register("eve@example.com");
  // The attacker's own code and state, replayed into the victim's browser (login CSRF).
  const attacker: Jar = new Map();
  const login = await app(attacker, "/api/auth/login");
  const back = new URL(await hosted(login.headers.get("location") ?? "", "eve@example.com"));
  const victim: Jar = new Map();
  await app(victim, "/api/auth/login"); // the victim has a sign-in of their own in progress
  const refused = await app(victim, `${back.pathname}${back.search}`);
  assert.equal(refused.status, 400);
  assert.equal(refused.headers.get("content-type"), "application/problem+json");
  assert.equal(((await refused.json()) as { code: string }).code, "invalid_state");
  assert.ok(!victim.has("portcullis_session"));
  assert.deepEqual(await sessionJson(victim), { isSignedIn: false });

  // A state that matches a cookie, but the cookie's nonce is not the one Portcullis signed.
  const { jar, callback } = await signIn("eve@example.com", "/", (authorize) => authorize.searchParams.set("nonce", "someone-elses-nonce"));
  assert.equal(callback.status, 400);
  const body = (await callback.json()) as { code: string; detail: string };
  assert.equal(body.code, "invalid_id_token");
  assert.match(body.detail, /nonce/);
  assert.ok(!jar.has("portcullis_session"));

  // The transaction works once: the same callback again is refused.
  const again = await signIn("eve@example.com");
  assert.equal(again.callback.status, 302);
});

test("next session: renewal shares one refresh among concurrent requests, and an old cookie gets the same rotation", async () => {
  await pc.register("lin@example.com");
  const { jar } = await signIn("lin@example.com");
  const first = await unseal("portcullis_session", sessionValue(jar));
  await sleep(2_500); // inside the last half of the 4 s access token
  const before = refreshes;
  const stale = new Map(jar);
  const answers = await Promise.all(Array.from({ length: 10 }, () => app(new Map(stale), "/api/auth/session")));
  assert.equal(refreshes - before, 1, "ten concurrent requests, one refresh");
  const values = new Set<string>();
  for (const res of answers) {
    assert.equal(((await res.json()) as { isSignedIn: boolean }).isSignedIn, true);
    const c = setCookies(res).find((x) => x.name === "portcullis_session");
    assert.ok(c, "each answer carries the renewed cookie");
    values.add((await unseal("portcullis_session", c.value)).rt);
  }
  assert.equal(values.size, 1, "one rotated refresh token");
  const [rotated] = values;
  assert.notEqual(rotated, first.rt);

  // A request still carrying the old cookie later on must not present the spent token.
  const late = await app(new Map(stale), "/api/auth/session");
  assert.equal(((await late.json()) as { isSignedIn: boolean }).isSignedIn, true);
  assert.equal(refreshes - before, 1);
  assert.equal((await introspect(rotated ?? "")).active, true, "the grant survived (no reuse detected)");
  assert.equal((await introspect(first.rt)).active, false);
});

test("next session: a refused refresh signs out and clears the cookie", async () => {
  await pc.register("max@example.com");
  const { jar } = await signIn("max@example.com");
  const stored = await unseal("portcullis_session", sessionValue(jar));
  // Ended at the server (e.g. sign-out everywhere).
  const userId = (await sessionJson(jar)).userId as string;
  assert.equal((await pc.call("DELETE", `/v1/admin/users/${userId}/sessions`, await admin())).status < 300, true);
  assert.equal((await introspect(stored.rt)).active, false);
  await sleep(2_500);
  const res = await app(jar, "/api/auth/session");
  assert.deepEqual(await res.json(), { isSignedIn: false });
  assert.ok(setCookies(res).some((c) => c.name === "portcullis_session" && c.attrs.includes("Max-Age=0")));
  assert.ok(!jar.has("portcullis_session"));
});

test("next session: logout revokes the refresh token and goes through RP-initiated logout", async () => {
  await pc.register("kim@example.com");
  const { jar } = await signIn("kim@example.com");
  const stored = await unseal("portcullis_session", sessionValue(jar));
  const saved = new Map(jar);
  assert.equal((await introspect(stored.rt)).active, true);
  const res = await app(jar, "/api/auth/logout", "POST");
  assert.equal(res.status, 303);
  const to = new URL(res.headers.get("location") ?? "");
  assert.equal(`${to.origin}${to.pathname}`, `${pc.base}/oauth/logout`);
  assert.equal(to.searchParams.get("id_token_hint"), stored.idt);
  assert.equal(to.searchParams.get("post_logout_redirect_uri"), `${APP}/`);
  assert.ok(!jar.has("portcullis_session"));
  assert.equal((await introspect(stored.rt)).active, false);
  assert.equal((await introspect(stored.at)).active, false, "the grant's access token ended with it");
  // Portcullis accepts the logout request and returns to the app.
  const end = await realFetch(to, { redirect: "manual" });
  assert.ok([302, 303].includes(end.status), `logout answered ${end.status}`);
  assert.equal(new URL(end.headers.get("location") ?? "").origin, APP);
  // The cookie saved before logout no longer signs anyone in.
  assert.deepEqual(await sessionJson(saved), { isSignedIn: false });
});

test("next session: withAuth takes the session cookie (scope checked) as well as a Bearer token", async () => {
  const reader = await pc.userWith(await admin(), "reader@example.com", "invoices", ["read:invoices"]);
  await pc.register("nobody@example.com");
  const GET = withAuth(async (_r, ctx) => Response.json({ user: ctx.auth.userId, scopes: ctx.auth.scopes }), {
    scope: "read:invoices",
    session: config,
    issuer: pc.base,
  });
  const POST = withAuth(async () => Response.json({ ok: true }), { session: config, issuer: pc.base });
  const ctx = { params: Promise.resolve({}) };
  const call = (fn: typeof GET, jar: Jar, init: RequestInit = {}) =>
    fn(new Request(`${APP}/api/invoices`, { ...init, headers: { cookie: header(jar), ...(init.headers as Record<string, string>) } }), ctx);

  assert.equal((await call(GET, new Map())).status, 401);
  const lacking = await call(GET, (await signIn("nobody@example.com")).jar);
  assert.equal(lacking.status, 403);
  assert.equal(((await lacking.json()) as { code: string }).code, "insufficient_scope");
  const { jar } = await signIn("reader@example.com");
  const ok = await call(GET, jar);
  assert.equal(ok.status, 200);
  assert.ok(((await ok.json()) as { scopes: string[] }).scopes.includes("read:invoices"));
  assert.equal((await GET(new Request(`${APP}/api/invoices`, { headers: { authorization: `Bearer ${reader.access_token}` } }), ctx)).status, 200);

  // Another site's form post rides on the cookie: refused.
  const cross = await call(POST, jar, { method: "POST", headers: { origin: "https://evil.example" } });
  assert.equal(cross.status, 403);
  assert.equal(((await cross.json()) as { code: string }).code, "cross_site_request");
  assert.equal((await call(POST, jar, { method: "POST", headers: { origin: APP } })).status, 200);

  // A renewal inside withAuth sends the new cookie back with the handler's answer.
  await sleep(2_500);
  const renewed = await call(GET, jar);
  assert.equal(renewed.status, 200);
  assert.ok(setCookies(renewed).some((c) => c.name === "portcullis_session" && !c.attrs.includes("Max-Age=0")));
});

test("next session: the middleware sends signed-out visitors to sign-in, answers 401 on API paths, renews on the way in", async () => {
  const middleware = portcullisMiddleware({ protect: ["/dashboard(.*)", "/api/invoices"], session: config, issuer: pc.base });
  const visit = (path: string, jar: Jar) => middleware(new Request(`${APP}${path}`, { headers: { cookie: header(jar) } }));
  const out = await visit("/dashboard/settings?x=1", new Map());
  assert.equal(out?.status, 307);
  const to = new URL(out?.headers.get("location") ?? "");
  assert.equal(`${to.origin}${to.pathname}`, `${APP}/api/auth/login`);
  assert.equal(to.searchParams.get("returnTo"), "/dashboard/settings?x=1");
  const api = await visit("/api/invoices", new Map());
  assert.equal(api?.status, 401);
  assert.equal(await visit("/", new Map()), undefined);

  await pc.register("ivy@example.com");
  const { jar } = await signIn("ivy@example.com");
  assert.equal(await visit("/dashboard", jar), undefined, "a fresh session passes untouched");
  await sleep(2_500);
  const renewed = await visit("/", jar);
  assert.ok(renewed, "a due session is renewed on any path");
  assert.equal(renewed.headers.get("x-middleware-next"), "1");
  const cookie = setCookies(renewed).find((c) => c.name === "portcullis_session");
  assert.ok(cookie);
  // The page behind sees the renewed cookie, not the one the browser sent.
  assert.ok(renewed.headers.get("x-middleware-request-cookie")?.includes(`portcullis_session=${cookie.value}`));
});

test("next session: a session too large for one cookie is split into chunks under 4 KB", async () => {
  const id = await pc.register("big@example.com");
  const blob = "x".repeat(6_000);
  const patched = await pc.call("PATCH", `/v1/admin/users/${id}`, await admin(), { public_metadata: { blob } });
  assert.equal(patched.status, 200, JSON.stringify(patched.body));
  const { jar, callback } = await signIn("big@example.com");
  const chunks = setCookies(callback).filter((c) => c.name.startsWith("portcullis_session"));
  assert.ok(chunks.length >= 2, `expected chunks, got ${chunks.map((c) => c.name)}`);
  for (const c of chunks) {
    assert.match(c.name, /^portcullis_session\.\d$/);
    assert.ok(c.raw.length < 4_096, `${c.name} is ${c.raw.length} bytes`);
  }
  const info = await sessionJson(jar);
  assert.equal(info.isSignedIn, true);
  assert.equal(info.claims.metadata.blob, blob);
  // Signing out removes every chunk.
  await app(jar, "/api/auth/logout");
  assert.deepEqual([...jar.keys()].filter((n) => n.startsWith("portcullis_session")), []);
});
