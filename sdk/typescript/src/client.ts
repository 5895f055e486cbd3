/**
 * The typed HTTP client: `openapi-fetch` over a `fetch` that adds credentials,
 * refreshes once on 401 (single flight), caches client-credentials tokens, retries
 * 429/503 with backoff, and throws `PortcullisError` for every non-2xx answer.
 *
 * So `await client.GET("/v1/me")` resolves with `{ data, response }` and `data` is
 * always set; `error` is never set (openapi-fetch's `{ error }` branch is not used).
 */
import createFetchClient, { type Client } from "openapi-fetch";

import { PortcullisError, isObject } from "./errors.js";
import type { paths } from "./schema.js";

/** New tokens for the app to store (the old refresh token is spent). */
export interface Tokens {
  accessToken: string;
  refreshToken: string;
  /** Seconds until the access token expires. */
  expiresIn: number;
}

export interface ClientOptions {
  /** The Portcullis URL, e.g. `https://auth.example.com`. */
  baseUrl: string;
  /** Sent as `X-API-Key` (when no token is configured). */
  apiKey?: string;
  /** Sent as `Authorization: Bearer`. */
  accessToken?: string;
  /** Used once per 401 to get a new pair from `POST /v1/auth/refresh`. */
  refreshToken?: string;
  /** An OAuth client's own identity: tokens from `POST /oauth/token` (client_credentials). */
  clientCredentials?: { clientId: string; clientSecret: string; scope?: string };
  /** Called with every new token pair; store it, the old refresh token no longer works. */
  onTokens?: (tokens: Tokens) => void | Promise<void>;
  /** Retries of 429/503 (and network errors of GET/HEAD/DELETE); default 3. */
  maxRetries?: number;
  /** First backoff step in ms (doubles each retry, full jitter); default 200. */
  retryBaseMs?: number;
  /** Longest wait between two attempts in ms, `Retry-After` included; default 10 000. */
  retryMaxMs?: number;
  /** The underlying fetch (default `globalThis.fetch`). */
  fetch?: typeof globalThis.fetch;
}

/** The openapi-fetch client, plus the credentials it holds. */
export type PortcullisClient = Client<paths> & {
  /** The access token now in use (after refreshes), if any. */
  readonly accessToken: string | undefined;
  /** The refresh token now held, if any (dropped when the server refuses it). */
  readonly refreshToken: string | undefined;
  /** The credential-adding, retrying fetch the client uses, for untyped calls. */
  fetch: (input: Request) => Promise<Response>;
};

interface Credential {
  kind: "user" | "client" | "api_key";
  header: "authorization" | "x-api-key";
  value: string;
}

const IDEMPOTENT = new Set(["GET", "HEAD", "DELETE"]);

/** Codes of a 401 that a new access token can cure. */
const REFRESHABLE = new Set(["token_expired", "invalid_token"]);

