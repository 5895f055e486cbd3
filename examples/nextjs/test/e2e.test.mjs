// The built example in headless Chromium against a real `portcullis serve`: sign-in
// through the hosted page, no token ever in the browser, the protected server
// component, /api/invoices by permission, state and returnTo checks, logout.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";

import { PASSWORD, Portcullis, SECRET, buildApp, freePort, launchChromium, required, sleep, startApp, unseal } from "./harness.mjs";

let pc;
let app;
let browser;
let base;
let client;
/** Every token the app was given, learned from its cookies (the test knows the secret). */
const tokens = new Set();

before(async () => {
  const { bin, browser: chromiumPath } = required();
  const took = buildApp();
  console.log(`# build: sdk ${took.sdk.toFixed(1)} s, next build ${took.next.toFixed(1)} s`);
  // Access tokens live 10 s (renewed in their last 5 s), so sessions renew during the run.
  pc = await Portcullis.start(bin, { PORTCULLIS_TOKENS__ACCESS_TTL: "10s", PORTCULLIS_TOKENS__LEEWAY: "0s" });
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  client = JSON.parse(
    pc.cli([
      "clients", "create", "--name", "Next.js example", "--trusted",
      "--redirect-uri", `${base}/api/auth/callback`,
      "--post-logout-redirect-uri", `${base}/`,
      "--grant-type", "authorization_code", "--grant-type", "refresh_token",
      "--scope", "openid profile email offline_access read:invoices",
    ]),
  );
  app = await startApp(port, {
    PORTCULLIS_ISSUER: pc.base,
    PORTCULLIS_CLIENT_ID: client.client_id,
    PORTCULLIS_CLIENT_SECRET: client.client_secret,
    PORTCULLIS_BASE_URL: base,
    PORTCULLIS_SESSION_SECRET: SECRET,
    PORTCULLIS_SCOPE: "openid profile email offline_access read:invoices",
  });
  browser = await launchChromium(chromiumPath);
});

after(async () => {
  await browser?.close();
  await app?.stop();
  await pc?.stop();
});

/** Signs `email` in on the hosted page `page` is showing; waits to be back at the app. */
async function hostedSignIn(page, email) {
  assert.equal(new URL(page.url()).origin, pc.base, `expected the hosted sign-in page, at ${page.url()}`);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await Promise.all([
    page.waitForURL((u) => u.origin === base, { timeout: 15_000 }),
    page.getByRole("button", { name: "Sign in" }).click(),
  ]);
}

/** A fresh browser profile that records every body the app sends it. */
async function profile() {
  const context = await browser.newContext();
  const bodies = [];
  context.on("response", async (res) => {
    if (!res.url().startsWith(base)) return;
    try {
      bodies.push({ url: res.url(), text: await res.text() });
    } catch {
      // redirects have no body
    }
  });
  return { context, bodies, page: await context.newPage() };
}

async function appCookies(context) {
  return (await context.cookies(base)).filter((c) => c.name.startsWith("portcullis_session"));
}

async function learnTokens(context) {
  const cookies = await appCookies(context);
  const value = cookies.find((c) => c.name === "portcullis_session")?.value
    ?? cookies.filter((c) => /\.\d+$/.test(c.name)).sort((a, b) => a.name.localeCompare(b.name)).map((c) => c.value).join("");
  const stored = await unseal("portcullis_session", value);
  for (const t of [stored.at, stored.rt, stored.idt]) if (t) tokens.add(t);
  return stored;
}

/** What the browser can see holds no token: not a JWT, not one of the app's tokens. */
function assertNoToken(where, text) {
  assert.ok(!/eyJ[A-Za-z0-9_-]{10,}/.test(text), `a JWT in ${where}`);
  for (const t of tokens) assert.ok(!text.includes(t), `a token of the session in ${where}`);
}

const inPage = (page, path) =>
  page.evaluate(async (p) => {
    const res = await fetch(p, { headers: { accept: "application/json" } });
    return { status: res.status, type: res.headers.get("content-type"), body: await res.text() };
  }, path);

