"use client";
/** Components that show, hide or act on the auth state. */
import { useEffect, useRef, type ButtonHTMLAttributes, type ReactNode } from "react";

import type { Has } from "../core/types.js";
import { useAuth } from "./hooks.js";

export interface ChildrenProps {
  children?: ReactNode;
}

/** Renders its children when signed in (nothing while loading). */
export function SignedIn({ children }: ChildrenProps): ReactNode {
  const { isLoaded, isSignedIn } = useAuth();
  return isLoaded && isSignedIn ? children : null;
}

/** Renders its children when signed out (nothing while loading). */
export function SignedOut({ children }: ChildrenProps): ReactNode {
  const { isLoaded, isSignedIn } = useAuth();
  return isLoaded && !isSignedIn ? children : null;
}

export interface ProtectProps extends ChildrenProps {
  role?: string;
  permission?: string;
  scope?: string;
  plan?: string;
  /** Decides instead of role/permission/scope/plan. */
  condition?: (has: Has) => boolean;
  /** Shown to signed-out users and those who fail the check. */
  fallback?: ReactNode;
}

/**
 * Renders its children when signed in and every given condition holds (no
 * condition: signed in), else `fallback`. For display only: the API behind it
 * must check the token.
 */
export function Protect({ children, fallback = null, condition, role, permission, scope, plan }: ProtectProps): ReactNode {
  const { isLoaded, isSignedIn, has } = useAuth();
  if (!isLoaded) return null;
  if (!isSignedIn) return fallback;
  const allowed = condition ? condition(has) : has({ role, permission, scope, plan });
  return allowed ? children : fallback;
}

export interface SignInButtonProps extends Omit<ButtonHTMLAttributes<HTMLButtonElement>, "onClick"> {
  /** Where to come back to after signing in; default: the current path. */
  returnTo?: string;
}

export function SignInButton({ returnTo, children, type = "button", ...rest }: SignInButtonProps): ReactNode {
  const { signIn } = useAuth();
  return (
    <button {...rest} type={type} onClick={() => void signIn({ returnTo })}>
      {children ?? "Sign in"}
    </button>
  );
}

export interface SignOutButtonProps extends Omit<ButtonHTMLAttributes<HTMLButtonElement>, "onClick"> {
  postLogoutRedirectUri?: string;
}

export function SignOutButton({ postLogoutRedirectUri, children, type = "button", ...rest }: SignOutButtonProps): ReactNode {
  const { signOut } = useAuth();
  return (
    <button {...rest} type={type} onClick={() => void signOut({ postLogoutRedirectUri })}>
      {children ?? "Sign out"}
    </button>
  );
}

/**
 * Starts sign-in when rendered signed out. It does not when sign-in has just
 * failed (`useAuth().error`): a callback that keeps failing must not loop.
 */
export function RedirectToSignIn({ returnTo }: { returnTo?: string }): ReactNode {
  const { isLoaded, isSignedIn, error, signIn } = useAuth();
  const started = useRef(false);
  useEffect(() => {
    if (started.current || !isLoaded || isSignedIn || error) return;
    started.current = true;
    void signIn({ returnTo });
  }, [isLoaded, isSignedIn, error, signIn, returnTo]);
  return null;
}
