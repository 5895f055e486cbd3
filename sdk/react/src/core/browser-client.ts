/**
 * The browser as a public OAuth client of Portcullis (OAuth 2.0 for Browser-Based
 * Apps BCP): the authorization code flow with S256 PKCE (RFC 7636), `state` and
 * `nonce`, the ID token checked against the JWKS (OpenID Connect Core §3.1.3.7),
 * refresh tokens rotated on every use, RFC 7009 revocation and RP-initiated logout
 * on sign-out.
 *
 * Where tokens live: the access token in memory only; the refresh token in memory
 * (default) or, when the app opts in, in sessionStorage (one tab's storage, gone with
 * the tab). Tabs share one token set over a BroadcastChannel and refresh one at a
 * time under a Web Lock (see `tabs.ts`).
 */
import { createRemoteJWKSet, decodeJwt, jwtVerify, type JWTVerifyGetKey } from "jose";

import { randomToken, s256 } from "./pkce.js";
import { SnapshotStore } from "./store.js";
import { Tabs, type SharedTokens, type TabMessage } from "./tabs.js";
import {
  EMPTY,
  PortcullisError,
  type AccessClaims,
  type AuthEngine,
  type AuthSnapshot,
  type GetTokenOptions,
  type SignInOptions,
  type SignOutOptions,
  type UserInfo,
} from "./types.js";

export interface BrowserClientOptions {
  /** The Portcullis issuer URL, e.g. `https://auth.example.com`. */
  issuer: string;
  /** The public client's id (`token_endpoint_auth_method: "none"`). */
  clientId: string;
  /** A registered redirect URI of this app; default `${location.origin}/callback`. */
  redirectUri?: string;
  /** Default `openid profile email offline_access` (offline_access: refresh tokens). */
  scope?: string;
  /** Where the refresh token lives; default `memory`. */
  refreshTokenStorage?: "memory" | "sessionStorage";
  /** Where the server's logout sends the browser back to (must be registered). */
  postLogoutRedirectUri?: string;
  /** Called with `returnTo` after a successful callback; default: history.replaceState + popstate. */
  onRedirectCallback?: (returnTo: string) => void;
  /** For tests. */
  fetch?: typeof fetch;
}

interface Discovery {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  jwks_uri: string;
  userinfo_endpoint?: string;
  revocation_endpoint?: string;
  end_session_endpoint?: string;
}

interface Pending {
  verifier: string;
  nonce: string;
  returnTo: string;
  redirectUri: string;
  at: number;
}

interface TokenResponse {
  access_token?: string;
  refresh_token?: string;
  id_token?: string;
  expires_in?: number;
  error?: string;
  error_description?: string;
}

const DEFAULT_SCOPE = "openid profile email offline_access";
/** Pending sign-ins older than this are dropped from sessionStorage. */
const PENDING_MAX_AGE_MS = 60 * 60 * 1000;
/** How long a tab waits for another tab's token set before giving up. */
const PEER_WAIT_MS = 1500;

/** A token set must stay valid this long when getToken() hands it out: 30 s, or a quarter of short lifetimes. */
function minValidity(t: SharedTokens): number {
  return Math.min(30_000, t.lifetimeMs / 4);
}

/**
 * When to renew in the background: at 75% of the lifetime. For lifetimes of 2 min
 * and more that is also at least 30 s before expiry; for shorter ones "30 s before"
 * would mean at once, forever, so a quarter of the lifetime stands in for 30 s.
 */
function renewAt(t: SharedTokens): number {
  return t.expiresAt - t.lifetimeMs / 4;
}

function form(fields: Record<string, string | undefined>): URLSearchParams {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) body.set(k, v);
  return body;
}

