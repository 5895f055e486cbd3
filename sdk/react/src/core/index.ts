/**
 * `@portcullis/react/core`: the framework-free parts (no React, no "use client"):
 * the browser client, the server-session client, `checkHas` and the types. The
 * React entry re-exports all of it.
 */
export { BrowserClient, type BrowserClientOptions } from "./browser-client.js";
export { ServerSessionClient, snapshotOf, type ServerClientOptions } from "./server-client.js";
export { checkHas } from "./has.js";
export {
  PortcullisError,
  type AccessClaims,
  type AuthEngine,
  type AuthSnapshot,
  type GetTokenOptions,
  type Has,
  type HasParams,
  type ServerSession,
  type SignInOptions,
  type SignOutOptions,
  type UserInfo,
} from "./types.js";