test("signed out, /dashboard sends the browser to the hosted sign-in; after it the page shows the email, and no token reaches the browser", async () => {
  await pc.register("ada@example.com");
  const { context, bodies, page } = await profile();
  await page.goto(`${base}/dashboard`);
  // The protected server component (behind the proxy) redirected to the hosted page.
  assert.equal(new URL(page.url()).pathname, "/oauth/authorize");
  await hostedSignIn(page, "ada@example.com");
  assert.equal(new URL(page.url()).pathname, "/dashboard");
  assert.equal(await page.getByTestId("email").textContent(), "ada@example.com");
  // The client components (@portcullis/react in server mode) see the same user, and
  // <Protect permission="read:invoices"> hides its content from someone without it.
  await page.getByTestId("client-email").filter({ hasText: "ada@example.com" }).waitFor({ timeout: 10_000 });
  assert.equal(await page.getByTestId("no-invoices").count(), 1);
  assert.equal(await page.getByTestId("invoices-section").count(), 0);

  const stored = await learnTokens(context);
  assert.match(stored.at, /^eyJ/);
  assert.ok(stored.rt, "a refresh token was issued");

  // Cookies: the session one is sealed and flagged (Chromium kept a Secure cookie
  // from http://127.0.0.1: loopback counts as a secure context).
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "portcullis_session");
  assert.ok(session, `no session cookie among ${cookies.map((c) => c.name).join(", ")}`);
  assert.equal(session.httpOnly, true);
  assert.equal(session.secure, true);
  assert.equal(session.sameSite, "Lax");
  assert.equal(session.path, "/");
  assert.ok(!cookies.some((c) => c.name.startsWith("portcullis_tx.")), "the transaction cookie is gone");
  for (const c of cookies) assertNoToken(`cookie ${c.name} (${c.domain})`, c.value);

  // Script-visible state and what the page and the app ever sent.
  const storage = await page.evaluate(() => JSON.stringify({ l: { ...localStorage }, s: { ...sessionStorage }, c: document.cookie }));
  assertNoToken("storage", storage);
  assert.equal(JSON.parse(storage).c, "", "no cookie is readable by script");
  assertNoToken("page source", await page.content());
  const info = await inPage(page, "/api/auth/session");
  assert.equal(info.status, 200);
  const parsed = JSON.parse(info.body);
  assert.equal(parsed.isSignedIn, true);
  assert.equal(parsed.user.email, "ada@example.com");
  assert.equal(parsed.claims.sub, parsed.userId);
  assertNoToken("/api/auth/session", info.body);
  assert.ok(bodies.length >= 2);
  for (const b of bodies) assertNoToken(b.url, b.text);
  await context.close();
});

test("/api/invoices: 401 signed out, 403 insufficient_scope without read:invoices, 200 with it", async () => {
  await pc.register("nobody@example.com");
  await pc.userWith("reader@example.com", "invoices", ["read:invoices"]);
  const { context, page } = await profile();
  await page.goto(base);
  const out = await inPage(page, "/api/invoices");
  assert.equal(out.status, 401);

  await page.goto(`${base}/api/auth/login?returnTo=/`);
  await hostedSignIn(page, "nobody@example.com");
  const lacking = await inPage(page, "/api/invoices");
  assert.equal(lacking.status, 403);
  assert.equal(lacking.type, "application/problem+json");
  assert.equal(JSON.parse(lacking.body).code, "insufficient_scope");
  await context.close();

  const reader = await profile();
  await reader.page.goto(`${base}/api/auth/login?returnTo=/dashboard`);
  await hostedSignIn(reader.page, "reader@example.com");
  assert.match(await reader.page.getByTestId("scopes").textContent(), /read:invoices/);
  await reader.page.getByTestId("invoices-section").waitFor({ timeout: 10_000 });
  const ok = await inPage(reader.page, "/api/invoices");
  assert.equal(ok.status, 200, ok.body);
  assert.equal(JSON.parse(ok.body).invoices[0].id, "inv_1");
  await reader.context.close();
});

test("a callback with a state this browser did not start is refused, and nobody is signed in", async () => {
  const { context, page } = await profile();
  await page.goto(`${base}/api/auth/login?returnTo=/dashboard`); // a sign-in of its own in progress
  const forged = randomBytes(32).toString("base64url");
  const res = await page.goto(`${base}/api/auth/callback?code=attackers-code&state=${forged}&iss=${encodeURIComponent(pc.base)}`);
  assert.equal(res.status(), 400);
  assert.equal(JSON.parse(await res.text()).code, "invalid_state");
  assert.deepEqual(await appCookies(context), []);
  assert.equal(JSON.parse((await inPage(page, "/api/auth/session")).body).isSignedIn, false);
  await context.close();
});

