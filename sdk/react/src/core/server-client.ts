/**
 * Server mode: the tokens stay on the server (the Next.js route handlers of
 * `@portcullis/sdk/next` keep them behind an encrypted HttpOnly cookie) and the
 * browser only learns what the page may show, from `GET ${basePath}/session`.
 * Sign-in and sign-out are top-level navigations to the server's routes.
 */
import { SnapshotStore } from "./store.js";
import {
  EMPTY,
  PortcullisError,
  type AuthEngine,
  type AuthSnapshot,
  type ServerSession,
  type SignInOptions,
} from "./types.js";

export interface ServerClientOptions {
  /** Where the session routes live; default `/api/auth`. */
  basePath?: string;
  /** The session as the server rendered it: no loading state, no first fetch. */
  initialSession?: ServerSession | null;
  /** For tests. */
  fetch?: typeof fetch;
}

export function snapshotOf(session: ServerSession | null | undefined, error: PortcullisError | null = null): AuthSnapshot {
  if (!session?.isSignedIn) return { ...EMPTY, isLoaded: true, isUserLoaded: true, error };
  const claims = session.claims ?? null;
  return {
    isLoaded: true,
    isSignedIn: true,
    userId: session.userId ?? (typeof claims?.sub === "string" ? claims.sub : null),
    sessionId: session.sessionId ?? (typeof claims?.sid === "string" ? claims.sid : null),
    claims,
    isUserLoaded: true,
    user: session.user ?? null,
    error,
  };
}

export class ServerSessionClient extends SnapshotStore implements AuthEngine {
  private readonly basePath: string;
  private readonly doFetch: typeof fetch;
  private readonly initial: AuthSnapshot;
  private started = false;
  private loading: Promise<void> | undefined;

  constructor(private readonly opts: ServerClientOptions = {}) {
    const initial = opts.initialSession === undefined ? EMPTY : snapshotOf(opts.initialSession);
    super(initial);
    this.initial = initial;
    this.basePath = (opts.basePath ?? "/api/auth").replace(/\/+$/, "");
    this.doFetch = opts.fetch ?? ((input, init) => fetch(input, init));
  }

  readonly getServerSnapshot = (): AuthSnapshot => this.initial;

  start(): void {
    if (this.started) return;
    this.started = true;
    document.addEventListener("visibilitychange", this.onVisible);
    // With a server-rendered session there is nothing to wait for; revalidate when
    // the tab comes back (the session may have ended elsewhere).
    if (this.opts.initialSession === undefined) void this.reload();
  }

  stop(): void {
    this.started = false;
    document.removeEventListener("visibilitychange", this.onVisible);
  }

  private readonly onVisible = (): void => {
    if (document.visibilityState === "visible") void this.reload();
  };

  /** Reads `${basePath}/session` again. */
  reload(): Promise<void> {
    this.loading ??= (async () => {
      try {
        const res = await this.doFetch(`${this.basePath}/session`, {
          credentials: "same-origin",
          cache: "no-store",
          headers: { accept: "application/json" },
        });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        this.update(snapshotOf((await res.json()) as ServerSession));
      } catch (e) {
        const msg = `${this.basePath}/session: ${e instanceof Error ? e.message : String(e)}`;
        this.update(snapshotOf(null, new PortcullisError("session_unavailable", msg)));
      } finally {
        this.loading = undefined;
      }
    })();
    return this.loading;
  }

  /** Tokens stay on the server: always null. */
  getToken(): Promise<string | null> {
    return Promise.resolve(null);
  }

  signIn(options: SignInOptions = {}): Promise<void> {
    const here = window.location;
    const url = new URL(`${this.basePath}/login`, here.href);
    url.searchParams.set("returnTo", options.returnTo ?? `${here.pathname}${here.search}`);
    here.assign(url.href);
    return Promise.resolve();
  }

  signOut(): Promise<void> {
    window.location.assign(new URL(`${this.basePath}/logout`, window.location.href).href);
    return Promise.resolve();
  }

  /** The server's callback route handles the code; nothing to do in the browser. */
  handleCallback(): Promise<void> {
    return Promise.resolve();
  }
}
