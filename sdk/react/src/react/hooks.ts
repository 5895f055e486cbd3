"use client";
/** `useAuth()` and `useUser()`. */
import { useCallback, useContext, useMemo } from "react";

import { checkHas } from "../core/has.js";
import type {
  AccessClaims,
  GetTokenOptions,
  Has,
  HasParams,
  PortcullisError,
  SignInOptions,
  SignOutOptions,
  UserInfo,
} from "../core/types.js";
import { PortcullisContext, type PortcullisContextValue } from "./context.js";

function usePortcullis(hook: string): PortcullisContextValue {
  const ctx = useContext(PortcullisContext);
  if (!ctx) throw new Error(`${hook}() must be used inside <PortcullisProvider>`);
  return ctx;
}

export interface UseAuthResult {
  isLoaded: boolean;
  isSignedIn: boolean;
  userId: string | null;
  sessionId: string | null;
  /** An access token valid for at least 30 s; null when signed out, and always null in server mode. */
  getToken: (options?: GetTokenOptions) => Promise<string | null>;
  signIn: (options?: SignInOptions) => Promise<void>;
  signOut: (options?: SignOutOptions) => Promise<void>;
  /** Display decisions from the token's claims; servers must check the token themselves. */
  has: Has;
  /** The claims `has()` reads. */
  claims: AccessClaims | null;
  /** Why sign-in failed or the session ended (`code`: `state_mismatch`, `nonce_mismatch`, `session_ended`, …). */
  error: PortcullisError | null;
}

export function useAuth(): UseAuthResult {
  const { engine, snapshot } = usePortcullis("useAuth");
  const claims = snapshot.isSignedIn ? snapshot.claims : null;
  const has = useCallback((params: HasParams) => checkHas(claims, params), [claims]);
  // Stable across renders, so they can sit in effect dependencies.
  const actions = useMemo(
    () => ({
      getToken: (o?: GetTokenOptions) => engine.getToken(o),
      signIn: (o?: SignInOptions) => engine.signIn(o),
      signOut: (o?: SignOutOptions) => engine.signOut(o),
    }),
    [engine],
  );
  return useMemo(
    () => ({
      isLoaded: snapshot.isLoaded,
      isSignedIn: snapshot.isSignedIn,
      userId: snapshot.userId,
      sessionId: snapshot.sessionId,
      ...actions,
      has,
      claims,
      error: snapshot.error,
    }),
    [actions, snapshot, has, claims],
  );
}

export interface UseUserResult {
  /** False until the user (or "signed out") is known. */
  isLoaded: boolean;
  /** `/oauth/userinfo` of the signed-in user (sub, email, email_verified, name, …); null when signed out. */
  user: UserInfo | null;
}

export function useUser(): UseUserResult {
  const { snapshot } = usePortcullis("useUser");
  const isLoaded = snapshot.isLoaded && (!snapshot.isSignedIn || snapshot.isUserLoaded);
  const user = snapshot.isSignedIn ? snapshot.user : null;
  return useMemo(() => ({ isLoaded, user }), [isLoaded, user]);
}
