/**
 * The sealed cookies of the Next.js session: AES-256-GCM (WebCrypto, so it runs on
 * edge runtimes too) under a key derived with HKDF-SHA256 from
 * `PORTCULLIS_SESSION_SECRET`, one key per purpose (session, sign-in transaction).
 *
 * A sealed value is `base64url(0x01 ‖ iv[12] ‖ ciphertext ‖ tag[16])`: opaque, no
 * JOSE header that would tell what is inside. The cookie's name is the additional
 * data, so one cookie cannot be replayed as another (a transaction as a session).
 * The plaintext carries its own `exp`; an expired value opens to nothing, whatever
 * the browser kept. Several secrets may be given: the first seals, all open, so a
 * secret can be rotated without signing everyone out.
 *
 * Browsers keep about 4 KB per cookie (RFC 6265 §6.1): a larger value is split into
 * `name.0`, `name.1`, … and joined on read.
 */

const VERSION = 1;
/** Characters of value per cookie; with the name and attributes, under 4,096 bytes. */
export const CHUNK = 3_800;
/** Chunks read at most: a session never needs this many (≈ 76 KB). */
const MAX_CHUNKS = 20;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function base64url(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromBase64url(s: string): Uint8Array<ArrayBuffer> | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) return undefined;
  try {
    const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return undefined;
  }
}

export function randomToken(bytes = 32): string {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

export async function sha256(text: string): Promise<string> {
  return base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text))));
}

/** Seals and opens values for one purpose under a list of secrets (the first seals). */
export class Sealer {
  private readonly keys: Promise<CryptoKey[]>;

  constructor(secrets: string[], purpose: string) {
    if (secrets.length === 0) throw new Error("set PORTCULLIS_SESSION_SECRET (32 characters or more)");
    for (const s of secrets) {
      if (s.length < 32) throw new Error("PORTCULLIS_SESSION_SECRET must be at least 32 characters");
    }
    this.keys = Promise.all(secrets.map((s) => deriveKey(s, purpose)));
    // Surfaced at first use; not an unhandled rejection at start.
    this.keys.catch(() => undefined);
  }

  async seal(name: string, value: object, expiresAt: number): Promise<string> {
    const [key] = await this.keys;
    if (!key) throw new Error("no session secret");
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const plain = encoder.encode(JSON.stringify({ exp: expiresAt, v: value }));
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: encoder.encode(name) }, key, plain),
    );
    const out = new Uint8Array(1 + iv.length + sealed.length);
    out[0] = VERSION;
    out.set(iv, 1);
    out.set(sealed, 1 + iv.length);
    return base64url(out);
  }

  /** The value sealed under `name`, or `undefined` (tampered, foreign, expired, unreadable). */
  async open<T>(name: string, sealed: string | undefined, now = Date.now() / 1000): Promise<T | undefined> {
    if (!sealed) return undefined;
    const bytes = fromBase64url(sealed);
    if (!bytes || bytes.length < 1 + 12 + 16 || bytes[0] !== VERSION) return undefined;
    const iv = bytes.subarray(1, 13);
    const data = bytes.subarray(13);
    for (const key of await this.keys) {
      let plain: ArrayBuffer;
      try {
        plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData: encoder.encode(name) }, key, data);
      } catch {
        continue;
      }
      try {
        const parsed = JSON.parse(decoder.decode(plain)) as { exp?: unknown; v?: T };
        if (typeof parsed.exp !== "number" || parsed.exp <= now) return undefined;
        return parsed.v;
      } catch {
        return undefined;
      }
    }
    return undefined;
  }
}

async function deriveKey(secret: string, purpose: string): Promise<CryptoKey> {
  const ikm = await crypto.subtle.importKey("raw", encoder.encode(secret), "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: encoder.encode("portcullis-next-session"), info: encoder.encode(purpose) },
    ikm,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

/** The cookies a request came with (name → value). */
export type CookieJar = Map<string, string>;

/** Parses a `Cookie` header (RFC 6265 §5.4); the first of two same-named cookies wins. */
export function parseCookies(header: string | null | undefined): CookieJar {
  const jar: CookieJar = new Map();
  for (const part of (header ?? "").split(";")) {
    const i = part.indexOf("=");
    if (i < 0) continue;
    const name = part.slice(0, i).trim();
    if (name && !jar.has(name)) jar.set(name, part.slice(i + 1).trim());
  }
  return jar;
}

/** A cookie to set (`value: ""` and `maxAge: 0` delete it). */
export interface CookieWrite {
  name: string;
  value: string;
  /** Seconds. */
  maxAge: number;
}

/** The `Set-Cookie` value: always `HttpOnly; Secure; SameSite=Lax; Path=/`. */
export function serializeCookie(c: CookieWrite): string {
  return `${c.name}=${c.value}; Path=/; Max-Age=${Math.max(0, Math.floor(c.maxAge))}; HttpOnly; Secure; SameSite=Lax`;
}

/** A (possibly chunked) cookie's value from the jar. */
export function readChunked(jar: CookieJar, name: string): string | undefined {
  const whole = jar.get(name);
  if (whole !== undefined) return whole;
  let value = "";
  for (let i = 0; i < MAX_CHUNKS; i++) {
    const part = jar.get(`${name}.${i}`);
    if (part === undefined) break;
    value += part;
  }
  return value || undefined;
}

/**
 * The writes that store `value` under `name` (split when long), deleting what the
 * jar holds of an earlier, differently split value. `value: undefined` deletes all.
 */
export function writeChunked(jar: CookieJar, name: string, value: string | undefined, maxAge: number): CookieWrite[] {
  const parts: string[] = [];
  if (value !== undefined) {
    if (value.length <= CHUNK) parts.push(value);
    else for (let i = 0; i < value.length; i += CHUNK) parts.push(value.slice(i, i + CHUNK));
  }
  const writes: CookieWrite[] = [];
  const keep = new Set<string>();
  if (parts.length === 1) {
    keep.add(name);
    writes.push({ name, value: parts[0] ?? "", maxAge });
  } else {
    parts.forEach((p, i) => {
      keep.add(`${name}.${i}`);
      writes.push({ name: `${name}.${i}`, value: p, maxAge });
    });
  }
  const stale = (n: string) => n === name || (n.startsWith(`${name}.`) && /^\d+$/.test(n.slice(name.length + 1)));
  for (const n of jar.keys()) if (stale(n) && !keep.has(n)) writes.push({ name: n, value: "", maxAge: 0 });
  return writes;
}
