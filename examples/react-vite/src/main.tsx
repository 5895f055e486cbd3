import { PortcullisProvider } from "@portcullis/react";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";

import { App } from "./App";

const issuer = import.meta.env.VITE_PORTCULLIS_ISSUER as string | undefined;
const clientId = import.meta.env.VITE_PORTCULLIS_CLIENT_ID as string | undefined;
// "sessionStorage" keeps the refresh token across reloads of a tab; default memory.
const storage = import.meta.env.VITE_PORTCULLIS_REFRESH_TOKEN_STORAGE === "sessionStorage" ? "sessionStorage" : "memory";
const root = createRoot(document.getElementById("root")!);

if (!issuer || !clientId) {
  root.render(<p>Set VITE_PORTCULLIS_ISSUER and VITE_PORTCULLIS_CLIENT_ID (see README.md).</p>);
} else {
  root.render(
    <StrictMode>
      <PortcullisProvider
        issuer={issuer}
        clientId={clientId}
        redirectUri={`${window.location.origin}/callback`}
        scope="openid profile email offline_access read:invoices"
        postLogoutRedirectUri={`${window.location.origin}/`}
        refreshTokenStorage={storage}
      >
        <App />
      </PortcullisProvider>
    </StrictMode>,
  );
}
