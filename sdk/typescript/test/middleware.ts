/**
 * `@portcullis/sdk/express` and `@portcullis/sdk/fastify` against a real Portcullis:
 * the same protected API in each, 401/403/200, API keys, key rotation, JWKS caching.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import express from "express";
import { SignJWT, decodeProtectedHeader, generateKeyPair } from "jose";

import { requireAuth, requireScope } from "@portcullis/sdk/express";
import * as pf from "@portcullis/sdk/fastify";
import Fastify from "fastify";

import { Portcullis, Proxy, listen, sleep } from "./harness.js";

export type Api = { base: string; close: () => Promise<void> };
type Options = Parameters<typeof requireAuth>[0];

export function expressApp(options: Options): Promise<Api> {
  const a = express();
  a.get("/whoami", requireAuth(options), (req, res) => {
    res.json(req.auth);
  });
  a.get("/orders", requireAuth(options), requireScope("read:orders"), (req, res) => {
    res.json({ orders: [], for: req.auth?.userId });
  });
  return listen(a);
}

export async function fastifyApp(options: Options): Promise<Api> {
  const a = Fastify();
  await a.register(pf.portcullis, options);
  a.get("/whoami", { preHandler: pf.requireAuth }, async (req) => req.auth);
  a.get("/orders", { preHandler: pf.requireScope("read:orders") }, async (req) => ({ orders: [], for: req.auth?.userId }));
  await a.listen({ host: "127.0.0.1", port: 0 });
  const { port } = a.server.address() as { port: number };
  return { base: `http://127.0.0.1:${port}`, close: () => a.close() };
}

/** The contract every framework adapter must meet. */
export function run(name: string, app: (options: Options) => Promise<Api>): void {
  let pc: Portcullis;

  let api: Api;
  let noKeysApi: Api;
  let reader: string;
  let plain: string;
  let readerKey: string;
  let plainKey: string;


  before(async () => {
    pc = await Portcullis.start();
    const admin = await pc.admin();
    reader = (await pc.userWith(admin, "reader@example.com", "orders", ["read:orders"])).access_token;
    await pc.register("plain@example.com");
    plain = (await pc.login("plain@example.com")).access_token;
    const service = (await pc.userWith(admin, "service@example.com", "verifier", ["api_keys:verify"])).access_token;
    const verifierKey = await pc.apiKey(service, ["api_keys:verify"]);
    readerKey = await pc.apiKey(reader, ["read:orders"]);
    plainKey = await pc.apiKey(plain, []);
    api = await app({ issuer: pc.base, apiKeys: { verifierKey } });
    noKeysApi = await app({ issuer: pc.base });
  });

  after(async () => {
    await api?.close();
    await noKeysApi?.close();
    await pc?.stop();
  });

  async function get(base: string, path: string, headers: Record<string, string> = {}) {
    const res = await fetch(`${base}${path}`, { headers });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
  }

  const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

  test(`${name}: no credential: 401 missing_token with a bare challenge`, async () => {
    const r = await get(api.base, "/orders");
    assert.equal(r.status, 401);
    assert.equal(r.headers.get("content-type")?.split(";")[0], "application/problem+json");
    assert.equal(r.headers.get("www-authenticate"), 'Bearer realm="portcullis"');
    assert.equal(r.body.code, "missing_token");
    assert.equal(r.body.status, 401);
    assert.equal(r.body.type, "https://portcullis.dev/problems/missing-token");
    // A scheme other than Bearer is no bearer token.
    assert.equal((await get(api.base, "/orders", { authorization: "Basic YTpi" })).body.code, "missing_token");
  });

  test(`${name}: forged tokens: 401 invalid_token`, async () => {
    const [h, p, s] = reader.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, "base64url").toString());
    const header = decodeProtectedHeader(reader);
    // More scopes, same signature.
    const widened = Buffer.from(JSON.stringify({ ...claims, scope: "read:orders admin:users:write" })).toString("base64url");
    // Signed by a key of our own under the server's kid.
    const { privateKey } = await generateKeyPair("RS256");
    const foreign = await new SignJWT(claims).setProtectedHeader({ alg: "RS256", typ: "at+jwt", kid: header.kid }).sign(privateKey);
    // alg none, and HS256 with the public key's id.
    const none = `${Buffer.from(JSON.stringify({ alg: "none", typ: "at+jwt", kid: header.kid })).toString("base64url")}.${p}.`;
    const hs = await new SignJWT(claims)
      .setProtectedHeader({ alg: "HS256", typ: "at+jwt", kid: header.kid })
      .sign(new TextEncoder().encode("a shared secret of 32 bytes....."));
    // Not an access token (typ JWT, as an ID token would be).
    for (const token of [`${h}.${widened}.${s}`, foreign, none, hs, "not-a-jwt", `${h}.${p}.${s}x`]) {
      const r = await get(api.base, "/orders", bearer(token));
      assert.equal(r.status, 401, token);
      assert.equal(r.body.code, "invalid_token", token);
      assert.match(r.headers.get("www-authenticate") ?? "", /^Bearer realm="portcullis", error="invalid_token"/);
    }
    const empty = await get(api.base, "/orders", { authorization: "Bearer " });
    assert.equal(empty.status, 401);
    assert.equal(empty.body.code, "invalid_token");
  });

  test(`${name}: wrong audience or issuer: 401 invalid_token`, async () => {
    const strict = await app({ issuer: pc.base, audience: "https://api.example.com" });
    const otherIssuer = await app({ issuer: "http://127.0.0.1:1", baseUrl: pc.base });
    try {
      for (const base of [strict.base, otherIssuer.base]) {
        const r = await get(base, "/orders", bearer(reader));
        assert.equal(r.status, 401);
        assert.equal(r.body.code, "invalid_token");
      }
    } finally {
      await strict.close();
      await otherIssuer.close();
    }
  });

  test(`${name}: a token without the scope: 403 insufficient_scope naming it`, async () => {
    const r = await get(api.base, "/orders", bearer(plain));
    assert.equal(r.status, 403);
    assert.equal(r.body.code, "insufficient_scope");
    assert.deepEqual(r.body.required_scopes, ["read:orders"]);
    assert.equal(r.headers.get("www-authenticate"), 'Bearer realm="portcullis", error="insufficient_scope", scope="read:orders"');
    // Authenticated all the same.
    assert.equal((await get(api.base, "/whoami", bearer(plain))).status, 200);
  });

  test(`${name}: a token with the scope: 200 and req.auth`, async () => {
    const r = await get(api.base, "/orders", bearer(reader));
    assert.equal(r.status, 200);
    const who = await get(api.base, "/whoami", bearer(reader));
    assert.equal(who.status, 200);
    assert.match(who.body.userId, /^usr_/);
    assert.match(who.body.sessionId, /^ses_/);
    assert.equal(who.body.clientId, null);
    assert.ok(who.body.scopes.includes("read:orders"));
    assert.deepEqual(who.body.roles.includes("orders"), true);
    assert.equal(who.body.claims.iss, pc.base);
    assert.equal(r.body.for, who.body.userId);
  });

  test(`${name}: API keys: 200 with the scope, 403 without, 401 unknown, ignored when not enabled`, async () => {
    const ok = await get(api.base, "/orders", { "x-api-key": readerKey });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const who = await get(api.base, "/whoami", { "x-api-key": readerKey });
    assert.match(who.body.userId, /^usr_/);
    assert.match(who.body.apiKeyId, /.+/);
    assert.equal(who.body.claims, null);
    const lacking = await get(api.base, "/orders", { "x-api-key": plainKey });
    assert.equal(lacking.status, 403);
    assert.deepEqual(lacking.body.required_scopes, ["read:orders"]);
    const unknown = await get(api.base, "/orders", { "x-api-key": `${readerKey.slice(0, -4)}AAAA` });
    assert.equal(unknown.status, 401);
    assert.equal(unknown.body.code, "invalid_token");
    const off = await get(noKeysApi.base, "/orders", { "x-api-key": readerKey });
    assert.equal(off.status, 401);
    assert.equal(off.body.code, "missing_token");
  });

  test(`${name}: a key rotation on the server is picked up without a restart`, async () => {
    // Warm the JWKS cache with the old key.
    assert.equal((await get(api.base, "/orders", bearer(reader))).status, 200);
    pc.cli(["keys", "rotate", "--algorithm", "ES256"]);
    // The server reloads its keys every second (keys.reload_interval): wait for an ES256 token.
    let token = "";
    for (let i = 0; i < 100 && !token; i++) {
      const t = (await pc.login("reader@example.com")).access_token;
      if (decodeProtectedHeader(t).alg === "ES256") token = t;
      else await sleep(100);
    }
    assert.ok(token, "the server never signed with the new key");
    // The unknown kid refetches the JWKS (at most once per 5 s cooldown, as in portcullis-verify).
    let status = 0;
    for (let i = 0; i < 40 && status !== 200; i++) {
      status = (await get(api.base, "/orders", bearer(token))).status;
      if (status !== 200) await sleep(250);
    }
    assert.equal(status, 200);
    // Tokens of the old key still pass: it stays published until its tokens expire.
    assert.equal((await get(api.base, "/orders", bearer(reader))).status, 200);
  });

  test(`${name}: JWKS: one fetch for 20 cold requests; cached keys keep working through an outage`, async () => {
    const proxy = await Proxy.start(pc.base);
    const viaProxy = await app({ issuer: pc.base, baseUrl: proxy.base, jwksMaxAgeMs: 1_000, refetchIntervalMs: 1_000 });
    try {
      const cold = await Promise.all(Array.from({ length: 20 }, () => get(viaProxy.base, "/orders", bearer(reader))));
      for (const r of cold) assert.equal(r.status, 200);
      assert.equal(proxy.count("GET /.well-known/jwks.json"), 1);
      // Portcullis goes away; the keys are past their max age.
      proxy.faults.set("GET /.well-known/jwks.json", Array.from({ length: 50 }, () => ({ status: 503 })));
      await sleep(1_100);
      for (let i = 0; i < 20; i++) assert.equal((await get(viaProxy.base, "/orders", bearer(reader))).status, 200);
      // One failed attempt, then none for refetchIntervalMs.
      assert.equal(proxy.count("GET /.well-known/jwks.json"), 2);
      // Made-up key ids do not make it hammer the server either.
      const claims = JSON.parse(Buffer.from(reader.split(".")[1] ?? "", "base64url").toString());
      const { privateKey } = await generateKeyPair("ES256");
      for (let i = 0; i < 10; i++) {
        const t = await new SignJWT(claims).setProtectedHeader({ alg: "ES256", typ: "at+jwt", kid: `made-up-${i}` }).sign(privateKey);
        assert.equal((await get(viaProxy.base, "/orders", bearer(t))).status, 401);
      }
      assert.ok(proxy.count("GET /.well-known/jwks.json") <= 3);
    } finally {
      await viaProxy.close();
      await proxy.stop();
    }
  });
}