test("returnTo pointing off the app is not followed after sign-in (no open redirect)", async () => {
  await pc.register("grace@example.com");
  for (const evil of ["https://evil.example/phish", "//evil.example/phish", "/\\evil.example"]) {
    const { context, page } = await profile();
    await page.goto(`${base}/api/auth/login?returnTo=${encodeURIComponent(evil)}`);
    await hostedSignIn(page, "grace@example.com");
    const landed = new URL(page.url());
    assert.equal(landed.origin, base, `${evil} → ${page.url()}`);
    assert.equal(landed.pathname, "/");
    await context.close();
  }
});

test("sign out: the refresh token is revoked, the cookie cleared, Portcullis' session ended, and a saved copy of the cookie no longer works", async () => {
  await pc.register("kim@example.com");
  const { context, page } = await profile();
  await page.goto(`${base}/api/auth/login?returnTo=/dashboard`);
  await hostedSignIn(page, "kim@example.com");
  const stored = await learnTokens(context);
  const saved = await context.cookies(base);
  assert.equal((await pc.introspect(client, stored.rt)).active, true);

  await Promise.all([page.waitForURL((u) => u.origin === base && u.pathname === "/", { timeout: 15_000 }), page.getByRole("button", { name: "Sign out (client)" }).click()]);
  assert.equal(await page.getByRole("link", { name: "Sign in" }).count(), 1);
  assert.deepEqual(await appCookies(context), []);
  assert.equal((await pc.introspect(client, stored.rt)).active, false, "refresh token revoked");
  assert.equal((await pc.introspect(client, stored.at)).active, false, "access token ended with the grant");
  // Portcullis' own browser session is over too: signing in again asks for the password.
  await page.goto(`${base}/api/auth/login?returnTo=/dashboard`);
  assert.equal(new URL(page.url()).origin, pc.base);
  assert.equal(await page.getByLabel("Password").count(), 1);
  await context.close();

  const thief = await browser.newContext();
  await thief.addCookies(saved);
  const tp = await thief.newPage();
  await tp.goto(`${base}/dashboard`);
  assert.equal(new URL(tp.url()).origin, pc.base, `the saved cookie still opened ${tp.url()}`);
  const info = await tp.goto(`${base}/api/auth/session`);
  assert.equal((await info.json()).isSignedIn, false);
  await thief.close();
});

test("an expiring session is renewed by the proxy: five tabs at once, one refresh, the grant intact", async () => {
  const userId = await pc.register("lin@example.com");
  const { context, page } = await profile();
  await page.goto(`${base}/api/auth/login?returnTo=/dashboard`);
  await hostedSignIn(page, "lin@example.com");
  const first = await learnTokens(context);
  // No open page may renew first (the client provider reloads the session when a tab shows).
  await page.close();
  // Into the last half of the 10 s access token, where it is renewed before use.
  const { exp } = JSON.parse(Buffer.from(first.at.split(".")[1], "base64url").toString());
  await sleep(Math.max(0, (exp - 4.5) * 1000 - Date.now()));
  const tabs = await Promise.all(Array.from({ length: 5 }, () => context.newPage()));
  await Promise.all(tabs.map((t) => t.goto(`${base}/dashboard`)));
  for (const t of tabs) {
    assert.equal(new URL(t.url()).pathname, "/dashboard");
    assert.equal(await t.getByTestId("email").textContent(), "lin@example.com");
  }
  const renewed = await learnTokens(context);
  assert.notEqual(renewed.rt, first.rt, "the browser got the rotated cookie");
  assert.equal((await pc.introspect(client, first.rt)).active, false);
  // Had any tab presented the spent refresh token again, Portcullis would have revoked the grant.
  assert.equal((await pc.introspect(client, renewed.rt)).active, true, "no refresh token was used twice");
  // Portcullis' audit trail: one refresh for the five tabs, no reuse.
  const refreshes = await pc.audit(userId, "oauth_token", (r) => r.reason === "refresh_token");
  assert.equal(refreshes.length, 1, JSON.stringify(refreshes));
  assert.deepEqual(await pc.audit(userId, "refresh_reuse"), []);
  // …and no tab was quietly signed in anew (a lost session would go through sign-in again).
  assert.equal((await pc.audit(userId, "oauth_token", (r) => r.reason === "authorization_code")).length, 1);
  await context.close();
});
