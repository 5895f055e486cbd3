/** `@portcullis/sdk/next` against a real Portcullis: route handlers and the middleware. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { createRouteMatcher, portcullisMiddleware, withAuth } from "@portcullis/sdk/next";

import { Portcullis } from "./harness.js";

let pc: Portcullis;
let reader: string;
let plain: string;
let readerKey: string;
let verifierKey: string;

before(async () => {
  pc = await Portcullis.start();
  const admin = await pc.admin();
  reader = (await pc.userWith(admin, "reader@example.com", "orders", ["read:orders"])).access_token;
  await pc.register("plain@example.com");
  plain = (await pc.login("plain@example.com")).access_token;
  const service = (await pc.userWith(admin, "service@example.com", "verifier", ["api_keys:verify"])).access_token;
  verifierKey = await pc.apiKey(service, ["api_keys:verify"]);
  readerKey = await pc.apiKey(reader, ["read:orders"]);
});

after(async () => {
  await pc?.stop();
});

const req = (path: string, headers: Record<string, string> = {}) => new Request(`http://app.example${path}`, { headers });
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

test("next: withAuth answers 401/403 as Portcullis and gives the handler ctx.auth", async () => {
  const GET = withAuth(
    async (_request, ctx) => Response.json({ user: ctx.auth.userId, scopes: ctx.auth.scopes }),
    { issuer: pc.base, scope: "read:orders", apiKeys: { verifierKey } },
  );
  const ctx = { params: Promise.resolve({}) };
  const none = await GET(req("/api/orders"), ctx);
  assert.equal(none.status, 401);
  assert.equal(none.headers.get("content-type"), "application/problem+json");
  assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="portcullis"');
  assert.equal(((await none.json()) as { code: string }).code, "missing_token");

  const forged = await GET(req("/api/orders", bearer(`${reader.slice(0, -3)}AAA`)), ctx);
  assert.equal(forged.status, 401);
  assert.equal(((await forged.json()) as { code: string }).code, "invalid_token");

  const lacking = await GET(req("/api/orders", bearer(plain)), ctx);
  assert.equal(lacking.status, 403);
  const body = (await lacking.json()) as { code: string; required_scopes: string[] };
  assert.equal(body.code, "insufficient_scope");
  assert.deepEqual(body.required_scopes, ["read:orders"]);

  const ok = await GET(req("/api/orders", bearer(reader)), ctx);
  assert.equal(ok.status, 200);
  assert.match(((await ok.json()) as { user: string }).user, /^usr_/);

  const key = await GET(req("/api/orders", { "x-api-key": readerKey }), ctx);
  assert.equal(key.status, 200);
});

test("next: settings from PORTCULLIS_ISSUER and PORTCULLIS_VERIFIER_KEY", async () => {
  process.env.PORTCULLIS_ISSUER = pc.base;
  process.env.PORTCULLIS_VERIFIER_KEY = verifierKey;
  try {
    const GET = withAuth(async (_r, ctx) => Response.json({ key: ctx.auth.apiKeyId }));
    assert.equal((await GET(req("/x", { "x-api-key": readerKey }), { params: Promise.resolve({}) })).status, 200);
  } finally {
    delete process.env.PORTCULLIS_ISSUER;
    delete process.env.PORTCULLIS_VERIFIER_KEY;
  }
});

test("next: the middleware protects matching paths only", async () => {
  const isProtected = createRouteMatcher(["/dashboard(.*)", "/api/orders/:id"]);
  assert.equal(isProtected(req("/dashboard")), true);
  assert.equal(isProtected(req("/dashboard/settings")), true);
  assert.equal(isProtected(req("/api/orders/42")), true);
  assert.equal(isProtected(req("/api/orders/42/items")), false);
  assert.equal(isProtected(req("/")), false);
  const middleware = portcullisMiddleware({ issuer: pc.base, protect: isProtected });
  assert.equal(await middleware(req("/")), undefined);
  assert.equal((await middleware(req("/dashboard")))?.status, 401);
  assert.equal(await middleware(req("/dashboard", bearer(plain))), undefined);
  const scoped = portcullisMiddleware({ issuer: pc.base, protect: "/api/(.*)", scope: ["read:orders"] });
  assert.equal((await scoped(req("/api/orders/1", bearer(plain))))?.status, 403);
  assert.equal(await scoped(req("/api/orders/1", bearer(reader))), undefined);
});
