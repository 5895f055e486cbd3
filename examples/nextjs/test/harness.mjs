// Test kit for the example: builds it against the SDK of this checkout, starts a real
// `portcullis serve` ($PORTCULLIS_BIN) and `next start` on free loopback ports, and
// launches headless Chromium (playwright-core, /usr/bin/chromium). Every child is
// killed when the test process ends.
import { spawn, spawnSync } from "node:child_process";
import { webcrypto } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const APP_DIR = join(dirname(fileURLToPath(import.meta.url)), "..");
const SDK_DIR = join(APP_DIR, "../../sdk/typescript");
const REACT_DIR = join(APP_DIR, "../../sdk/react");
/** The local packages the example installs with `file:` (copied: install-links). */
const LOCAL = [
  { dir: SDK_DIR, name: "@portcullis/sdk" },
  { dir: REACT_DIR, name: "@portcullis/react" },
];
export const PASSWORD = "correct horse battery staple";
export const SECRET = "example-session-secret-0123456789abcdef";

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export function required() {
  const bin = process.env.PORTCULLIS_BIN;
  if (!bin || !existsSync(bin)) throw new Error(`set PORTCULLIS_BIN to a built portcullis binary (got ${bin ?? "nothing"})`);
  const browser = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!existsSync(browser)) throw new Error(`no Chromium at ${browser} (apt-get install chromium, or set CHROMIUM)`);
  for (const { dir } of LOCAL) if (!existsSync(join(dir, "node_modules"))) throw new Error(`run npm ci in ${dir} first`);
  if (!existsSync(join(APP_DIR, "node_modules/.bin/next"))) throw new Error(`run npm ci in ${APP_DIR} first`);
  return { bin, browser };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function run(cmd, args, opts = {}) {
  const out = spawnSync(cmd, args, { encoding: "utf8", timeout: 300_000, ...opts });
  if (out.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${out.status}): ${out.stderr || out.stdout}`);
  return out.stdout;
}

/**
 * Builds the SDK packages of this checkout, puts their fresh `dist` into the
 * example's node_modules (installed from file:, copied by install-links), then
 * `next build`; returns the seconds each took.
 */
export function buildApp() {
  const started = Date.now();
  for (const { dir, name } of LOCAL) {
    run("npm", ["run", "build"], { cwd: dir });
    const target = join(APP_DIR, "node_modules", name);
    if (!existsSync(target)) throw new Error(`run npm ci in ${APP_DIR} first (${name} is not installed)`);
    rmSync(join(target, "dist"), { recursive: true, force: true });
    cpSync(join(dir, "dist"), join(target, "dist"), { recursive: true });
    cpSync(join(dir, "package.json"), join(target, "package.json"));
  }
  const sdk = (Date.now() - started) / 1000;
  const t = Date.now();
  run(join(APP_DIR, "node_modules/.bin/next"), ["build"], { cwd: APP_DIR, env: { ...process.env, NEXT_TELEMETRY_DISABLED: "1" } });
  return { sdk, next: (Date.now() - t) / 1000 };
}

/** The environment without PORTCULLIS_* of the caller. */
function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("PORTCULLIS_")) env[k] = v;
  return env;
}

function track(child, log) {
  running.add(child);
  child.once("exit", () => running.delete(child));
  child.stdout?.on("data", (d) => log.push(d.toString()));
  child.stderr?.on("data", (d) => log.push(d.toString()));
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

async function waitFor(url, child, log, what) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited: ${log.join("")}`);
    try {
      const res = await fetch(url, { redirect: "manual" });
      if (res.status < 500) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${what} not ready after 30 s: ${log.join("")}`);
    await sleep(100);
  }
}

export class Portcullis {
  static async start(bin, env = {}) {
    const me = new Portcullis();
    me.bin = bin;
    me.dataDir = mkdtempSync(join(tmpdir(), "portcullis-nextjs-"));
    const port = await freePort();
    me.base = `http://127.0.0.1:${port}`;
    me.log = [];
    me.child = spawn(bin, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", me.dataDir], {
      env: {
        ...cleanEnv(),
        PORTCULLIS_SECURITY__LOGIN_RATE: "100000/1m",
        PORTCULLIS_SECURITY__REGISTER_RATE: "100000/1m",
        PORTCULLIS_SECURITY__HASH_CONCURRENCY: "2",
        PORTCULLIS_LOG__LEVEL: "warn",
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    track(me.child, me.log);
    await waitFor(`${me.base}/readyz`, me.child, me.log, "portcullis");
    return me;
  }

  cli(args, input) {
    return run(this.bin, [...args, "--data-dir", this.dataDir], {
      env: { ...cleanEnv(), PORTCULLIS_LOG__LEVEL: "warn" },
      input,
      timeout: 20_000,
    });
  }

  async call(method, path, token, body) {
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${this.base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }

  async register(email) {
    const r = await this.call("POST", "/v1/auth/register", undefined, { email, password: PASSWORD });
    if (r.status >= 300) throw new Error(`register ${email}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.user.id;
  }

  async adminToken() {
    if (!this.adminCreated) {
      this.cli(["users", "create", "--email", "admin@example.com", "--role", "admin", "--password-stdin"], `${PASSWORD}\n`);
      this.adminCreated = true;
    }
    const r = await this.call("POST", "/v1/auth/login", undefined, { email: "admin@example.com", password: PASSWORD });
    return r.body.access_token;
  }

  /** A new user holding a role with `permissions`. */
  async userWith(email, role, permissions) {
    const admin = await this.adminToken();
    const created = await this.call("POST", "/v1/admin/roles", admin, { name: role, permissions });
    if (created.status !== 201) throw new Error(`role: ${created.status} ${JSON.stringify(created.body)}`);
    const id = await this.register(email);
    const grant = await this.call("POST", `/v1/admin/users/${id}/roles`, admin, { role });
    if (grant.status !== 200) throw new Error(`grant: ${grant.status} ${JSON.stringify(grant.body)}`);
    return id;
  }

  /** Audit records of `type` about `userId` (the trail is written through a buffer: waits for it). */
  async audit(userId, type, keep = () => true) {
    await sleep(300);
    const r = await this.call("GET", `/v1/admin/audit?user_id=${userId}&type=${type}&limit=100`, await this.adminToken());
    if (r.status !== 200) throw new Error(`audit: ${r.status} ${JSON.stringify(r.body)}`);
    const items = r.body.items ?? r.body.records ?? r.body.data ?? r.body;
    if (!Array.isArray(items)) throw new Error(`audit answer: ${JSON.stringify(r.body).slice(0, 300)}`);
    return items.filter(keep);
  }

  /** RFC 7662 as the app's client: is `token` still good? */
  async introspect(client, token) {
    const res = await fetch(`${this.base}/oauth/introspect`, {
      method: "POST",
      headers: {
        authorization: `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString("base64")}`,
        "content-type": "application/x-www-form-urlencoded",
      },
      body: new URLSearchParams({ token }).toString(),
    });
    if (res.status !== 200) throw new Error(`introspect: ${res.status}`);
    return res.json();
  }

  async stop() {
    await stopChild(this.child);
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** `next start` of the built example on `port`, configured by `env`. */
export async function startApp(port, env) {
  const log = [];
  const child = spawn(join(APP_DIR, "node_modules/.bin/next"), ["start", "--hostname", "127.0.0.1", "--port", String(port)], {
    cwd: APP_DIR,
    env: { ...cleanEnv(), NEXT_TELEMETRY_DISABLED: "1", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  track(child, log);
  await waitFor(`http://127.0.0.1:${port}/`, child, log, "next start");
  return { log, stop: () => stopChild(child) };
}

export function launchChromium(executablePath) {
  return chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

/**
 * Opens the session cookie as the SDK README documents it (HKDF-SHA256 → AES-256-GCM,
 * the cookie's name as additional data): how the test learns the real tokens.
 */
export async function unseal(name, value, secret = SECRET) {
  const enc = new TextEncoder();
  const subtle = webcrypto.subtle;
  const ikm = await subtle.importKey("raw", enc.encode(secret), "HKDF", false, ["deriveKey"]);
  const key = await subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: enc.encode("portcullis-next-session"), info: enc.encode("portcullis next session v1") },
    ikm,
    { name: "AES-GCM", length: 256 },
    false,
    ["decrypt"],
  );
  const bytes = Buffer.from(value, "base64url");
  if (bytes[0] !== 1) throw new Error("not a sealed session cookie");
  const plain = await subtle.decrypt({ name: "AES-GCM", iv: bytes.subarray(1, 13), additionalData: enc.encode(name) }, key, bytes.subarray(13));
  return JSON.parse(new TextDecoder().decode(plain)).v;
}
