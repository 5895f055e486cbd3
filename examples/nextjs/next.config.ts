import type { NextConfig } from "next";

const config: NextConfig = {
  // This folder is the app's root (the repository has other lockfiles above it).
  turbopack: { root: import.meta.dirname },
  outputFileTracingRoot: import.meta.dirname,
  poweredByHeader: false,
};

export default config;
