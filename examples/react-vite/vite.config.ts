import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

export default defineConfig({
  plugins: [react()],
  // @portcullis/react is linked from ../../sdk/react, which has React of its own
  // (a dev dependency): one copy of React for the whole app.
  resolve: { dedupe: ["react", "react-dom"] },
  server: { host: "127.0.0.1" },
  preview: { host: "127.0.0.1" },
});
