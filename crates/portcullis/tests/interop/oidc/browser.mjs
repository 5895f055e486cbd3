// Headless Chromium (playwright-core) signs in through Portcullis' hosted page and
// lands on the client's redirect URI with a code, which is then redeemed with PKCE.
// Inputs come from the environment (see crates/portcullis/tests/it/interop.rs);
// prints one JSON line on success, exits 1 with the reason otherwise.
import crypto from 'node:crypto';
import { b64url, callbackServer, env, launchChromium } from './browser_lib.mjs';

const timer = setTimeout(() => { console.error('timed out after 60 s'); process.exit(1); }, 60_000);

async function main() {
  const issuer = env('ISSUER');
  const redirectUri = `http://127.0.0.1:${env('CALLBACK_PORT')}/callback`;
  const server = await callbackServer(Number(env('CALLBACK_PORT')));
  const browser = await launchChromium();
  try {
    const verifier = b64url(crypto.randomBytes(32));
    const challenge = b64url(crypto.createHash('sha256').update(verifier).digest());
    const state = b64url(crypto.randomBytes(12));
    const url = new URL(`${issuer}/oauth/authorize`);
    for (const [k, v] of Object.entries({
      response_type: 'code', client_id: env('CLIENT_ID'), redirect_uri: redirectUri, scope: 'openid email',
      state, nonce: b64url(crypto.randomBytes(12)), code_challenge: challenge, code_challenge_method: 'S256',
    })) url.searchParams.set(k, v);

    const page = await browser.newPage();
    if (process.env.DEBUG_HTTP) {
      page.on('request', async (r) => console.error('>>', r.method(), r.url(), JSON.stringify(await r.allHeaders())));
      page.on('response', async (r) => console.error('<<', r.status(), r.url(), JSON.stringify(await r.allHeaders())));
    }
    await page.goto(url.href);
    if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
    // By accessible label and role, as assistive technology finds them.
    await page.getByLabel('Email').fill(env('USER_EMAIL'));
    await page.getByLabel('Password').fill(env('USER_PASSWORD'));
    await Promise.all([
      page.waitForNavigation({ timeout: 15_000 }),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    if (!page.url().startsWith(redirectUri)) {
      // An untrusted client asks for consent; anything else is a failure to explain.
      const allow = page.getByRole('button', { name: 'Allow' });
      if (!(await allow.count())) throw new Error(`after sign-in: ${page.url()}\n${(await page.textContent('body'))?.slice(0, 500)}`);
      await Promise.all([page.waitForURL((u) => u.href.startsWith(redirectUri), { timeout: 15_000 }), allow.click()]);
    }
    const landed = new URL(page.url());
    const code = landed.searchParams.get('code');
    if (!code) throw new Error(`no code in ${landed.href}`);
    if (landed.searchParams.get('state') !== state) throw new Error('state was not returned intact');

    const res = await fetch(`${issuer}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri,
        client_id: env('CLIENT_ID'), code_verifier: verifier }).toString(),
    });
    const tokens = await res.json();
    if (res.status !== 200 || !tokens.id_token) throw new Error(`token exchange: ${res.status} ${JSON.stringify(tokens)}`);
    console.log(JSON.stringify({ ok: true, landed: landed.origin + landed.pathname, scope: tokens.scope }));
  } finally {
    await browser.close();
    server.close();
  }
}

main().then(() => { clearTimeout(timer); }, (e) => { console.error(e?.stack ?? String(e)); process.exit(1); });
