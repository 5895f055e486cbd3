/**
 * API keys, checked with Portcullis (`POST /v1/api-keys/verify`, authenticated with
 * a verifier key holding `api_keys:verify`) and the verdict kept a few seconds, by
 * SHA-256 of the key: the key itself is never stored. A failure to ask (network,
 * non-2xx) is not a verdict about the caller's key, so it is never cached (503).
 */
import type { Auth } from "./auth.js";
import { PortcullisError, isObject, problem } from "./errors.js";

/** Verdicts kept at most; past it, expired ones go, then all. */
const MAX_VERDICTS = 10_000;
/** Longer than any key Portcullis issues; anything longer is not asked about. */
const MAX_KEY_LEN = 512;

type Verdict = { ok: true; auth: Auth } | { ok: false; error: PortcullisError };

export class ApiKeyVerifier {
  private readonly cache = new Map<string, { until: number; verdict: Verdict }>();

  constructor(
    private readonly server: string,
    private readonly verifierKey: string,
    private readonly ttlMs = 10_000,
  ) {}

  async verify(key: string): Promise<Auth> {
    if (!key || key.length > MAX_KEY_LEN) throw notValid();
    const digest = await sha256(key);
    const now = Date.now();
    const hit = this.cache.get(digest);
    const verdict = hit && hit.until > now ? hit.verdict : await this.ask(key, digest, now);
    if (verdict.ok) return verdict.auth;
    throw verdict.error;
  }

  private async ask(key: string, digest: string, now: number): Promise<Verdict> {
    const url = `${this.server}/v1/api-keys/verify`;
    let body: unknown;
    try {
      const res = await fetch(url, {
        method: "POST",
        headers: { "x-api-key": this.verifierKey, "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify({ key }),
        redirect: "manual",
        signal: AbortSignal.timeout(5_000),
      });
      // 401/403: this service's own verifier key is wrong; 429: it asks too often.
      // Neither is the caller's fault.
      if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
      body = await res.json();
    } catch (cause) {
      const p = problem(503, "overloaded", "credentials cannot be checked now; retry");
      throw new PortcullisError({ status: 503, code: "overloaded", problem: p, cause });
    }
    let verdict: Verdict;
    if (isObject(body) && body.active === true) {
      const scopes = Array.isArray(body.scopes) ? body.scopes.filter((s): s is string => typeof s === "string") : [];
      verdict = {
        ok: true,
        auth: {
          userId: typeof body.owner === "string" ? body.owner : null,
          sessionId: null,
          clientId: null,
          apiKeyId: typeof body.key_id === "string" ? body.key_id : null,
          scopes,
          roles: [],
          claims: null,
        },
      };
    } else {
      verdict = { ok: false, error: notValid() };
    }
    if (this.cache.size >= MAX_VERDICTS) {
      for (const [k, v] of this.cache) if (v.until <= now) this.cache.delete(k);
      if (this.cache.size >= MAX_VERDICTS) this.cache.clear();
    }
    this.cache.set(digest, { until: now + this.ttlMs, verdict });
    return verdict;
  }
}

function notValid(): PortcullisError {
  return new PortcullisError({ status: 401, code: "invalid_token", problem: problem(401, "invalid_token", "the API key is not valid") });
}

/** Hex SHA-256 with WebCrypto, so this also runs on edge runtimes (Next.js middleware). */
async function sha256(s: string): Promise<string> {
  const bytes = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
