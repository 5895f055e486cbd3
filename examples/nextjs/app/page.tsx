import { auth } from "@portcullis/sdk/next";

export default async function Home() {
  const { userId } = await auth();
  return (
    <main>
      <h1>Portcullis + Next.js</h1>
      {userId ? (
        <>
          <p>
            Signed in as <code data-testid="user-id">{userId}</code>. <a href="/dashboard">Dashboard</a>
          </p>
          {/* A POST, not a link: a prefetch must never sign anyone out. */}
          <form action="/api/auth/logout" method="post">
            <button type="submit">Sign out</button>
          </form>
        </>
      ) : (
        <p>
          <a href="/api/auth/login?returnTo=/dashboard">Sign in</a>
        </p>
      )}
    </main>
  );
}
