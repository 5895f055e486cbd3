// Next 16's proxy (middleware.ts in Next 15): signed-out visitors of /dashboard go to
// sign-in, /api/invoices answers 401 without a session, and a session whose access
// token is about to expire is renewed here, where the new cookie can be written.
import { createRouteMatcher, portcullisMiddleware } from "@portcullis/sdk/next";

export const proxy = portcullisMiddleware({
  protect: createRouteMatcher(["/dashboard(.*)", "/api/invoices(.*)"]),
});

export const config = {
  matcher: ["/((?!_next/static|_next/image|favicon.ico).*)"],
};
