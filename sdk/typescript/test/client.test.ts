/**
 * `createClient` against a real Portcullis behind a counting proxy: credentials,
 * client-credentials caching, retries, refresh single flight, typed errors.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { PortcullisError, createClient, type Tokens } from "@portcullis/sdk";

import { Portcullis, Proxy, sleep } from "./harness.js";

let pc: Portcullis;
let proxy: Proxy;
let admin: string;
let cc: { clientId: string; clientSecret: string };

before(async () => {
  pc = await Portcullis.start();
  proxy = await Proxy.start(pc.base);
  admin = await pc.admin();
  const out = JSON.parse(
    pc.cli(["clients", "create", "--name", "svc", "--grant-type", "client_credentials", "--scope", "api_keys:verify"]),
  );
  cc = { clientId: out.client_id, clientSecret: out.client_secret };
});

after(async () => {
  await proxy?.stop();
  await pc?.stop();
});

test("typed calls with a bearer token; non-2xx throws PortcullisError with the problem", async () => {
  const client = createClient({ baseUrl: proxy.base, accessToken: admin });
  const { data, error } = await client.GET("/v1/me");
  assert.equal(error, undefined);
  assert.equal(data?.email, "admin@example.com");
  const anon = createClient({ baseUrl: proxy.base });
  const err = await anon.GET("/v1/me").then(
    () => assert.fail("no error"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof PortcullisError);
  assert.equal(err.status, 401);
  assert.equal(err.code, "missing_token");
  assert.equal(err.problem?.code, "missing_token");
});

test("an API key is sent as X-API-Key", async () => {
  const key = await pc.apiKey(admin, ["admin:users:read"]);
  const client = createClient({ baseUrl: proxy.base, apiKey: key });
  const { data } = await client.GET("/v1/me");
  assert.equal(data?.email, "admin@example.com");
});

test("OAuth errors carry error and error_description", async () => {
  const client = createClient({ baseUrl: proxy.base, clientCredentials: { ...cc, clientSecret: "wrong" } });
  const err = await client.POST("/v1/api-keys/verify", { body: { key: "x" } }).then(
    () => assert.fail("no error"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof PortcullisError);
  assert.equal(err.status, 401);
  assert.equal(err.error, "invalid_client");
  assert.equal(err.code, "invalid_client");
});

test("a client-credentials token is fetched once and reused until near expiry", async () => {
  const before = proxy.count("POST /oauth/token");
  const client = createClient({ baseUrl: proxy.base, clientCredentials: { ...cc, scope: "api_keys:verify" } });
  // Concurrent first calls share one token request.
  const answers = await Promise.all(
    Array.from({ length: 5 }, () => client.POST("/v1/api-keys/verify", { body: { key: "pk_unknown" } })),
  );
  for (const a of answers) assert.equal(a.data?.active, false);
  await client.POST("/v1/api-keys/verify", { body: { key: "pk_unknown" } });
  assert.equal(proxy.count("POST /oauth/token") - before, 1);
});

test("a 503 with Retry-After is retried after the delay, then answered; bodies are re-sent", async () => {
  const client = createClient({ baseUrl: proxy.base, accessToken: admin });
  proxy.faults.set("GET /v1/me", [{ status: 503, headers: { "retry-after": "1" } }]);
  const seen = proxy.count("GET /v1/me");
  const t0 = Date.now();
  const { data } = await client.GET("/v1/me");
  assert.equal(data?.email, "admin@example.com");
  assert.ok(Date.now() - t0 >= 950, "Retry-After honoured");
  assert.equal(proxy.count("GET /v1/me") - seen, 2);

  // A POST answered 429 then 503: the same JSON body goes out each time.
  proxy.faults.set("POST /v1/api-keys", [
    { status: 429, headers: { "retry-after": "0" } },
    { status: 503, headers: { "retry-after": "0" } },
  ]);
  const { data: created } = await client.POST("/v1/api-keys", { body: { name: "retried", scopes: [] } });
  assert.equal(created?.name, "retried");
  assert.match(created?.key ?? "", /.+/);
});

test("retries are bounded: the 4th 503 is thrown", async () => {
  const client = createClient({ baseUrl: proxy.base, accessToken: admin, retryBaseMs: 1 });
  const fault = { status: 503, headers: {} };
  proxy.faults.set("GET /v1/me", [fault, fault, fault, fault, fault]);
  const seen = proxy.count("GET /v1/me");
  const err = await client.GET("/v1/me").then(
    () => assert.fail("no error"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof PortcullisError);
  assert.equal(err.status, 503);
  assert.equal(proxy.count("GET /v1/me") - seen, 4);
  proxy.faults.delete("GET /v1/me");
});

test("network errors are retried for GET only", async () => {
  // A port nobody listens on.
  const dead = "http://127.0.0.1:9";
  let calls = 0;
  const counting: typeof fetch = (input, init) => {
    calls++;
    return fetch(input, init);
  };
  const client = createClient({ baseUrl: dead, accessToken: admin, retryBaseMs: 1, fetch: counting });
  await assert.rejects(client.GET("/v1/me"));
  assert.equal(calls, 4);
  calls = 0;
  await assert.rejects(client.POST("/v1/api-keys", { body: { name: "x", scopes: [] } }));
  assert.equal(calls, 1);
});

test("a spent refresh token is not presented twice: the error is thrown and the tokens dropped", async () => {
  const login = await pc.login("admin@example.com");
  // Spend it behind the client's back (as another tab would).
  const spent = await pc.call("POST", "/v1/auth/refresh", undefined, { refresh_token: login.refresh_token });
  assert.equal(spent.status, 200);
  const tokens: Tokens[] = [];
  const client = createClient({
    baseUrl: proxy.base,
    accessToken: "expired-or-garbage",
    refreshToken: login.refresh_token,
    onTokens: (t) => void tokens.push(t),
  });
  const before = proxy.count("POST /v1/auth/refresh");
  const err = await client.GET("/v1/me").then(
    () => assert.fail("no error"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof PortcullisError);
  assert.equal(err.status, 401);
  assert.equal(err.code, "refresh_token_reused");
  assert.equal(proxy.count("POST /v1/auth/refresh") - before, 1);
  assert.equal(client.refreshToken, undefined);
  assert.equal(client.accessToken, undefined);
  assert.equal(tokens.length, 0);
});

test("a refresh answered 503 is not retried", async () => {
  const login = await pc.login("admin@example.com");
  const client = createClient({ baseUrl: proxy.base, accessToken: "garbage", refreshToken: login.refresh_token });
  proxy.faults.set("POST /v1/auth/refresh", [{ status: 503, headers: { "retry-after": "0" } }]);
  const before = proxy.count("POST /v1/auth/refresh");
  const err = await client.GET("/v1/me").then(
    () => assert.fail("no error"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof PortcullisError);
  assert.equal(err.status, 503);
  assert.equal(proxy.count("POST /v1/auth/refresh") - before, 1);
  // Kept: a 503 may or may not have spent it, the app decides.
  assert.equal(client.refreshToken, login.refresh_token);
  await sleep(0);
});

test("an aborted call stops waiting for its retry", async () => {
  const client = createClient({ baseUrl: proxy.base, accessToken: admin });
  proxy.faults.set("GET /v1/me", [{ status: 503, headers: { "retry-after": "5" } }]);
  const t0 = Date.now();
  await assert.rejects(client.GET("/v1/me", { signal: AbortSignal.timeout(300) }));
  assert.ok(Date.now() - t0 < 2_000);
  proxy.faults.delete("GET /v1/me");
});