export class BrowserClient extends SnapshotStore implements AuthEngine {
  private readonly issuer: string;
  private readonly tabs: Tabs;
  private readonly doFetch: typeof fetch;
  private tokens: SharedTokens | undefined;
  private started = false;
  private booting: Promise<void> | undefined;
  private loaded = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private retryMs = 1000;
  private refreshing: Promise<void> | undefined;
  private discovery: Promise<Discovery> | undefined;
  private jwks: JWTVerifyGetKey | undefined;
  private waiters = new Set<() => void>();
  private callbacks = new Map<string, Promise<void>>();
  private decoded: { token: string; claims: AccessClaims } | undefined;
  private userFor: string | undefined;
  private userLoading = false;
  private error: PortcullisError | null = null;

  constructor(private readonly opts: BrowserClientOptions) {
    super(EMPTY);
    this.issuer = opts.issuer.replace(/\/+$/, "");
    this.tabs = new Tabs(`portcullis:${this.issuer}:${opts.clientId}`, (m) => this.onMessage(m));
    this.doFetch = opts.fetch ?? ((input, init) => fetch(input, init));
  }

  readonly getServerSnapshot = (): AuthSnapshot => EMPTY;

  private get redirectUri(): string {
    return this.opts.redirectUri ?? `${window.location.origin}/callback`;
  }

  private get storageKey(): string {
    return `portcullis:${this.opts.clientId}:session`;
  }

  private pendingKey(state: string): string {
    return `portcullis:${this.opts.clientId}:pending:${state}`;
  }

  // ----- lifecycle ---------------------------------------------------------------

  /** Opens the tab channel, handles a callback URL, restores or asks for tokens. Idempotent. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.tabs.open();
    document.addEventListener("visibilitychange", this.onVisible);
    if (this.tokens?.accessToken) {
      void this.tabs.holdGen(this.tokens.gen);
      this.schedule();
    }
    this.booting ??= this.boot();
  }

  /** Closes the channel and timers; tokens in memory stay for a later start(). */
  stop(): void {
    if (!this.started) return;
    this.started = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    document.removeEventListener("visibilitychange", this.onVisible);
    this.tabs.close();
  }

  private async boot(): Promise<void> {
    try {
      if (this.isCallback(window.location.href)) {
        await this.handleCallback(window.location.href);
        return;
      }
      if (this.tokens) return;
      await this.askPeers();
      if (this.tokens) return;
      const stored = this.readStored();
      if (stored) {
        // A reload with the refresh token in sessionStorage: renew it (under the lock).
        this.tokens = { accessToken: "", expiresAt: 0, lifetimeMs: 0, ...stored };
        await this.refresh(this.tokens);
      }
    } catch (e) {
      this.error = toError(e, "callback_failed");
    } finally {
      this.loaded = true;
      this.publish();
    }
  }

  private readonly onVisible = (): void => {
    const t = this.tokens;
    if (document.visibilityState === "visible" && t?.refreshToken && Date.now() >= renewAt(t)) {
      this.refresh(t).catch((e: unknown) => this.refreshFailed(e));
    }
  };

  private isCallback(href: string): boolean {
    const here = new URL(href);
    const cb = new URL(this.redirectUri, href);
    const p = here.searchParams;
    return here.origin === cb.origin && here.pathname === cb.pathname && p.has("state") && (p.has("code") || p.has("error"));
  }

  // ----- discovery ---------------------------------------------------------------

  private discover(): Promise<Discovery> {
    this.discovery ??= (async () => {
      const url = `${this.issuer}/.well-known/openid-configuration`;
      let doc: Discovery;
      try {
        const res = await this.doFetch(url, { headers: { accept: "application/json" } });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        doc = (await res.json()) as Discovery;
      } catch (e) {
        throw new PortcullisError("discovery_failed", `${url}: ${e instanceof Error ? e.message : String(e)}`);
      }
      // OpenID Connect Discovery §4.3: the document must name the issuer we asked.
      if (doc.issuer !== this.issuer) {
        throw new PortcullisError("discovery_failed", `the discovery document names issuer ${doc.issuer}, not ${this.issuer}`);
      }
      return doc;
    })().catch((e: unknown) => {
      this.discovery = undefined;
      throw e;
    });
    return this.discovery;
  }

  // ----- sign-in -----------------------------------------------------------------

