/**
 * `has()`: display decisions from claims. The claims come from a token the browser
 * holds, so they only decide what to show; servers must check the token themselves.
 */
import type { AccessClaims, HasParams } from "./types.js";

/** Whether `claims` satisfy every condition in `params` (no condition: signed in). */
export function checkHas(claims: AccessClaims | null | undefined, params: HasParams): boolean {
  if (!claims) return false;
  const scopes = typeof claims.scope === "string" ? claims.scope.split(" ").filter(Boolean) : [];
  if (params.permission !== undefined && !scopes.includes(params.permission)) return false;
  if (params.scope !== undefined && !scopes.includes(params.scope)) return false;
  if (params.role !== undefined) {
    const roles = Array.isArray(claims.roles) ? claims.roles : [];
    if (!roles.includes(params.role)) return false;
  }
  if (params.plan !== undefined) {
    const metadata = claims.metadata;
    const plan = metadata && typeof metadata === "object" ? (metadata as Record<string, unknown>).plan : undefined;
    if (plan !== params.plan) return false;
  }
  return true;
}
