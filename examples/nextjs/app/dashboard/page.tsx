// A protected server component: the proxy sends signed-out visitors to sign-in, and
// the page checks again itself (a proxy matcher is easy to get wrong).
import { redirect } from "next/navigation";
import { auth, currentUser } from "@portcullis/sdk/next";

import { ClientPanel } from "./client-panel";

export default async function Dashboard() {
  const { userId, scopes } = await auth();
  if (!userId) redirect("/api/auth/login?returnTo=/dashboard");
  const user = await currentUser();
  return (
    <main>
      <h1>Dashboard</h1>
      <p>
        Signed in as <strong data-testid="email">{String(user?.email ?? "")}</strong>
      </p>
      <p>
        Permissions: <code data-testid="scopes">{scopes.join(" ")}</code>
      </p>
      <ClientPanel />
      <p>
        <a href="/">Home</a>
      </p>
      <form action="/api/auth/logout" method="post">
        <button type="submit">Sign out</button>
      </form>
    </main>
  );
}
