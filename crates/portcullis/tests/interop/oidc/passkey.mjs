// Headless Chromium (playwright-core) with a virtual WebAuthn authenticator (Chrome
// DevTools Protocol): under accounts.mfa = "required", the password leads to the
// hosted enrolment page, where "Use a passkey instead" registers a passkey; then,
// with no cookies left, "Sign in with a passkey" signs in with no email and no
// password. Each ends at the client's redirect URI with a code, redeemed with PKCE.
// Inputs come from the environment (crates/portcullis/tests/it/interop.rs); prints
// one JSON line on success, exits 1 with the reason otherwise.
import crypto from 'node:crypto';
import { b64url, callbackServer, env, launchChromium } from './browser_lib.mjs';

const timer = setTimeout(() => { console.error('timed out after 75 s'); process.exit(1); }, 75_000);
const claims = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

async function main() {
  const issuer = env('ISSUER');
  const redirectUri = `http://127.0.0.1:${env('CALLBACK_PORT')}/callback`;
  const server = await callbackServer(Number(env('CALLBACK_PORT')));
  const browser = await launchChromium();
  const problems = [];
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    // Errors the pages log (a script CSP refused, say); failed loads are judged
    // by their responses, where the browser's own favicon probe can be told apart.
    page.on('console', (m) => {
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console: ${m.text()}`);
    });
    page.on('response', (r) => {
      if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) problems.push(`${r.status()} ${r.url()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true,
        isUserVerified: true, automaticPresenceSimulation: true },
    });

    const authorize = () => {
      const verifier = b64url(crypto.randomBytes(32));
      const url = new URL(`${issuer}/oauth/authorize`);
      for (const [k, v] of Object.entries({
        response_type: 'code', client_id: env('CLIENT_ID'), redirect_uri: redirectUri, scope: 'openid email',
        state: 'st', nonce: b64url(crypto.randomBytes(12)),
        code_challenge: b64url(crypto.createHash('sha256').update(verifier).digest()), code_challenge_method: 'S256',
      })) if (v !== undefined) url.searchParams.set(k, v);
      return { url: url.href, verifier };
    };
    const redeem = async (verifier) => {
      const landed = new URL(page.url());
      const code = landed.searchParams.get('code');
      if (!code) throw new Error(`no code at ${landed.href}: ${(await page.textContent('body'))?.slice(0, 400)}`);
      const res = await fetch(`${issuer}/oauth/token`, {
        method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri,
          client_id: env('CLIENT_ID'), code_verifier: verifier }).toString(),
      });
      const tokens = await res.json();
      if (res.status !== 200) throw new Error(`token exchange: ${res.status} ${JSON.stringify(tokens)}`);
      return claims(tokens.id_token);
    };

    // 1. Password, then the required enrolment: a passkey instead of an app.
    let flow = authorize();
    await page.goto(flow.url);
    await page.getByLabel('Email').fill(env('USER_EMAIL'));
    await page.getByLabel('Password').fill(env('USER_PASSWORD'));
    await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: 'Sign in', exact: true }).click()]);
    const enrol = page.getByRole('button', { name: 'Use a passkey instead' });
    await enrol.waitFor({ timeout: 10_000 }).catch(async (e) => {
      throw new Error(`${e.message}\n${page.url()}\n${problems.join('; ')}\n${(await page.content()).slice(0, 3000)}`);
    });
    await Promise.all([page.waitForNavigation(), enrol.click()]);
    const codes = await page.locator('ul.codes li').count();
    if (codes !== 10) throw new Error(`expected 10 recovery codes: ${(await page.textContent('body'))?.slice(0, 400)}`);
    await Promise.all([page.waitForURL((u) => u.href.startsWith(redirectUri)), page.getByRole('link', { name: 'Continue' }).click()]);
    const first = await redeem(flow.verifier);
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    if (credentials.length !== 1 || !credentials[0].isResidentCredential) throw new Error(`credentials: ${JSON.stringify(credentials)}`);

    // 2. No cookies: passkey-first sign-in.
    await context.clearCookies();
    flow = authorize();
    await page.goto(flow.url);
    const button = page.getByRole('button', { name: 'Sign in with a passkey' });
    await button.waitFor({ timeout: 10_000 });
    await Promise.all([page.waitForURL((u) => u.href.startsWith(redirectUri), { timeout: 15_000 }), button.click()]);
    const second = await redeem(flow.verifier);
    if (problems.length) throw new Error(`the pages logged errors: ${problems.join('; ')}`);
    console.log(JSON.stringify({ ok: true, enrolled_amr: first.amr, passkey_amr: second.amr, acr: second.acr,
      sign_count: (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials[0].signCount }));
  } finally {
    await browser.close();
    server.close();
  }
}

main().then(() => { clearTimeout(timer); }, (e) => { console.error(e?.stack ?? String(e)); process.exit(1); });