  async signIn(options: SignInOptions = {}): Promise<void> {
    const d = await this.discover();
    const state = randomToken(16);
    const nonce = randomToken(16);
    const verifier = randomToken(32);
    const here = window.location;
    const onCallback = this.isCallback(here.href) || here.pathname === new URL(this.redirectUri, here.href).pathname;
    const pending: Pending = {
      verifier,
      nonce,
      returnTo: options.returnTo ?? (onCallback ? "/" : `${here.pathname}${here.search}${here.hash}`),
      redirectUri: this.redirectUri,
      at: Date.now(),
    };
    this.prunePending();
    sessionStorage.setItem(this.pendingKey(state), JSON.stringify(pending));
    const url = new URL(d.authorization_endpoint);
    const params: Record<string, string | undefined> = {
      response_type: "code",
      client_id: this.opts.clientId,
      redirect_uri: pending.redirectUri,
      scope: this.opts.scope ?? DEFAULT_SCOPE,
      state,
      nonce,
      code_challenge: await s256(verifier),
      code_challenge_method: "S256",
      login_hint: options.loginHint,
      prompt: options.prompt,
    };
    for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v);
    window.location.assign(url.href);
  }

  private prunePending(): void {
    const prefix = this.pendingKey("");
    for (let i = sessionStorage.length - 1; i >= 0; i--) {
      const key = sessionStorage.key(i);
      if (!key?.startsWith(prefix)) continue;
      try {
        const p = JSON.parse(sessionStorage.getItem(key) ?? "null") as Pending | null;
        if (!p || Date.now() - p.at > PENDING_MAX_AGE_MS) sessionStorage.removeItem(key);
      } catch {
        sessionStorage.removeItem(key);
      }
    }
  }

  /** Completes a sign-in from the callback URL (the current one by default). Runs once per URL. */
  handleCallback(url: string = window.location.href): Promise<void> {
    let run = this.callbacks.get(url);
    if (!run) {
      run = this.completeSignIn(new URL(url)).then(
        () => {
          this.error = null;
          this.publish();
        },
        (e: unknown) => {
          this.error = toError(e, "callback_failed");
          this.publish();
          throw this.error;
        },
      );
      this.callbacks.set(url, run);
    }
    return run;
  }

  private async completeSignIn(u: URL): Promise<void> {
    const p = u.searchParams;
    const state = p.get("state");
    const code = p.get("code");
    const error = p.get("error");
    // The code leaves the address bar (and history) before anything else: a reload
    // or a shared URL cannot replay it.
    this.stripCallbackParams();
    // One-time: the pending entry is read and removed at once.
    const key = state ? this.pendingKey(state) : undefined;
    const raw = key ? sessionStorage.getItem(key) : null;
    if (key) sessionStorage.removeItem(key);
    if (!raw) throw new PortcullisError("state_mismatch", "the callback's state matches no sign-in started in this tab");
    const pending = JSON.parse(raw) as Pending;
    if (error) throw new PortcullisError(error, p.get("error_description") ?? error);
    const d = await this.discover();
    // RFC 9207: a response naming another issuer is a mix-up attack.
    const iss = p.get("iss");
    if (iss !== null && iss !== d.issuer) throw new PortcullisError("issuer_mismatch", `the response came from ${iss}`);
    if (!code) throw new PortcullisError("callback_failed", "the callback carries no code");
    const body = await this.tokenRequest(d, {
      grant_type: "authorization_code",
      code,
      redirect_uri: pending.redirectUri,
      client_id: this.opts.clientId,
      code_verifier: pending.verifier,
    }).catch((e: unknown) => {
      const why = e instanceof PortcullisError ? `${e.code}: ${e.message}` : String(e);
      throw new PortcullisError("token_exchange_failed", why);
    });
    let idSub: string;
    try {
      idSub = await this.verifyIdToken(d, body.id_token, pending.nonce);
      if (decodeJwt(body.access_token ?? "").sub !== idSub) {
        throw new PortcullisError("id_token_invalid", "the ID token and the access token name different users");
      }
    } catch (e) {
      // Tokens we will not use are handed back (best effort).
      void this.revoke(d, body.refresh_token ?? body.access_token, body.refresh_token ? "refresh_token" : "access_token");
      throw e;
    }
    await this.adopt(this.fromResponse(body, undefined), true);
    this.redirectAfter(pending.returnTo);
  }

  private stripCallbackParams(): void {
    const here = new URL(window.location.href);
    for (const k of ["code", "state", "iss", "error", "error_description", "error_uri", "session_state"]) {
      here.searchParams.delete(k);
    }
    window.history.replaceState(window.history.state, "", `${here.pathname}${here.search}${here.hash}`);
  }

  private redirectAfter(returnTo: string): void {
    // Only paths of this origin: `returnTo` went through the authorization server.
    const target = new URL(returnTo, window.location.href);
    if (target.origin !== window.location.origin) return;
    const path = `${target.pathname}${target.search}${target.hash}`;
    if (this.opts.onRedirectCallback) {
      this.opts.onRedirectCallback(path);
    } else if (path !== `${window.location.pathname}${window.location.search}${window.location.hash}`) {
      window.history.replaceState(null, "", path);
      window.dispatchEvent(new PopStateEvent("popstate", { state: null }));
    }
  }

  /** Checks the ID token (OpenID Connect Core §3.1.3.7); returns its `sub`. */
  private async verifyIdToken(d: Discovery, idToken: string | undefined, nonce: string | undefined): Promise<string> {
    if (!idToken) throw new PortcullisError("id_token_invalid", "the token response has no ID token (is `openid` in scope?)");
    this.jwks ??= createRemoteJWKSet(new URL(d.jwks_uri));
    let payload;
    try {
      ({ payload } = await jwtVerify(idToken, this.jwks, { issuer: d.issuer, audience: this.opts.clientId }));
    } catch (e) {
      throw new PortcullisError("id_token_invalid", `the ID token is not valid: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (nonce !== undefined && payload.nonce !== nonce) {
      throw new PortcullisError("nonce_mismatch", "the ID token's nonce is not the one this sign-in sent");
    }
    if (typeof payload.sub !== "string") throw new PortcullisError("id_token_invalid", "the ID token has no sub");
    return payload.sub;
  }

  private async tokenRequest(d: Discovery, fields: Record<string, string>): Promise<TokenResponse & { access_token: string }> {
    const res = await this.doFetch(d.token_endpoint, {
      method: "POST",
      headers: { accept: "application/json" },
      body: form(fields),
      cache: "no-store",
    });
    let body: TokenResponse;
    try {
      body = (await res.json()) as TokenResponse;
    } catch {
      body = {};
    }
    if (!res.ok || !body.access_token) {
      const err = new PortcullisError(body.error ?? `http_${res.status}`, body.error_description ?? `token endpoint: HTTP ${res.status}`);
      (err as PortcullisError & { status?: number }).status = res.status;
      throw err;
    }
    return body as TokenResponse & { access_token: string };
  }

  private fromResponse(body: TokenResponse & { access_token: string }, previous: SharedTokens | undefined): SharedTokens {
    let lifetimeMs = (body.expires_in ?? 0) * 1000;
    if (!(lifetimeMs > 0)) {
      const c = decodeJwt(body.access_token);
      lifetimeMs = c.exp && c.iat ? (c.exp - c.iat) * 1000 : 60_000;
    }
    return {
      accessToken: body.access_token,
      refreshToken: body.refresh_token ?? previous?.refreshToken,
      idToken: body.id_token ?? previous?.idToken,
      // Our own clock from receipt: the server's clock may differ from ours.
      expiresAt: Date.now() + lifetimeMs,
      lifetimeMs,
      gen: Math.max(Date.now(), (this.tokens?.gen ?? 0) + 1, (previous?.gen ?? 0) + 1),
    };
  }

  // ----- tokens ------------------------------------------------------------------

  /** An access token valid for at least 30 s (a quarter of short lifetimes), or null when signed out. */
  async getToken(options: GetTokenOptions = {}): Promise<string | null> {
    await this.booting;
    let force = options.forceRefresh === true;
    for (let i = 0; i < 3; i++) {
      const t = this.tokens;
      if (!t || (!t.accessToken && !t.refreshToken)) return null;
      if (!force && t.accessToken && t.expiresAt - Date.now() >= minValidity(t)) return t.accessToken;
      if (!t.refreshToken) break;
      force = false;
      try {
        await this.refresh(t);
      } catch (e) {
        const now = this.tokens;
        if (now?.accessToken && now.expiresAt > Date.now() + 1000) return now.accessToken;
        throw toError(e, "refresh_failed");
      }
      if (this.tokens === t) break;
    }
    const t = this.tokens;
    return t?.accessToken && t.expiresAt > Date.now() ? t.accessToken : null;
  }

  /** One refresh at a time in this tab; across tabs, under the Web Lock. */
  private refresh(seen: SharedTokens): Promise<void> {
    this.refreshing ??= this.tabs
      .exclusive(() => this.refreshLocked(seen))
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  private async refreshLocked(seen: SharedTokens): Promise<void> {
    // Another tab's set arrived while we waited for the lock: nothing to do.
    if (this.tokens !== seen) return;
    // Some tab holds a newer set than ours (its message may still be on its way):
    // refreshing with ours would present a used refresh token. Get theirs instead.
    const newest = await this.tabs.newestGen();
    if (newest !== undefined && newest > seen.gen) {
      this.tabs.post({ t: "ask", from: this.tabs.id });
      await this.waitForTokens(seen.gen, PEER_WAIT_MS);
      if (this.tokens === seen) {
        throw new PortcullisError("refresh_failed", "another tab holds newer tokens but did not share them");
      }
      return;
    }
    if (!seen.refreshToken) return;
    const d = await this.discover();
    let body;
    try {
      body = await this.tokenRequest(d, {
        grant_type: "refresh_token",
        refresh_token: seen.refreshToken,
        client_id: this.opts.clientId,
      });
    } catch (e) {
      const status = (e as { status?: number }).status;
      if (e instanceof PortcullisError && e.code === "invalid_grant" && status === 400) {
        // Reused, revoked, expired: the session is over. Every tab signs out. (A 429
        // also says invalid_grant, "too many failed refreshes": that one is retried.)
        const ended = new PortcullisError("session_ended", e.message);
        this.tabs.post({ t: "signout", from: this.tabs.id });
        this.endLocally(ended);
        throw ended;
      }
      throw toError(e, "refresh_failed");
    }
    const next = this.fromResponse(body, seen);
    if (body.id_token) {
      try {
        if ((await this.verifyIdToken(d, body.id_token, undefined)) !== decodeJwt(seen.idToken ?? body.id_token).sub) {
          next.idToken = seen.idToken;
        }
      } catch {
        next.idToken = seen.idToken;
      }
    }
    // Inside the lock: the new generation's lock is held before the refresh lock goes.
    await this.adopt(next, true);
    this.retryMs = 1000;
  }

  private refreshFailed(e: unknown): void {
    const err = toError(e, "refresh_failed");
    if (err.code === "session_ended" || !this.tokens) return;
    if (this.tokens.accessToken && this.tokens.expiresAt <= Date.now()) {
      this.error = err;
      this.publish();
    }
    // Transient (network, 429, 5xx): try again, backing off to 30 s.
    clearTimeout(this.timer);
    if (this.started) {
      const t = this.tokens;
      this.timer = setTimeout(() => this.refresh(t).catch((x: unknown) => this.refreshFailed(x)), this.retryMs);
    }
    this.retryMs = Math.min(this.retryMs * 2, 30_000);
  }

  private async adopt(t: SharedTokens, announce: boolean): Promise<void> {
    this.tokens = t;
    this.error = null;
    if (this.opts.refreshTokenStorage === "sessionStorage" && t.refreshToken) {
      sessionStorage.setItem(this.storageKey, JSON.stringify({ refreshToken: t.refreshToken, idToken: t.idToken, gen: t.gen }));
    }
    if (this.started) await this.tabs.holdGen(t.gen);
    if (announce) this.tabs.post({ t: "tokens", from: this.tabs.id, tokens: t });
    this.schedule();
    this.publish();
    for (const w of [...this.waiters]) w();
  }

  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const t = this.tokens;
    if (!this.started || !t?.accessToken) return;
    if (t.refreshToken) {
      this.timer = setTimeout(() => {
        this.refresh(t).catch((e: unknown) => this.refreshFailed(e));
      }, Math.max(0, renewAt(t) - Date.now()));
    } else {
      // No refresh token (no offline_access): the session ends with the token.
      this.timer = setTimeout(() => this.endLocally(null), Math.max(0, t.expiresAt - Date.now()));
    }
  }

  private waitForTokens(afterGen: number, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        if ((this.tokens?.gen ?? 0) <= afterGen && !timedOut) return;
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        done();
      }, ms);
      this.waiters.add(done);
    });
  }

  /** A new tab: if another tab holds tokens, ask it for them. */
  private async askPeers(): Promise<void> {
    const newest = await this.tabs.newestGen();
    if (newest === 0) return; // Web Locks say no tab has tokens
    this.tabs.post({ t: "ask", from: this.tabs.id });
    await this.waitForTokens(0, newest === undefined ? 250 : PEER_WAIT_MS);
  }

  private onMessage(m: TabMessage): void {
    switch (m.t) {
      case "ask":
        if (this.tokens?.accessToken) this.tabs.post({ t: "tokens", from: this.tabs.id, tokens: this.tokens });
        break;
      case "tokens":
        if (m.tokens?.accessToken && m.tokens.gen > (this.tokens?.gen ?? 0)) void this.adopt(m.tokens, false);
        break;
      case "signout":
        if (this.tokens) this.endLocally(null);
        break;
    }
  }

  private readStored(): Pick<SharedTokens, "refreshToken" | "idToken" | "gen"> | undefined {
    if (this.opts.refreshTokenStorage !== "sessionStorage") return undefined;
    try {
      const s = JSON.parse(sessionStorage.getItem(this.storageKey) ?? "null") as { refreshToken?: string; idToken?: string; gen?: number } | null;
      if (s && typeof s.refreshToken === "string") return { refreshToken: s.refreshToken, idToken: s.idToken, gen: Number(s.gen) || 0 };
    } catch {
      // unreadable: as if absent
    }
    return undefined;
  }

  private endLocally(error: PortcullisError | null): void {
    this.tokens = undefined;
    this.error = error;
    clearTimeout(this.timer);
    this.timer = undefined;
    try {
      sessionStorage.removeItem(this.storageKey);
    } catch {
      // storage disabled
    }
    this.tabs.releaseGen();
    this.publish();
  }

  // ----- sign-out ----------------------------------------------------------------

  /**
   * Ends the session everywhere: local state and every tab at once, then the grant
   * at the server (RFC 7009 revocation of the refresh token, which ends its access
   * tokens too), then RP-initiated logout of the hosted pages' browser session.
   */
  async signOut(options: SignOutOptions = {}): Promise<void> {
    const d = await this.discover().catch(() => undefined);
    // Under the refresh lock: no tab is mid-refresh, so the token revoked is the
    // current one (revoking a refresh token that was just rotated ends nothing) and
    // no refresh lands after the sign-out.
    const t = await this.tabs.exclusive(async () => {
      const newest = await this.tabs.newestGen();
      if (this.tokens && newest !== undefined && newest > this.tokens.gen) {
        this.tabs.post({ t: "ask", from: this.tabs.id });
        await this.waitForTokens(this.tokens.gen, PEER_WAIT_MS);
      }
      const current = this.tokens;
      this.tabs.post({ t: "signout", from: this.tabs.id });
      this.endLocally(null);
      if (current) {
        await this.revoke(d, current.refreshToken, "refresh_token");
        // The access token names the session too: revoking it ends the session
        // should the refresh token be unknown (or absent without offline_access).
        if (current.expiresAt > Date.now()) await this.revoke(d, current.accessToken, "access_token");
      }
      return current;
    });
    if (!t) return;
    const end = d?.end_session_endpoint;
    if (!end) return;
    const url = new URL(end);
    const back = options.postLogoutRedirectUri ?? this.opts.postLogoutRedirectUri;
    if (t.idToken) url.searchParams.set("id_token_hint", t.idToken);
    url.searchParams.set("client_id", this.opts.clientId);
    if (back) url.searchParams.set("post_logout_redirect_uri", back);
    window.location.assign(url.href);
  }

  private async revoke(d: Discovery | undefined, token: string | undefined, hint: string): Promise<void> {
    if (!token) return;
    try {
      // A form POST without custom headers is a CORS "simple request": it reaches
      // the server whether or not the endpoint answers with CORS headers (Portcullis'
      // /oauth/revoke does not), and RFC 7009 §2.2 answers 200 either way, so the
      // response is not read ("no-cors": no console error for the unread answer).
      await this.doFetch(d?.revocation_endpoint ?? `${this.issuer}/oauth/revoke`, {
        method: "POST",
        mode: "no-cors",
        body: form({ token, token_type_hint: hint, client_id: this.opts.clientId }),
        keepalive: true,
        signal: AbortSignal.timeout(5000),
      });
    } catch {
      // Unreadable (CORS) or unreachable: nothing more a browser can do.
    }
  }

  // ----- snapshot and user -------------------------------------------------------

  private claimsOf(token: string): AccessClaims | null {
    if (this.decoded?.token === token) return this.decoded.claims;
    try {
      const claims = decodeJwt(token) as AccessClaims;
      this.decoded = { token, claims };
      return claims;
    } catch {
      return null;
    }
  }

  private publish(): void {
    const t = this.tokens;
    const claims = t?.accessToken ? this.claimsOf(t.accessToken) : null;
    const signedIn = claims !== null;
    const sameUser = signedIn && this.snapshot.user?.sub === claims.sub;
    this.update({
      isLoaded: this.loaded,
      isSignedIn: signedIn,
      userId: claims?.sub ?? null,
      sessionId: claims?.sid ?? null,
      claims,
      user: sameUser ? this.snapshot.user : null,
      isUserLoaded: signedIn ? sameUser && this.snapshot.isUserLoaded : this.loaded,
      error: this.error,
    });
    if (!signedIn) this.userFor = undefined;
    if (signedIn && this.started && this.userFor !== t?.accessToken) void this.loadUser();
  }

  /** `/oauth/userinfo` with the current token; again whenever the token changes. */
  private async loadUser(): Promise<void> {
    if (this.userLoading) return;
    this.userLoading = true;
    try {
      for (let i = 0; i < 3; i++) {
        const token = this.tokens?.accessToken;
        if (!token || token === this.userFor) return;
        this.userFor = token;
        const d = await this.discover();
        const res = await this.doFetch(d.userinfo_endpoint ?? `${this.issuer}/oauth/userinfo`, {
          headers: { authorization: `Bearer ${token}`, accept: "application/json" },
          cache: "no-store",
        });
        if (!res.ok) continue;
        const user = (await res.json()) as UserInfo;
        if (user.sub === this.snapshot.userId) this.update({ user, isUserLoaded: true });
      }
    } catch {
      // Shown as not loaded yet; the next token change tries again.
      this.userFor = undefined;
    } finally {
      this.userLoading = false;
      if (this.tokens?.accessToken && this.tokens.accessToken !== this.userFor && this.started) void this.loadUser();
    }
  }
}

/** `e` as a PortcullisError; protocol errors of a request become `code`. */
function toError(e: unknown, code: string): PortcullisError {
  if (e instanceof PortcullisError) {
    return (e as { status?: number }).status === undefined ? e : new PortcullisError(code, `${e.code}: ${e.message}`);
  }
  return new PortcullisError(code, e instanceof Error ? e.message : String(e));
}
