// An API route for callers holding read:invoices: the session cookie, or a Bearer
// token from another client. Without it: 401, or 403 insufficient_scope.
import { withAuth } from "@portcullis/sdk/next";

export const GET = withAuth(
  async (_request, { auth }) =>
    Response.json({ owner: auth.userId, invoices: [{ id: "inv_1", total: 4200, currency: "EUR" }] }),
  { scope: "read:invoices" },
);
