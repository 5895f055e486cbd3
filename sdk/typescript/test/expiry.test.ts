/**
 * Against a Portcullis whose access tokens live 2 s (and no leeway): expired tokens
 * refused by the middleware, one refresh for 20 concurrent 401s, client-credentials
 * tokens renewed near expiry.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import express from "express";

import { createClient, type Tokens } from "@portcullis/sdk";
import { requireAuth, requireScope } from "@portcullis/sdk/express";

import { Portcullis, Proxy, listen, sleep } from "./harness.js";

let pc: Portcullis;
let proxy: Proxy;
let login: { access_token: string; refresh_token: string };
let cc: { clientId: string; clientSecret: string };

before(async () => {
  pc = await Portcullis.start({ PORTCULLIS_TOKENS__ACCESS_TTL: "2s", PORTCULLIS_TOKENS__LEEWAY: "0s" });
  proxy = await Proxy.start(pc.base);
  const admin = await pc.admin();
  login = await pc.userWith(admin, "reader@example.com", "orders", ["read:orders"]);
  const out = JSON.parse(
    pc.cli(["clients", "create", "--name", "svc", "--grant-type", "client_credentials", "--scope", "api_keys:verify"]),
  );
  cc = { clientId: out.client_id, clientSecret: out.client_secret };
  // Let the access token expire.
  await sleep(3_000);
});

after(async () => {
  await proxy?.stop();
  await pc?.stop();
});

test("an expired token: 401 token_expired", async () => {
  const a = express();
  a.get("/orders", requireAuth({ issuer: pc.base, clockTolerance: 0 }), requireScope("read:orders"), (_req, res) => {
    res.json({ ok: true });
  });
  const api = await listen(a);
  try {
    const res = await fetch(`${api.base}/orders`, { headers: { authorization: `Bearer ${login.access_token}` } });
    assert.equal(res.status, 401);
    const body = (await res.json()) as { code: string };
    assert.equal(body.code, "token_expired");
    assert.match(res.headers.get("www-authenticate") ?? "", /error="invalid_token"/);
  } finally {
    await api.close();
  }
});

test("20 concurrent calls with an expired access token: exactly one refresh", async () => {
  const tokens: Tokens[] = [];
  const client = createClient({
    baseUrl: proxy.base,
    accessToken: login.access_token,
    refreshToken: login.refresh_token,
    onTokens: (t) => void tokens.push(t),
  });
  const before = proxy.count("POST /v1/auth/refresh");
  const answers = await Promise.all(Array.from({ length: 20 }, () => client.GET("/v1/me")));
  for (const a of answers) assert.equal(a.data?.email, "reader@example.com");
  assert.equal(proxy.count("POST /v1/auth/refresh") - before, 1);
  assert.equal(tokens.length, 1);
  assert.equal(client.accessToken, tokens[0]?.accessToken);
  assert.equal(client.refreshToken, tokens[0]?.refreshToken);
  assert.notEqual(tokens[0]?.refreshToken, login.refresh_token);
  assert.equal(tokens[0]?.expiresIn, 2);
});

test("a client-credentials token is renewed shortly before it expires", async () => {
  const client = createClient({ baseUrl: proxy.base, clientCredentials: cc });
  const before = proxy.count("POST /oauth/token");
  await client.POST("/v1/api-keys/verify", { body: { key: "pk_unknown" } });
  await client.POST("/v1/api-keys/verify", { body: { key: "pk_unknown" } });
  assert.equal(proxy.count("POST /oauth/token") - before, 1);
  // 2 s lifetime, renewed 10 % early: after 1.9 s a call gets a new one.
  await sleep(1_900);
  await client.POST("/v1/api-keys/verify", { body: { key: "pk_unknown" } });
  assert.equal(proxy.count("POST /oauth/token") - before, 2);
});
