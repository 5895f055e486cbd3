// npm openid-client (and jose) against a running Portcullis: discovery, the
// authorization code flow with PKCE through the hosted sign-in form, ID token
// validation, userinfo, refresh, client credentials; jose verifies the tokens
// from the JWKS alone. Inputs come from the environment (see crates/portcullis/tests/it/interop.rs).
// Prints one JSON line on success; exits 1 with the reason otherwise.
import * as client from 'openid-client';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { driveHostedFlow } from './hosted_form.mjs';

const timer = setTimeout(() => { console.error('timed out after 30 s'); process.exit(1); }, 30_000);
const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const check = (cond, what) => { if (!cond) throw new Error(`check failed: ${what}`); };

async function main() {
  const issuer = env('ISSUER');
  const insecure = { execute: [client.allowInsecureRequests] }; // the test issuer is http on loopback
  const config = await client.discovery(new URL(issuer), env('CLIENT_ID'), undefined,
    client.ClientSecretBasic(env('CLIENT_SECRET')), insecure);
  const meta = config.serverMetadata();
  check(meta.issuer === issuer, 'discovery issuer');

  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const authUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: env('REDIRECT_URI'),
    scope: 'openid profile email offline_access',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  const { callback, steps } = await driveHostedFlow(authUrl.href, env('REDIRECT_URI'), env('USER_EMAIL'), env('USER_PASSWORD'));

  const tokens = await client.authorizationCodeGrant(config, new URL(callback), {
    pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true,
  });
  const claims = tokens.claims();
  check(claims.sub && claims.email === env('USER_EMAIL'), `ID token claims ${JSON.stringify(claims)}`);
  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  check(info.email === env('USER_EMAIL'), `userinfo ${JSON.stringify(info)}`);

  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  check(refreshed.access_token && refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token,
    'refresh rotates the refresh token');

  const cc = await client.discovery(new URL(issuer), env('CC_CLIENT_ID'), undefined,
    client.ClientSecretBasic(env('CC_CLIENT_SECRET')), insecure);
  const ccTokens = await client.clientCredentialsGrant(cc, { scope: env('CC_SCOPE') });
  check(ccTokens.access_token && !ccTokens.refresh_token, 'client credentials: an access token, no refresh token');

  const jwks = createRemoteJWKSet(new URL(meta.jwks_uri));
  const user = await jwtVerify(refreshed.access_token, jwks, { issuer, typ: 'at+jwt' });
  check(user.payload.client_id === env('CLIENT_ID') && user.payload.sub === claims.sub, 'user access token claims');
  const svc = await jwtVerify(ccTokens.access_token, jwks, { issuer, typ: 'at+jwt' });
  check(svc.payload.client_id === env('CC_CLIENT_ID') && svc.payload.scope === env('CC_SCOPE'), 'service token claims');
  const id = await jwtVerify(tokens.id_token, jwks, { issuer, audience: env('CLIENT_ID') });
  check(id.payload.nonce === nonce, 'ID token nonce');

  console.log(JSON.stringify({ ok: true, sub: claims.sub, steps, id_alg: id.protectedHeader.alg }));
}

main().then(() => { clearTimeout(timer); }, (e) => {
  console.error(e?.stack ?? String(e));
  if (e?.cause) console.error('cause:', JSON.stringify(e.cause));
  process.exit(1);
});
