/**
 * The SPA of examples/react-vite, built with Vite and served on loopback, against a
 * real `portcullis serve` (access tokens live 5 s, metadata in tokens), driven in
 * headless Chromium. One server and one browser for the file; a context per test.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import type { Browser, BrowserContext, Page, Request } from "playwright-core";

import { buildExample, hostedSignIn, launchChromium, Portcullis, sleep, StaticServer } from "./harness.js";

const ACCESS_TTL_S = 5;
const SCOPE = "openid profile email offline_access read:invoices";

let pc: Portcullis;
let app: StaticServer;
/** The same example built with refreshTokenStorage="sessionStorage", on another origin. */
let kept: StaticServer;
let browser: Browser;
let clientId: string;
let built: string;
let builtKept: string;

before(async () => {
  app = await StaticServer.start();
  kept = await StaticServer.start();
  pc = await Portcullis.start({
    PORTCULLIS_TOKENS__ACCESS_TTL: `${ACCESS_TTL_S}s`,
    PORTCULLIS_TOKENS__INCLUDE_METADATA: "true",
  });
  const created = await pc.call("POST", "/v1/admin/clients", await pc.admin(), {
    client_name: "React SPA",
    token_endpoint_auth_method: "none",
    trusted: true,
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    redirect_uris: [`${app.origin}/callback`, `${kept.origin}/callback`],
    post_logout_redirect_uris: [`${app.origin}/`, `${kept.origin}/`],
    allowed_cors_origins: [app.origin, kept.origin],
    scope: SCOPE,
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  clientId = created.body.client_id as string;
  built = buildExample({ VITE_PORTCULLIS_ISSUER: pc.base, VITE_PORTCULLIS_CLIENT_ID: clientId });
  app.root = built;
  builtKept = buildExample({
    VITE_PORTCULLIS_ISSUER: pc.base,
    VITE_PORTCULLIS_CLIENT_ID: clientId,
    VITE_PORTCULLIS_REFRESH_TOKEN_STORAGE: "sessionStorage",
  });
  kept.root = builtKept;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await app?.stop();
  await kept?.stop();
  await pc?.stop();
  for (const dir of [built, builtKept]) if (dir) rmSync(dir, { recursive: true, force: true });
});

/** What the browser context sent to and got from the token endpoint. */
class TokenTraffic {
  readonly requests: Array<{ grant: string; refreshToken?: string }> = [];
  readonly responses: Array<{ status: number; body: Record<string, unknown> }> = [];
  readonly authorizeRequests: string[] = [];

  constructor(
    context: BrowserContext,
    private readonly issuer: string,
  ) {
    context.on("request", (r: Request) => {
      // The app starting a sign-in (the hosted form then posts to the same URL).
      if (r.method() === "GET" && r.url().startsWith(`${issuer}/oauth/authorize?`)) this.authorizeRequests.push(r.url());
      if (r.url() !== `${issuer}/oauth/token` || r.method() !== "POST") return;
      const form = new URLSearchParams(r.postData() ?? "");
      this.requests.push({ grant: form.get("grant_type") ?? "", refreshToken: form.get("refresh_token") ?? undefined });
    });
    context.on("response", async (res) => {
      if (res.url() !== `${this.issuer}/oauth/token` || res.request().method() !== "POST") return;
      let body: Record<string, unknown> = {};
      try {
        body = (await res.json()) as Record<string, unknown>;
      } catch {
        // no body
      }
      this.responses.push({ status: res.status(), body });
    });
  }

  refreshes(): Array<{ grant: string; refreshToken?: string }> {
    return this.requests.filter((r) => r.grant === "refresh_token");
  }
}

async function newContext(): Promise<{ context: BrowserContext; page: Page; traffic: TokenTraffic }> {
  const context = await browser.newContext();
  const traffic = new TokenTraffic(context, pc.base);
  const page = await context.newPage();
  return { context, page, traffic };
}

/** From the app's home page through the hosted sign-in page and back, signed in. */
async function signIn(page: Page, email: string, origin = app.origin): Promise<void> {
  await page.goto(`${origin}/`);
  await page.getByRole("button", { name: "Sign in" }).click();
  await hostedSignIn(page, pc.base, email);
  await page.getByTestId("email").filter({ hasText: email }).waitFor({ timeout: 15_000 });
}

/** Clicks "Call the API" and returns the status it shows ("200", "401", "error …"). */
async function callApi(page: Page): Promise<string> {
  const out = page.getByTestId("api-result");
  const before = (await out.textContent()) ?? "";
  const n = Number(/^call (\d+)/.exec(before)?.[1] ?? 0) + 1;
  // Short: a signed-out page (the button gone) should fail fast, not after 30 s.
  await page.getByRole("button", { name: "Call the API" }).click({ timeout: 5_000 });
  await out.filter({ hasText: `call ${n}:` }).waitFor({ timeout: 10_000 });
  return ((await out.textContent()) ?? "").replace(/^call \d+: /, "");
}

describe("the React SPA against portcullis serve", () => {
  test("signs in through the hosted page and shows the email from useUser()", async () => {
    const { context, page, traffic } = await newContext();
    try {
      await pc.register("ann@example.com");
      await page.goto(`${app.origin}/`);
      await page.getByTestId("signed-out").waitFor();
      await page.getByRole("button", { name: "Sign in" }).click();
      // The password goes into Portcullis' page, on Portcullis' origin — never the app's.
      await page.waitForURL((u) => u.href.startsWith(`${pc.base}/oauth/authorize`));
      const authorize = new URL(page.url());
      assert.equal(authorize.searchParams.get("code_challenge_method"), "S256");
      assert.ok(authorize.searchParams.get("state") && authorize.searchParams.get("nonce"));
      assert.equal(authorize.searchParams.get("client_id"), clientId);
      await hostedSignIn(page, pc.base, "ann@example.com");
      await page.getByTestId("email").filter({ hasText: "ann@example.com" }).waitFor();
      // The code and state left the address bar; we are back where sign-in began.
      const landed = new URL(page.url());
      assert.equal(landed.pathname, "/");
      assert.equal(landed.search, "");
      assert.deepEqual(
        traffic.requests.map((r) => r.grant),
        ["authorization_code"],
      );
      // Nothing stored: the access token (and by default the refresh token) live in memory.
      const stored = await page.evaluate(() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }));
      assert.equal(stored, "{}{}");
      assert.equal(await callApi(page), "200");
      await page.getByRole("link", { name: "Protected page" }).click();
      await page.getByTestId("protected").waitFor();
      // Memory storage and no other tab: a new document forgets the tokens (sign in again).
      await page.goto(`${app.origin}/`);
      await page.getByTestId("signed-out").waitFor();
    } finally {
      await context.close();
    }
    // Signed out, the protected page sends the browser to sign in and back to itself.
    const other = await newContext();
    try {
      await other.page.goto(`${app.origin}/protected`);
      await hostedSignIn(other.page, pc.base, "ann@example.com");
      await other.page.getByTestId("protected").filter({ hasText: "ann@example.com" }).waitFor();
      assert.equal(new URL(other.page.url()).pathname, "/protected");
    } finally {
      await other.context.close();
    }
  });

  test("<Protect permission> shows its content after the permission is granted and a refresh", async () => {
    const { context, page, traffic } = await newContext();
    try {
      const id = await pc.register("bob@example.com");
      await signIn(page, "bob@example.com");
      await page.getByTestId("invoices-denied").waitFor();
      assert.equal(await page.getByTestId("invoices").count(), 0);
      const role = await pc.call("POST", "/v1/admin/roles", await pc.admin(), { name: "invoice-reader", permissions: ["read:invoices"] });
      assert.equal(role.status, 201, JSON.stringify(role.body));
      const grant = await pc.call("POST", `/v1/admin/users/${id}/roles`, await pc.admin(), { role: "invoice-reader" });
      assert.equal(grant.status, 200, JSON.stringify(grant.body));
      const refreshesBefore = traffic.refreshes().length;
      // The next background refresh (at 75% of 5 s) carries the permission.
      await page.getByTestId("invoices").waitFor({ timeout: 4 * ACCESS_TTL_S * 1000 });
      assert.ok(traffic.refreshes().length > refreshesBefore, "it came with a refresh");
      assert.equal(traffic.authorizeRequests.length, 1, "without signing in again");
      // Roles travel too (trusted client), for has({ role }).
      assert.match((await page.getByTestId("roles").textContent()) ?? "", /invoice-reader/);
    } finally {
      await context.close();
    }
  });

  test("5 s tokens: keeps working across expiries with one refresh per token, two tabs sharing it", async (t) => {
    const { context, page, traffic } = await newContext();
    try {
      await pc.register("cat@example.com");
      await signIn(page, "cat@example.com");
      // A second tab gets the first tab's tokens over BroadcastChannel: no sign-in, no refresh.
      const tab2 = await context.newPage();
      await tab2.goto(`${app.origin}/`);
      await tab2.getByTestId("email").filter({ hasText: "cat@example.com" }).waitFor({ timeout: 10_000 });
      assert.equal(traffic.authorizeRequests.length, 1);
      const start = Date.now();
      const startRefreshes = traffic.refreshes().length;
      const results: string[] = [];
      // Bounded: 20 s of one call a second in each tab.
      while (Date.now() - start < 20_000) {
        const [a, b] = await Promise.all([callApi(page), callApi(tab2)]);
        results.push(a, b);
        await sleep(1000);
      }
      const elapsed = (Date.now() - start) / 1000;
      assert.ok(
        results.every((r) => r === "200"),
        `every call succeeded: ${results.join(",")}`,
      );
      const refreshes = traffic.refreshes().slice(startRefreshes);
      // One refresh per token lifetime (at 75% of it), not one per tab.
      const perToken = elapsed / (ACCESS_TTL_S * 0.75);
      t.diagnostic(`${refreshes.length} refreshes, ${results.length} calls in ${elapsed.toFixed(1)} s (two tabs)`);
      assert.ok(
        refreshes.length >= Math.floor(elapsed / ACCESS_TTL_S) - 1 && refreshes.length <= Math.ceil(perToken) + 1,
        `${refreshes.length} refreshes in ${elapsed.toFixed(1)} s`,
      );
      // No refresh token was ever presented twice, and none was refused.
      const presented = traffic.refreshes().map((r) => r.refreshToken);
      assert.equal(new Set(presented).size, presented.length, "a refresh token was presented twice");
      const refused = traffic.responses.filter((r) => r.status !== 200);
      assert.deepEqual(refused, [], "no refresh was refused (refresh_token_reused ends every session)");
      assert.ok(!pc.log.join("").includes("already used"), pc.log.join(""));
      // Reloading one tab picks the tokens up from the other, again without a refresh.
      const before = traffic.refreshes().length;
      await tab2.reload();
      await tab2.getByTestId("email").filter({ hasText: "cat@example.com" }).waitFor({ timeout: 10_000 });
      assert.equal(await callApi(tab2), "200");
      assert.ok(traffic.refreshes().length - before <= 1);
      assert.equal(traffic.authorizeRequests.length, 1);
    } finally {
      await context.close();
    }
  });

  test("signOut() revokes at the server: the old access token is refused", async () => {
    const { context, page, traffic } = await newContext();
    try {
      await pc.register("dan@example.com");
      await signIn(page, "dan@example.com");
      const sent = page.waitForRequest((r) => r.url() === `${pc.base}/oauth/userinfo` && r.method() === "GET");
      await page.getByRole("button", { name: "Call the API" }).click();
      const accessToken = ((await (await sent).headerValue("authorization")) ?? "").replace(/^Bearer /, "");
      assert.ok(accessToken.split(".").length === 3, "captured the access token");
      assert.equal((await pc.call("GET", "/oauth/userinfo", accessToken)).status, 200);
      const lastIssued = traffic.responses.filter((r) => r.status === 200).at(-1)?.body;
      const refreshToken = lastIssued?.refresh_token as string;
      assert.ok(refreshToken);
      await page.getByRole("button", { name: "Sign out" }).click();
      // RP-initiated logout at Portcullis, then back to the registered post-logout URI.
      await page.waitForURL((u) => u.href.startsWith(`${app.origin}/`) && !u.href.includes("logout"), { timeout: 15_000 });
      await page.getByTestId("signed-out").waitFor();
      assert.equal((await pc.call("GET", "/oauth/userinfo", accessToken)).status, 401);
      const again = await pc.form("/oauth/token", { grant_type: "refresh_token", refresh_token: refreshToken, client_id: clientId });
      assert.equal(again.status, 400);
      assert.equal(again.body.error, "invalid_grant");
      // The hosted pages' browser session ended too: signing in asks for the password again.
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.waitForURL((u) => u.href.startsWith(pc.base));
      await page.getByLabel("Password").waitFor();
    } finally {
      await context.close();
    }
  });

  test("a callback with a state this tab did not send is refused", async () => {
    const { context, page, traffic } = await newContext();
    try {
      await pc.register("eve@example.com");
      // A forged callback (login CSRF): a code of the attacker's, a state of their choosing.
      await page.goto(`${app.origin}/callback?code=forged&state=forged`);
      await page.getByTestId("auth-error").filter({ hasText: "state_mismatch" }).waitFor();
      assert.equal(await page.getByTestId("signed-in").count(), 0);
      assert.equal(new URL(page.url()).search, "", "the code left the address bar");
      assert.equal(traffic.requests.length, 0, "no code was redeemed");
      // A real code with its state swapped on the way back.
      await page.addInitScript(() => {
        if (location.pathname === "/callback" && location.search.includes("state=")) {
          const u = new URL(location.href);
          u.searchParams.set("state", "swapped");
          history.replaceState(null, "", u.pathname + u.search);
        }
      });
      await page.goto(`${app.origin}/`);
      await page.getByRole("button", { name: "Sign in" }).click();
      await hostedSignIn(page, pc.base, "eve@example.com");
      await page.getByTestId("auth-error").filter({ hasText: "state_mismatch" }).waitFor();
      await page.goto(`${app.origin}/`);
      await page.getByTestId("signed-out").waitFor();
      assert.equal(traffic.requests.length, 0, "no code was redeemed");
    } finally {
      await context.close();
    }
  });

  test("an ID token with another nonce is refused, and its tokens handed back", async () => {
    const { context, page, traffic } = await newContext();
    try {
      await pc.register("fay@example.com");
      // The nonce this tab remembers differs from the one the authorization request sent.
      await page.addInitScript(() => {
        if (location.pathname !== "/callback") return;
        for (let i = 0; i < sessionStorage.length; i++) {
          const k = sessionStorage.key(i) ?? "";
          if (!k.includes(":pending:")) continue;
          const v = JSON.parse(sessionStorage.getItem(k) ?? "{}") as { nonce?: string };
          v.nonce = "not-the-one-sent";
          sessionStorage.setItem(k, JSON.stringify(v));
        }
      });
      await page.goto(`${app.origin}/`);
      await page.getByRole("button", { name: "Sign in" }).click();
      await hostedSignIn(page, pc.base, "fay@example.com");
      await page.getByTestId("auth-error").filter({ hasText: "nonce_mismatch" }).waitFor();
      assert.equal(await page.getByTestId("signed-in").count(), 0);
      await page.goto(`${app.origin}/`);
      await page.getByTestId("signed-out").waitFor();
      // The code was redeemed, the tokens were not used: the refresh token was revoked.
      const issued = traffic.responses.find((r) => r.status === 200)?.body;
      assert.ok(issued?.refresh_token);
      let refused = { status: 0, body: {} as Record<string, unknown> };
      for (let i = 0; i < 20; i++) {
        refused = await pc.form("/oauth/token", { grant_type: "refresh_token", refresh_token: issued.refresh_token as string, client_id: clientId });
        if (refused.status === 400) break;
        await sleep(100);
      }
      assert.equal(refused.status, 400, JSON.stringify(refused.body));
    } finally {
      await context.close();
    }
  });

  test('refreshTokenStorage="sessionStorage": a reload stays signed in, with one refresh', async () => {
    const { context, page, traffic } = await newContext();
    try {
      await pc.register("hal@example.com");
      await signIn(page, "hal@example.com", kept.origin);
      const key = `portcullis:${clientId}:session`;
      const stored = await page.evaluate((k) => sessionStorage.getItem(k), key);
      const tokens = traffic.responses.at(-1)?.body;
      assert.ok(stored && tokens?.refresh_token);
      assert.ok(stored.includes(tokens.refresh_token as string), "the refresh token is in sessionStorage");
      assert.ok(!stored.includes(tokens.access_token as string), "the access token is not");
      const before = traffic.refreshes().length;
      await page.reload();
      await page.getByTestId("email").filter({ hasText: "hal@example.com" }).waitFor();
      assert.equal(await callApi(page), "200");
      // The reload's refresh (and perhaps one background refresh just before it).
      const after = traffic.refreshes().length - before;
      assert.ok(after >= 1 && after <= 2, `${after} refreshes`);
      assert.deepEqual(traffic.responses.filter((r) => r.status !== 200), []);
      assert.equal(traffic.authorizeRequests.length, 1);
      // Signing out clears it.
      await page.getByRole("button", { name: "Sign out" }).click();
      await page.waitForURL((u) => u.href.startsWith(`${kept.origin}/`), { timeout: 15_000 });
      await page.getByTestId("signed-out").waitFor();
      assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), key), null);
    } finally {
      await context.close();
    }
  });

  test("has({ plan }) reads metadata.plan once public_metadata.plan is set", async () => {
    const { context, page } = await newContext();
    try {
      const id = await pc.register("gus@example.com");
      await signIn(page, "gus@example.com");
      await page.getByTestId("pro-denied").waitFor();
      const set = await pc.call("PATCH", `/v1/admin/users/${id}`, await pc.admin(), { public_metadata: { plan: "pro" } });
      assert.equal(set.status, 200, JSON.stringify(set.body));
      await page.getByTestId("pro").waitFor({ timeout: 4 * ACCESS_TTL_S * 1000 });
      assert.equal(await page.getByTestId("pro-denied").count(), 0);
    } finally {
      await context.close();
    }
  });
});
