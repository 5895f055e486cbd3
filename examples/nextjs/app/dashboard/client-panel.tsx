"use client";
// Client components on top of the server session: hooks and <Protect> from
// @portcullis/react, with no token in the browser.
import { Protect, SignOutButton, useUser } from "@portcullis/react";

export function ClientPanel() {
  const { isLoaded, user } = useUser();
  return (
    <section>
      <p>
        From <code>useUser()</code>: <span data-testid="client-email">{isLoaded ? String(user?.email ?? "") : "…"}</span>
      </p>
      <Protect permission="read:invoices" fallback={<p data-testid="no-invoices">You cannot see invoices.</p>}>
        <p data-testid="invoices-section">
          You can read invoices: <a href="/api/invoices">/api/invoices</a>
        </p>
      </Protect>
      <SignOutButton>Sign out (client)</SignOutButton>
    </section>
  );
}
