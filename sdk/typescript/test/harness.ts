/**
 * Test kit: starts a real `portcullis serve` ($PORTCULLIS_BIN) on a free loopback
 * port with its own data dir, seeds users/roles/keys through the CLI and the admin
 * API, and offers a counting, fault-injecting HTTP proxy to put in front of it.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const PASSWORD = "correct horse battery staple";

const BIN = process.env.PORTCULLIS_BIN ?? "";

/** Servers still running; killed if the test process ends without stopping them. */
const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export function binary(): string {
  if (!BIN) throw new Error("set PORTCULLIS_BIN to a built portcullis binary (cargo build -p portcullis)");
  return BIN;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const RELAXED: Record<string, string> = {
  // Tests sign in far more than the default 5 times a minute from 127.0.0.1.
  PORTCULLIS_SECURITY__LOGIN_RATE: "100000/1m",
  PORTCULLIS_SECURITY__REGISTER_RATE: "100000/1m",
  PORTCULLIS_SECURITY__API_KEY_VERIFY_RATE: "100000/1m",
  PORTCULLIS_SECURITY__REFRESH_FAILURE_RATE: "100000/1m",
  PORTCULLIS_SECURITY__ACCOUNT_FAILURE_CEILING: "100000/1m",
  PORTCULLIS_SECURITY__HASH_CONCURRENCY: "2",
  PORTCULLIS_KEYS__RELOAD_INTERVAL: "1s",
  PORTCULLIS_LOG__LEVEL: "warn",
};

export class Portcullis {
  private constructor(
    readonly base: string,
    readonly dataDir: string,
    private readonly child: ChildProcess,
    readonly log: string[],
  ) {}

  static async start(env: Record<string, string> = {}): Promise<Portcullis> {
    const dataDir = mkdtempSync(join(tmpdir(), "portcullis-sdk-ts-"));
    const port = await freePort();
    const log: string[] = [];
    const child = spawn(binary(), ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir], {
      env: { ...cleanEnv(), ...RELAXED, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    running.add(child);
    child.once("exit", () => running.delete(child));
    child.stdout?.on("data", (d: Buffer) => log.push(d.toString()));
    child.stderr?.on("data", (d: Buffer) => log.push(d.toString()));
    const me = new Portcullis(`http://127.0.0.1:${port}`, dataDir, child, log);
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`portcullis exited: ${log.join("")}`);
      try {
        const res = await fetch(`${me.base}/readyz`);
        if (res.ok) break;
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

  /** Registers `email`; returns the user id. */
  async register(email: string): Promise<string> {
    const r = await this.call("POST", "/v1/auth/register", undefined, { email, password: PASSWORD });
    if (r.status !== 201 && r.status !== 200) throw new Error(`register ${email}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.user.id;
  }

  async login(email: string): Promise<{ access_token: string; refresh_token: string; expires_in: number }> {
    const r = await this.call("POST", "/v1/auth/login", undefined, { email, password: PASSWORD });
    if (r.status !== 200) throw new Error(`login ${email}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /** An admin (through the CLI), signed in. */
  async admin(): Promise<string> {
    this.cli(["users", "create", "--email", "admin@example.com", "--role", "admin", "--password-stdin"], `${PASSWORD}\n`);
    return (await this.login("admin@example.com")).access_token;
  }

  /** A role holding `permissions`, granted to a new user `email`; returns their fresh login. */
  async userWith(admin: string, email: string, role: string, permissions: string[]) {
    const created = await this.call("POST", "/v1/admin/roles", admin, { name: role, permissions });
    if (created.status !== 201) throw new Error(`role ${role}: ${created.status} ${JSON.stringify(created.body)}`);
    const id = await this.register(email);
    const grant = await this.call("POST", `/v1/admin/users/${id}/roles`, admin, { role });
    if (grant.status !== 200) throw new Error(`grant ${role}: ${grant.status} ${JSON.stringify(grant.body)}`);
    // A token carries the scopes held at login: sign in after the grant.
    return this.login(email);
  }

  async apiKey(token: string, scopes: string[]): Promise<string> {
    const r = await this.call("POST", "/v1/api-keys", token, { name: "test", scopes });
    if (r.status !== 201) throw new Error(`api key: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.key;
  }
}

/** The environment without PORTCULLIS_* settings of the caller (so tests are hermetic). */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("PORTCULLIS_")) env[k] = v;
  return env;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A proxy on 127.0.0.1 that counts requests by `METHOD path` and can fail some first. */
export class Proxy {
  readonly counts = new Map<string, number>();
  /** Answers queued per `METHOD path`: each is served once, instead of forwarding. */
  readonly faults = new Map<string, Array<{ status: number; headers?: Record<string, string> }>>();
  private constructor(
    readonly base: string,
    private readonly server: http.Server,
  ) {}

  static async start(target: string): Promise<Proxy> {
    const t = new URL(target);
    let me: Proxy | undefined;
    const server = http.createServer((req, res) => {
      const key = `${req.method} ${(req.url ?? "").split("?")[0]}`;
      me!.counts.set(key, (me!.counts.get(key) ?? 0) + 1);
      const fault = me!.faults.get(key)?.shift();
      if (fault) {
        req.resume();
        res.writeHead(fault.status, { "content-type": "application/problem+json", ...fault.headers });
        res.end(JSON.stringify({ type: "about:blank", title: "injected", status: fault.status, code: "overloaded" }));
        return;
      }
      const up = http.request(
        { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host } },
        (upRes) => {
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          upRes.pipe(res);
        },
      );
      up.on("error", () => {
        res.writeHead(502);
        res.end();
      });
      req.pipe(up);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const { port } = server.address() as AddressInfo;
    me = new Proxy(`http://127.0.0.1:${port}`, server);
    return me;
  }

  count(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

/** Serves an express app on a free loopback port. */
export async function listen(app: http.RequestListener): Promise<{ base: string; close: () => Promise<void> }> {
  const server = http.createServer(app);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    base: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
