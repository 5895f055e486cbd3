"use client";
/** The provider's context: the engine and its current snapshot. */
import { createContext } from "react";

import type { AuthEngine, AuthSnapshot } from "../core/types.js";

export interface PortcullisContextValue {
  engine: AuthEngine;
  snapshot: AuthSnapshot;
}

export const PortcullisContext = createContext<PortcullisContextValue | null>(null);
