/**
 * Test kit: a real `portcullis serve` ($PORTCULLIS_BIN) on a free loopback port
 * with its own data dir (as sdk/typescript/test/harness.ts), a static server for
 * built apps with SPA fallback and stub routes, a Vite build of the example, and
 * headless Chromium. Missing pieces fail loudly: nothing is skipped.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import http from "node:http";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { extname, join, normalize, resolve } from "node:path";

import { chromium, type Browser, type Page } from "playwright-core";

export const PASSWORD = "correct horse battery staple";
export const SDK_DIR = resolve(import.meta.dirname, "..");
export const EXAMPLE_DIR = resolve(SDK_DIR, "../../examples/react-vite");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Servers still running; killed if the test process ends without stopping them. */
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export function binary(): string {
  const bin = process.env.PORTCULLIS_BIN ?? "";
  if (!bin) throw new Error("set PORTCULLIS_BIN to a built portcullis binary (cargo build -p portcullis)");
  if (!existsSync(bin)) throw new Error(`PORTCULLIS_BIN=${bin} does not exist`);
  return bin;
}

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => ok(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const RELAXED: Record<string, string> = {
  // Tests sign in far more often than the default limits allow from 127.0.0.1.
  PORTCULLIS_SECURITY__LOGIN_RATE: "100000/1m",
  PORTCULLIS_SECURITY__REGISTER_RATE: "100000/1m",
  PORTCULLIS_SECURITY__REFRESH_FAILURE_RATE: "100000/1m",
  PORTCULLIS_SECURITY__CLIENT_AUTH_FAILURE_RATE: "100000/1m",
  PORTCULLIS_SECURITY__ACCOUNT_FAILURE_CEILING: "100000/1m",
  PORTCULLIS_SECURITY__HASH_CONCURRENCY: "2",
  PORTCULLIS_LOG__LEVEL: "warn",
};

/** The environment without the caller's PORTCULLIS_* settings (so tests are hermetic). */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("PORTCULLIS_")) env[k] = v;
  return env;
}

export class Portcullis {
  private constructor(
    readonly base: string,
    readonly dataDir: string,
    private readonly child: ChildProcess,
    readonly log: string[],
  ) {}

  static async start(env: Record<string, string> = {}): Promise<Portcullis> {
    const bin = binary();
    const dataDir = mkdtempSync(join(tmpdir(), "portcullis-sdk-react-"));
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const log: string[] = [];
    const child = spawn(bin, ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir], {
      env: { ...cleanEnv(), ...RELAXED, PORTCULLIS_ISSUER: base, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    running.add(child);
    child.once("exit", () => running.delete(child));
    child.stdout?.on("data", (d: Buffer) => log.push(d.toString()));
    child.stderr?.on("data", (d: Buffer) => log.push(d.toString()));
    const me = new Portcullis(base, dataDir, child, log);
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`portcullis exited: ${log.join("")}`);
      try {
        if ((await fetch(`${base}/readyz`)).ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await me.stop();
        throw new Error(`portcullis not ready after 20 s: ${log.join("")}`);
      }
      await sleep(100);
    }
    return me;
  }

  /** Runs the CLI against this server's data dir; returns stdout. */
  cli(args: string[], input?: string): string {
    const out = spawnSync(binary(), [...args, "--data-dir", this.dataDir], {
      env: { ...cleanEnv(), PORTCULLIS_LOG__LEVEL: "warn" },
      input,
      encoding: "utf8",
      timeout: 20_000,
    });
    if (out.status !== 0) throw new Error(`portcullis ${args.join(" ")}: ${out.stderr}`);
    return out.stdout;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once("exit", r));
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async call(method: string, path: string, token?: string, body?: unknown): Promise<{ status: number; body: any }> {
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${this.base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = text;
    }
    return { status: res.status, body: parsed };
  }

  /** POST form to an OAuth endpoint. */
  async form(path: string, fields: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${this.base}${path}`, { method: "POST", body: new URLSearchParams(fields) });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  }

  /** Registers `email` with the password; returns the user id. */
  async register(email: string): Promise<string> {
    const r = await this.call("POST", "/v1/auth/register", undefined, { email, password: PASSWORD });
    if (r.status !== 201 && r.status !== 200) throw new Error(`register ${email}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.user.id as string;
  }

  private adminCreated = false;

  /**
   * An access token of an admin (created through the CLI the first time). A fresh
   * sign-in each time: tests run with access tokens that live seconds.
   */
  async admin(): Promise<string> {
    if (!this.adminCreated) {
      this.cli(["users", "create", "--email", "admin@example.com", "--role", "admin", "--password-stdin"], `${PASSWORD}\n`);
      this.adminCreated = true;
    }
    const r = await this.call("POST", "/v1/auth/login", undefined, { email: "admin@example.com", password: PASSWORD });
    if (r.status !== 200) throw new Error(`admin login: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.access_token as string;
  }
}

/** Content types of what Vite emits. */
const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".map": "application/json",
};

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void;

/** Serves a built SPA from `root` on 127.0.0.1 (unknown paths get index.html), plus stub routes. */
export class StaticServer {
  root = "";
  readonly routes = new Map<string, Handler>();

  private constructor(
    readonly origin: string,
    private readonly server: http.Server,
  ) {}

  static async start(): Promise<StaticServer> {
    let me: StaticServer | undefined;
    const server = http.createServer((req, res) => me!.serve(req, res));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const { port } = server.address() as AddressInfo;
    me = new StaticServer(`http://127.0.0.1:${port}`, server);
    return me;
  }

  private serve(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? "/", this.origin);
    const route = this.routes.get(url.pathname);
    if (route) return route(req, res, url);
    let file = normalize(join(this.root, decodeURIComponent(url.pathname)));
    if (!file.startsWith(this.root) || !existsSync(file) || statSync(file).isDirectory()) file = join(this.root, "index.html");
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
    res.end(readFileSync(file));
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

/** Builds examples/react-vite with its own Vite into a temp dir; returns the dir. */
export function buildExample(env: Record<string, string>): string {
  const vite = join(EXAMPLE_DIR, "node_modules/vite/bin/vite.js");
  if (!existsSync(vite)) throw new Error(`${vite} is missing: run npm ci in examples/react-vite`);
  if (!existsSync(join(SDK_DIR, "dist/index.js"))) throw new Error("sdk/react/dist is missing: npm run build");
  const out = mkdtempSync(join(tmpdir(), "portcullis-react-vite-"));
  const r = spawnSync(process.execPath, [vite, "build", "--outDir", out, "--emptyOutDir", "--logLevel", "warn"], {
    cwd: EXAMPLE_DIR,
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 120_000,
  });
  if (r.status !== 0) throw new Error(`vite build of the example failed: ${r.stdout}\n${r.stderr}`);
  return out;
}

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing (apt-get install chromium)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}

/** Types the credentials into Portcullis' hosted sign-in page (the page must be on it). */
export async function hostedSignIn(page: Page, issuer: string, email: string): Promise<void> {
  await page.waitForURL((u) => u.href.startsWith(issuer), { timeout: 15_000 });
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await Promise.all([
    page.waitForURL((u) => !u.href.startsWith(issuer), { timeout: 15_000 }),
    page.getByRole("button", { name: "Sign in" }).click(),
  ]);
}
