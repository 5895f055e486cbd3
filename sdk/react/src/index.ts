"use client";
/**
 * `@portcullis/react`: sign users in through Portcullis' hosted pages and show or
 * hide by role, permission or plan. See README.md.
 */
export { PortcullisProvider, type PortcullisProviderProps, type BrowserProviderProps, type ServerProviderProps } from "./react/provider.js";
export { useAuth, useUser, type UseAuthResult, type UseUserResult } from "./react/hooks.js";
export {
  Protect,
  RedirectToSignIn,
  SignedIn,
  SignedOut,
  SignInButton,
  SignOutButton,
  type ProtectProps,
  type SignInButtonProps,
  type SignOutButtonProps,
} from "./react/components.js";
export * from "./core/index.js";
