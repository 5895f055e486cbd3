"use client";
// @portcullis/react in server mode: it holds no token and reads /api/auth/session.
import type { ReactNode } from "react";
import { PortcullisProvider } from "@portcullis/react";

export function Providers({ children }: { children: ReactNode }) {
  return (
    <PortcullisProvider mode="server" basePath="/api/auth">
      {children}
    </PortcullisProvider>
  );
}
