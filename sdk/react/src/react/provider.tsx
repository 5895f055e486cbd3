"use client";
/**
 * `<PortcullisProvider>`: one auth engine per app. Browser mode (default) is a
 * public OAuth client holding tokens in the tab; `mode="server"` holds none and
 * reads the session from the app's server (Next.js).
 */
import { useEffect, useMemo, useState, useSyncExternalStore, type ReactNode } from "react";

import { BrowserClient } from "../core/browser-client.js";
import { ServerSessionClient } from "../core/server-client.js";
import type { AuthEngine, ServerSession } from "../core/types.js";
import { PortcullisContext } from "./context.js";

export interface BrowserProviderProps {
  mode?: "browser";
  /** The Portcullis issuer URL. */
  issuer: string;
  /** The public client's id. */
  clientId: string;
  /** A registered redirect URI; default `${location.origin}/callback`. */
  redirectUri?: string;
  /** Default `openid profile email offline_access`. */
  scope?: string;
  /** Where the refresh token lives: `memory` (default) or `sessionStorage`. */
  refreshTokenStorage?: "memory" | "sessionStorage";
  /** Where the server's logout sends the browser back to (registered in `post_logout_redirect_uris`). */
  postLogoutRedirectUri?: string;
  /** After a callback, go to `returnTo` with your router; default: history.replaceState + popstate. */
  onRedirectCallback?: (returnTo: string) => void;
  children?: ReactNode;
}

export interface ServerProviderProps {
  mode: "server";
  /** Where the session routes live; default `/api/auth`. */
  basePath?: string;
  /** The session the server rendered with (skips the first fetch). */
  initialSession?: ServerSession | null;
  children?: ReactNode;
}

export type PortcullisProviderProps = BrowserProviderProps | ServerProviderProps;

function createEngine(props: PortcullisProviderProps): AuthEngine {
  if (props.mode === "server") {
    return new ServerSessionClient({ basePath: props.basePath, initialSession: props.initialSession });
  }
  return new BrowserClient({
    issuer: props.issuer,
    clientId: props.clientId,
    redirectUri: props.redirectUri,
    scope: props.scope,
    refreshTokenStorage: props.refreshTokenStorage,
    postLogoutRedirectUri: props.postLogoutRedirectUri,
    onRedirectCallback: props.onRedirectCallback,
  });
}

/**
 * Provides auth to the tree. Its props are read once, at mount (give it a `key` to
 * start over with others). Renders on the server as "not loaded" (browser mode) or
 * as `initialSession` (server mode); nothing touches `window` until mounted.
 */
export function PortcullisProvider(props: PortcullisProviderProps): ReactNode {
  const [engine] = useState(() => createEngine(props));
  useEffect(() => {
    engine.start();
    return () => engine.stop();
  }, [engine]);
  const snapshot = useSyncExternalStore(engine.subscribe, engine.getSnapshot, engine.getServerSnapshot);
  const value = useMemo(() => ({ engine, snapshot }), [engine, snapshot]);
  return <PortcullisContext.Provider value={value}>{props.children}</PortcullisContext.Provider>;
}
