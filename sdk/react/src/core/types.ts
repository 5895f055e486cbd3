/**
 * The shapes shared by the browser client, the server-mode client and the React
 * layer. Nothing here touches the DOM, so it is safe to import anywhere.
 */

/** Claims of a Portcullis access token (RFC 9068), as far as the SDK reads them. */
export interface AccessClaims {
  iss?: string;
  sub?: string;
  aud?: string | string[];
  exp?: number;
  iat?: number;
  /** The session (grant) the token belongs to. */
  sid?: string;
  client_id?: string;
  /** Space-separated scopes: permissions, and the OpenID scopes asked for. */
  scope?: string;
  /** Roles at issue time (trusted clients only). */
  roles?: string[];
  /** The user's `public_metadata` (with `tokens.include_metadata`, trusted clients only). */
  metadata?: Record<string, unknown>;
  [claim: string]: unknown;
}

/** What `/oauth/userinfo` answers (OpenID Connect Core §5.3), by scope. */
export interface UserInfo {
  sub: string;
  email?: string;
  email_verified?: boolean;
  name?: string;
  updated_at?: number;
  [claim: string]: unknown;
}

/** `has()` conditions; every one given must hold. */
export interface HasParams {
  /** A role, from the access token's `roles` claim. */
  role?: string;
  /** A permission, from the access token's `scope` claim. */
  permission?: string;
  /** Any scope (permission or OpenID scope), from the `scope` claim. */
  scope?: string;
  /** `metadata.plan` of the access token (`tokens.include_metadata` on the server). */
  plan?: string;
}

export type Has = (params: HasParams) => boolean;

/**
 * Why sign-in or a session failed. `code` is stable:
 * `state_mismatch`, `nonce_mismatch`, `issuer_mismatch`, `id_token_invalid`,
 * `token_exchange_failed`, `discovery_failed`, `session_ended` (a refresh answered
 * `invalid_grant`: reused, revoked or expired), `refresh_failed` (the server could
 * not be reached), `session_unavailable` (server mode), or an OAuth `error` the
 * authorization server sent back (`access_denied`, `login_required`, …).
 */
export class PortcullisError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "PortcullisError";
  }
}

/** The state the hooks read. A new object on every change (for useSyncExternalStore). */
export interface AuthSnapshot {
  isLoaded: boolean;
  isSignedIn: boolean;
  userId: string | null;
  sessionId: string | null;
  /** Access-token claims (browser mode) or the session's claims (server mode). */
  claims: AccessClaims | null;
  /** Whether `user` reflects the current session (false while it is being fetched first). */
  isUserLoaded: boolean;
  user: UserInfo | null;
  error: PortcullisError | null;
}

export interface SignInOptions {
  /** Where to go after signing in (a path of this app); default: the current path. */
  returnTo?: string;
  /** Pre-fills the email on the hosted page (`login_hint`). */
  loginHint?: string;
  /** `login` forces the password again; `consent` asks again. */
  prompt?: "login" | "consent" | "none";
}

export interface SignOutOptions {
  /** Overrides the provider's `postLogoutRedirectUri` (must be registered). */
  postLogoutRedirectUri?: string;
}

export interface GetTokenOptions {
  /** Refresh even if the current token is still fresh enough. */
  forceRefresh?: boolean;
}

/** What the provider drives: the browser client or the server-session client. */
export interface AuthEngine {
  subscribe(listener: () => void): () => void;
  getSnapshot(): AuthSnapshot;
  /** The snapshot rendered on the server and during hydration. */
  getServerSnapshot(): AuthSnapshot;
  start(): void;
  stop(): void;
  getToken(options?: GetTokenOptions): Promise<string | null>;
  signIn(options?: SignInOptions): Promise<void>;
  signOut(options?: SignOutOptions): Promise<void>;
  handleCallback(url?: string): Promise<void>;
}

/**
 * What `GET ${basePath}/session` answers in server mode (`@portcullis/sdk/next`
 * serves it): never a token, only what the page may show.
 */
export interface ServerSession {
  isSignedIn: boolean;
  userId?: string | null;
  sessionId?: string | null;
  /** The access token's claims, without the token. */
  claims?: AccessClaims | null;
  /** `/oauth/userinfo` of the user. */
  user?: UserInfo | null;
}

export const EMPTY: AuthSnapshot = Object.freeze({
  isLoaded: false,
  isSignedIn: false,
  userId: null,
  sessionId: null,
  claims: null,
  isUserLoaded: false,
  user: null,
  error: null,
});