export function createClient(options: ClientOptions): PortcullisClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const rawFetch = options.fetch ?? globalThis.fetch;
  const maxRetries = options.maxRetries ?? 3;
  const baseMs = options.retryBaseMs ?? 200;
  const maxMs = options.retryMaxMs ?? 10_000;

  let accessToken = options.accessToken;
  let refreshToken = options.refreshToken;
  let refreshing: Promise<string> | undefined;
  let ccToken: { token: string; renewAt: number } | undefined;
  let ccFetching: Promise<string> | undefined;

  /** One attempt plus bounded retries; `req` is cloned per attempt so bodies re-send. */
  async function withRetries(req: Request, send: (r: Request) => Promise<Response>): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      let res: Response;
      try {
        res = await send(req.clone());
      } catch (err) {
        if (attempt >= maxRetries || !IDEMPOTENT.has(req.method) || req.signal.aborted) throw err;
        await sleep(backoff(attempt), req.signal);
        continue;
      }
      if ((res.status !== 429 && res.status !== 503) || attempt >= maxRetries) return res;
      const wait = retryAfterMs(res.headers.get("retry-after")) ?? backoff(attempt);
      await res.body?.cancel().catch(() => {});
      await sleep(Math.min(wait, maxMs), req.signal);
    }
  }

  function backoff(attempt: number): number {
    // Full jitter (AWS architecture blog): uniform in [0, min(cap, base·2^n)].
    return Math.random() * Math.min(maxMs, baseMs * 2 ** attempt);
  }

  /** `POST /v1/auth/refresh`, never retried: a lost answer leaves a spent token. */
  function refresh(): Promise<string> {
    if (refreshing) return refreshing;
    const presented = refreshToken;
    refreshing = (async () => {
      if (!presented) throw new PortcullisError({ status: 401, code: "missing_token", message: "no refresh token" });
      let res: Response;
      try {
        res = await rawFetch(`${baseUrl}/v1/auth/refresh`, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json" },
          body: JSON.stringify({ refresh_token: presented }),
        });
      } catch (cause) {
        // The server may have rotated the token and the answer was lost: re-presenting
        // it would look like theft and end every session. Let the app decide.
        throw new PortcullisError({ status: 0, code: "network_error", message: "the refresh got no answer", cause });
      }
      if (!res.ok) {
        const err = await PortcullisError.fromResponse(res);
        if (res.status === 400 || res.status === 401) {
          // Reused, revoked or expired: this pair will never work again.
          if (refreshToken === presented) {
            refreshToken = undefined;
            accessToken = undefined;
          }
        }
        throw err;
      }
      const body: unknown = await res.json();
      if (!isObject(body) || typeof body.access_token !== "string" || typeof body.refresh_token !== "string") {
        throw new PortcullisError({ status: res.status, code: "unexpected_response", message: "refresh answer lacks tokens" });
      }
      accessToken = body.access_token;
      refreshToken = body.refresh_token;
      const expiresIn = typeof body.expires_in === "number" ? body.expires_in : 0;
      await options.onTokens?.({ accessToken, refreshToken, expiresIn });
      return accessToken;
    })().finally(() => {
      refreshing = undefined;
    });
    return refreshing;
  }

  /** A client-credentials token, cached until shortly before it expires (single flight). */
  function clientToken(): Promise<string> {
    const cc = options.clientCredentials;
    if (!cc) throw new Error("no client credentials");
    if (ccToken && Date.now() < ccToken.renewAt) return Promise.resolve(ccToken.token);
    if (ccFetching) return ccFetching;
    ccFetching = (async () => {
      const form = new URLSearchParams({ grant_type: "client_credentials" });
      if (cc.scope) form.set("scope", cc.scope);
      // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
      const basic = btoa(`${formEncode(cc.clientId)}:${formEncode(cc.clientSecret)}`);
      const req = new Request(`${baseUrl}/oauth/token`, {
        method: "POST",
        headers: {
          authorization: `Basic ${basic}`,
          "content-type": "application/x-www-form-urlencoded",
          accept: "application/json",
        },
        body: form.toString(),
      });
      const res = await withRetries(req, rawFetch);
      if (!res.ok) throw await PortcullisError.fromResponse(res);
      const body: unknown = await res.json();
      if (!isObject(body) || typeof body.access_token !== "string") {
        throw new PortcullisError({ status: res.status, code: "unexpected_response", message: "token answer lacks access_token" });
      }
      const ttl = (typeof body.expires_in === "number" ? body.expires_in : 60) * 1000;
      // Renew 10% of the lifetime (at most 30 s) early, so no call carries a dying token.
      ccToken = { token: body.access_token, renewAt: Date.now() + ttl - Math.min(30_000, ttl / 10) };
      return body.access_token;
    })().finally(() => {
      ccFetching = undefined;
    });
    return ccFetching;
  }

  async function credential(): Promise<Credential | undefined> {
    if (accessToken) return { kind: "user", header: "authorization", value: `Bearer ${accessToken}` };
    if (refreshToken) return { kind: "user", header: "authorization", value: `Bearer ${await refresh()}` };
    if (options.clientCredentials) {
      return { kind: "client", header: "authorization", value: `Bearer ${await clientToken()}` };
    }
    if (options.apiKey) return { kind: "api_key", header: "x-api-key", value: options.apiKey };
    return undefined;
  }

  async function sendWith(req: Request, cred: Credential | undefined): Promise<Response> {
    return withRetries(req, (r) => {
      if (cred && !r.headers.has(cred.header)) r.headers.set(cred.header, cred.value);
      return rawFetch(r);
    });
  }

  async function portcullisFetch(input: Request): Promise<Response> {
    const cred = await credential();
    const used = accessToken;
    let res = await sendWith(input, cred);
    if (res.status === 401 && cred && cred.kind !== "api_key" && !input.headers.has(cred.header)) {
      const err = await PortcullisError.fromResponse(res.clone());
      if (REFRESHABLE.has(err.code)) {
        let retry: Credential | undefined;
        if (cred.kind === "user" && accessToken && accessToken !== used) {
          // Another call refreshed while this one was out: use its token.
          retry = { kind: "user", header: "authorization", value: `Bearer ${accessToken}` };
        } else if (cred.kind === "user" && refreshToken) {
          // One refresh for every concurrent 401 (single flight), then one retry each.
          retry = { kind: "user", header: "authorization", value: `Bearer ${await refresh()}` };
        } else if (cred.kind === "client") {
          if (ccToken && `Bearer ${ccToken.token}` === cred.value) ccToken = undefined;
          retry = { kind: "client", header: "authorization", value: `Bearer ${await clientToken()}` };
        }
        if (retry) {
          await res.body?.cancel().catch(() => {});
          res = await sendWith(input, retry);
        }
      }
    }
    if (!res.ok) throw await PortcullisError.fromResponse(res);
    return res;
  }

  const client = createFetchClient<paths>({ baseUrl, fetch: portcullisFetch }) as PortcullisClient;
  Object.defineProperties(client, {
    accessToken: { get: () => accessToken, enumerable: true },
    refreshToken: { get: () => refreshToken, enumerable: true },
  });
  client.fetch = portcullisFetch;
  return client;
}

function formEncode(s: string): string {
  return encodeURIComponent(s).replace(/%20/g, "+");
}

/** `Retry-After` in seconds (RFC 9110 §10.2.3), or an HTTP date. */
function retryAfterMs(value: string | null): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** Waits `ms`, or rejects as soon as the caller aborts the request. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
