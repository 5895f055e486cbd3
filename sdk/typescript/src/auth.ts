/** Who is calling, as the middleware hands it to route handlers. */
import type { AccessTokenClaims } from "./verify.js";

export interface Auth {
  /** The user; `null` for a client-credentials token (it is about the client itself). */
  userId: string | null;
  /** The session behind a user's token. */
  sessionId: string | null;
  /** The OAuth client the token was issued to; `null` for first-party tokens. */
  clientId: string | null;
  /** The API key used, when the credential was one. */
  apiKeyId: string | null;
  /** Granted permissions: the token's `scope`, or the key's effective scopes. */
  scopes: string[];
  /** Roles at issue time (tokens only). */
  roles: string[];
  /** Every claim of the token; `null` for API keys. */
  claims: AccessTokenClaims | null;
}

export function authFromClaims(claims: AccessTokenClaims): Auth {
  // A client-credentials token has no session and its subject is the client.
  const isUser = claims.sid != null || claims.client_id !== claims.sub;
  return {
    userId: isUser ? claims.sub : null,
    sessionId: claims.sid ?? null,
    clientId: claims.client_id ?? null,
    apiKeyId: null,
    scopes: typeof claims.scope === "string" ? claims.scope.split(/\s+/).filter(Boolean) : [],
    roles: Array.isArray(claims.roles) ? claims.roles : [],
    claims,
  };
}
