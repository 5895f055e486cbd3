/**
 * Cross-tab coordination. Refresh tokens rotate, and Portcullis treats a refresh
 * token presented twice as stolen (it ends every grant of the user to the client),
 * so two tabs must never refresh with the same token. Three pieces make sure:
 *
 * - an exclusive Web Lock (`<ns>:refresh`) around every refresh, in every tab;
 * - a shared Web Lock `<ns>:gen:<generation>` held by each tab for the token set it
 *   has. The lock manager is one per origin, so inside the refresh lock
 *   `navigator.locks.query()` tells exactly whether some tab already holds a newer
 *   token set (the refresher takes the new generation's lock before it lets the
 *   refresh lock go) — no reliance on message timing;
 * - a BroadcastChannel that carries the token sets themselves: a refreshing or
 *   signing-in tab sends the new set, a new tab asks and tabs with tokens answer,
 *   sign-out is announced to all.
 *
 * BroadcastChannel and Web Locks are same-origin only; a script of the origin can
 * read in-memory tokens anyway, so the channel widens nothing.
 */

export interface SharedTokens {
  accessToken: string;
  refreshToken?: string;
  idToken?: string;
  /** Milliseconds since the epoch, on this machine's clock. */
  expiresAt: number;
  lifetimeMs: number;
  /** Grows with every new token set (sign-in or refresh); the larger one wins. */
  gen: number;
}

export type TabMessage =
  | { t: "ask"; from: string }
  | { t: "tokens"; from: string; tokens: SharedTokens }
  | { t: "signout"; from: string };

interface LockManagerLike {
  request(name: string, options: { mode?: "exclusive" | "shared" }, cb: () => Promise<void>): Promise<void>;
  query(): Promise<{ held?: Array<{ name?: string }> }>;
}

function locks(): LockManagerLike | undefined {
  if (typeof navigator === "undefined") return undefined;
  return (navigator as unknown as { locks?: LockManagerLike }).locks;
}

export class Tabs {
  readonly id = Math.random().toString(36).slice(2);
  private channel: BroadcastChannel | undefined;
  /** Generation → release of its shared lock. */
  private readonly held = new Map<number, () => void>();
  private epoch = 0;

  constructor(
    private readonly ns: string,
    private readonly onMessage: (m: TabMessage) => void,
  ) {}

  /** Whether Web Locks exist here (secure contexts of current browsers). */
  get hasLocks(): boolean {
    return locks() !== undefined;
  }

  open(): void {
    if (this.channel || typeof BroadcastChannel === "undefined") return;
    this.channel = new BroadcastChannel(this.ns);
    this.channel.onmessage = (e: MessageEvent) => {
      const m = e.data as TabMessage | null;
      if (m && typeof m === "object" && typeof m.t === "string" && m.from !== this.id) this.onMessage(m);
    };
  }

  close(): void {
    this.channel?.close();
    this.channel = undefined;
    this.releaseGen();
  }

  post(m: TabMessage): void {
    this.channel?.postMessage(m);
  }

  /** Runs `fn` holding the origin-wide refresh lock (or just runs it without Web Locks). */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const lm = locks();
    if (!lm) return fn();
    let out: T | undefined;
    await lm.request(`${this.ns}:refresh`, { mode: "exclusive" }, async () => {
      out = await fn();
    });
    return out as T;
  }

  /**
   * Holds the shared lock of generation `gen` and lets older ones go; resolves once
   * held. Grants may land out of order: only the newest generation stays held.
   */
  async holdGen(gen: number): Promise<void> {
    const lm = locks();
    if (!lm || this.held.has(gen)) return;
    const epoch = this.epoch;
    await new Promise<void>((granted, failed) => {
      lm.request(`${this.ns}:gen:${gen}`, { mode: "shared" }, () => {
        return new Promise<void>((release) => {
          if (epoch !== this.epoch) release();
          else this.held.set(gen, release);
          granted();
        });
      }).catch(failed);
    });
    const newest = Math.max(...this.held.keys());
    for (const [g, release] of this.held) {
      if (g !== newest) {
        release();
        this.held.delete(g);
      }
    }
  }

  releaseGen(): void {
    this.epoch++;
    for (const release of this.held.values()) release();
    this.held.clear();
  }

  /** The newest generation some tab (this one included) holds; 0 for none, undefined without Web Locks. */
  async newestGen(): Promise<number | undefined> {
    const lm = locks();
    if (!lm) return undefined;
    const prefix = `${this.ns}:gen:`;
    const snapshot = await lm.query();
    let newest = 0;
    for (const l of snapshot.held ?? []) {
      if (l.name?.startsWith(prefix)) newest = Math.max(newest, Number(l.name.slice(prefix.length)) || 0);
    }
    return newest;
  }
}
