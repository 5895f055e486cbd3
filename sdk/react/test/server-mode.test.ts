/**
 * Server mode (what Next.js apps use): the provider holds no tokens and reads
 * `${basePath}/session`. Rendered on the server with react-dom/server, and in
 * Chromium against a stub session endpoint.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import {
  checkHas,
  PortcullisProvider,
  Protect,
  SignedIn,
  SignedOut,
  type ServerSession,
} from "@portcullis/react";
import type { Browser, Page } from "playwright-core";
import { createElement as h } from "react";
import { renderToString } from "react-dom/server";
import { build } from "vite";

import { launchChromium, SDK_DIR, StaticServer } from "./harness.js";

const SIGNED_IN: ServerSession = {
  isSignedIn: true,
  userId: "usr_1",
  sessionId: "ses_1",
  claims: { sub: "usr_1", sid: "ses_1", scope: "openid email read:invoices", roles: ["admin"], metadata: { plan: "pro" } },
  user: { sub: "usr_1", email: "ann@example.com", email_verified: true },
};

describe("the built package", () => {
  test('keeps "use client" at the top of the entry files that use hooks or context', () => {
    const files = ["index.js", ...readdirSync(join(SDK_DIR, "dist/react")).filter((f) => f.endsWith(".js")).map((f) => `react/${f}`)];
    assert.ok(files.length >= 5, files.join());
    for (const f of files) {
      const first = readFileSync(join(SDK_DIR, "dist", f), "utf8").split("\n")[0];
      assert.equal(first, '"use client";', `dist/${f}`);
    }
    // The framework-free core can be imported by server code as is.
    for (const f of readdirSync(join(SDK_DIR, "dist/core")).filter((f) => f.endsWith(".js"))) {
      assert.notEqual(readFileSync(join(SDK_DIR, "dist/core", f), "utf8").split("\n")[0], '"use client";', `dist/core/${f}`);
    }
  });

  test("checkHas: every given condition must hold", () => {
    const c = SIGNED_IN.claims!;
    assert.ok(checkHas(c, {}));
    assert.ok(checkHas(c, { permission: "read:invoices", role: "admin", plan: "pro" }));
    assert.ok(!checkHas(c, { permission: "read:invoices", plan: "free" }));
    assert.ok(!checkHas(c, { permission: "read" }), "whole scopes only");
    assert.ok(!checkHas(c, { role: "owner" }));
    assert.ok(checkHas(c, { scope: "email" }));
    assert.ok(!checkHas(null, {}));
    assert.ok(!checkHas({ sub: "x" }, { plan: "pro" }));
  });
});

describe("server-side rendering", () => {
  test("browser mode renders as not loaded and touches no window", () => {
    const html = renderToString(
      h(
        PortcullisProvider,
        { issuer: "http://127.0.0.1:1", clientId: "c" },
        h(SignedIn, null, "IN"),
        h(SignedOut, null, "OUT"),
        h(Protect, { fallback: "FALLBACK" }, "SECRET"),
      ),
    );
    assert.equal(html, "");
  });

  test("server mode renders the initial session", () => {
    const tree = (session: ServerSession | null) =>
      // React separates adjacent text nodes with empty comments.
      renderToString(
        h(
          PortcullisProvider,
          { mode: "server", initialSession: session },
          h(SignedIn, null, "IN "),
          h(SignedOut, null, "OUT "),
          h(Protect, { permission: "read:invoices", fallback: "NO-INVOICES " }, "INVOICES "),
          h(Protect, { plan: "enterprise", fallback: "NO-ENTERPRISE " }, "ENTERPRISE "),
          h(Protect, { condition: (has) => has({ role: "admin" }) && has({ plan: "pro" }) }, "ADMIN-PRO"),
        ),
      ).replaceAll("<!-- -->", "");
    assert.equal(tree(SIGNED_IN), "IN INVOICES NO-ENTERPRISE ADMIN-PRO");
    assert.equal(tree(null), "OUT NO-INVOICES NO-ENTERPRISE ");
    assert.equal(tree({ isSignedIn: false }), "OUT NO-INVOICES NO-ENTERPRISE ");
  });
});

describe("server mode in the browser", () => {
  let app: StaticServer;
  let browser: Browser;
  let out: string;
  let session: ServerSession | "fail" = { isSignedIn: false };
  let sessionReads = 0;
  const visits: string[] = [];

  before(async () => {
    out = mkdtempSync(join(tmpdir(), "portcullis-react-server-mode-"));
    await build({
      root: join(SDK_DIR, "test/fixtures/server-mode"),
      configFile: false,
      // "error": Vite warns that it drops the "use client" directives (as it should).
      logLevel: "error",
      resolve: { alias: { "@portcullis/react": join(SDK_DIR, "dist/index.js") } },
      build: { outDir: out, emptyOutDir: true },
    });
    app = await StaticServer.start();
    app.root = out;
    app.routes.set("/api/auth/session", (req, res) => {
      sessionReads++;
      if (session === "fail") {
        res.writeHead(500).end();
        return;
      }
      assert.equal(req.headers.authorization, undefined);
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(session));
    });
    for (const route of ["/api/auth/login", "/api/auth/logout"]) {
      app.routes.set(route, (_req, res, url) => {
        visits.push(`${url.pathname}${url.search}`);
        res.writeHead(200, { "content-type": "text/html" }).end(`<p id="visited">${url.pathname}</p>`);
      });
    }
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await app?.stop();
    rmSync(out, { recursive: true, force: true });
  });

  async function state(page: Page): Promise<Record<string, unknown>> {
    await page.getByTestId("state").filter({ hasText: '"isLoaded":true' }).waitFor();
    return JSON.parse((await page.getByTestId("state").textContent()) ?? "{}") as Record<string, unknown>;
  }

  test("reads the session: signed out, then signed in with claims and user; getToken() is null", async () => {
    const page = await browser.newPage();
    try {
      session = { isSignedIn: false };
      await page.goto(`${app.origin}/dashboard?tab=2`);
      await page.getByTestId("signed-out").waitFor();
      assert.deepEqual(await state(page), {
        isLoaded: true,
        isSignedIn: false,
        userId: null,
        sessionId: null,
        userLoaded: true,
        email: null,
        error: null,
        admin: false,
        invoices: false,
        pro: false,
      });
      await page.getByTestId("no-invoices").waitFor();

      session = SIGNED_IN;
      await page.reload();
      await page.getByTestId("signed-in").waitFor();
      assert.deepEqual(await state(page), {
        isLoaded: true,
        isSignedIn: true,
        userId: "usr_1",
        sessionId: "ses_1",
        userLoaded: true,
        email: "ann@example.com",
        error: null,
        admin: true,
        invoices: true,
        pro: true,
      });
      await page.getByTestId("invoices").waitFor();
      await page.getByRole("button", { name: "Get token" }).click();
      await page.getByTestId("token").filter({ hasText: "null" }).waitFor();
      // Nothing about the session is kept in the browser.
      const stored = await page.evaluate(() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }));
      assert.equal(stored, "{}{}");
    } finally {
      await page.close();
    }
  });

  test("signIn() goes to ${basePath}/login with the current path; signOut() to ${basePath}/logout", async () => {
    const page = await browser.newPage();
    try {
      session = { isSignedIn: false };
      visits.length = 0;
      await page.goto(`${app.origin}/dashboard?tab=2`);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.locator("#visited").waitFor();
      assert.deepEqual(visits, [`/api/auth/login?returnTo=${encodeURIComponent("/dashboard?tab=2")}`]);
      session = SIGNED_IN;
      await page.goto(`${app.origin}/`);
      await page.getByRole("button", { name: "Sign out" }).click();
      await page.locator("#visited").waitFor();
      assert.deepEqual(visits.at(-1), "/api/auth/logout");
    } finally {
      await page.close();
    }
  });

  test("an initial session renders at once without a fetch; a failing endpoint shows session_unavailable", async () => {
    const page = await browser.newPage();
    try {
      session = "fail";
      sessionReads = 0;
      await page.addInitScript((s) => {
        (window as unknown as { __PORTCULLIS_SESSION__: unknown }).__PORTCULLIS_SESSION__ = s;
      }, SIGNED_IN);
      await page.goto(`${app.origin}/`);
      await page.getByTestId("signed-in").waitFor();
      assert.equal((await state(page)).email, "ann@example.com");
      assert.equal(sessionReads, 0);
    } finally {
      await page.close();
    }
    const failing = await browser.newPage();
    try {
      await failing.goto(`${app.origin}/`);
      await failing.getByTestId("signed-out").waitFor();
      assert.equal((await state(failing)).error, "session_unavailable");
    } finally {
      await failing.close();
      session = { isSignedIn: false };
    }
  });
});
