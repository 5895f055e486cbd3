// The two Next.js modules the session imports (at run time, only inside Next):
// declared here so the SDK builds without `next` installed. Not emitted.
declare module "next/headers" {
  export function cookies(): Promise<{
    getAll(): Array<{ name: string; value: string }>;
    set(name: string, value: string, options?: Record<string, unknown>): unknown;
  }>;
}
declare module "next/server" {
  export class NextResponse extends Response {
    static next(init?: { request?: { headers?: Headers } }): NextResponse;
  }
}
