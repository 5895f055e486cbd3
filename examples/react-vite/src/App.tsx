import {
  Protect,
  RedirectToSignIn,
  SignedIn,
  SignedOut,
  SignInButton,
  SignOutButton,
  useAuth,
  useUser,
} from "@portcullis/react";
import { useState } from "react";

import { Link, usePath } from "./router";

const issuer = import.meta.env.VITE_PORTCULLIS_ISSUER as string;

export function App() {
  const path = usePath();
  const { isLoaded, error } = useAuth();
  return (
    <main>
      <nav>
        <Link to="/">Home</Link> · <Link to="/protected">Protected page</Link>
      </nav>
      {error && (
        <p role="alert" data-testid="auth-error">
          {error.code}: {error.message}
        </p>
      )}
      {!isLoaded && <p data-testid="loading">Loading…</p>}
      {path === "/protected" ? <ProtectedPage /> : path === "/callback" ? <Callback /> : <Home />}
    </main>
  );
}

function Home() {
  const { user } = useUser();
  const { claims } = useAuth();
  return (
    <section>
      <h1>Portcullis + React</h1>
      <SignedOut>
        <p data-testid="signed-out">You are signed out.</p>
        <SignInButton>Sign in</SignInButton>
      </SignedOut>
      <SignedIn>
        <p data-testid="signed-in">
          Signed in as <strong data-testid="email">{user?.email ?? "…"}</strong>
        </p>
        <p data-testid="roles">Roles: {(claims?.roles ?? []).join(", ") || "none"}</p>
        <SignOutButton>Sign out</SignOutButton>
        <ApiCall />
      </SignedIn>
      <h2>Invoices</h2>
      <Protect permission="read:invoices" fallback={<p data-testid="invoices-denied">You need the read:invoices permission.</p>}>
        <p data-testid="invoices">Here are your invoices.</p>
      </Protect>
      <h2>Pro features</h2>
      <Protect plan="pro" fallback={<p data-testid="pro-denied">Upgrade to the pro plan.</p>}>
        <p data-testid="pro">Pro features are on.</p>
      </Protect>
    </section>
  );
}

/** Calls an API with the access token, as an app would call its own. */
function ApiCall() {
  const { getToken } = useAuth();
  const [calls, setCalls] = useState(0);
  const [result, setResult] = useState("");
  const call = async () => {
    const n = calls + 1;
    setCalls(n);
    try {
      const token = await getToken();
      const res = await fetch(`${issuer}/oauth/userinfo`, { headers: { authorization: `Bearer ${token}` } });
      setResult(`call ${n}: ${res.status}`);
    } catch (e) {
      setResult(`call ${n}: error ${e instanceof Error ? e.message : String(e)}`);
    }
  };
  return (
    <p>
      <button type="button" onClick={() => void call()}>
        Call the API
      </button>{" "}
      <output data-testid="api-result">{result}</output>
    </p>
  );
}

function ProtectedPage() {
  const { user } = useUser();
  return (
    <section>
      <h1>Protected page</h1>
      <SignedIn>
        <p data-testid="protected">Only signed-in users see this, {user?.email ?? "…"}.</p>
      </SignedIn>
      <SignedOut>
        <RedirectToSignIn returnTo="/protected" />
      </SignedOut>
    </section>
  );
}

function Callback() {
  const { error } = useAuth();
  return error ? <SignInButton>Try again</SignInButton> : <p>Signing you in…</p>;
}
