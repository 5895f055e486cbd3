// What the browser tests share: inputs from the environment, the client's callback
// page, and headless Chromium started so that it stays on loopback.
import http from 'node:http';
import { chromium } from 'playwright-core';

export const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
export const b64url = (buf) => buf.toString('base64url');

// The client's callback: a page that only says it was reached.
export async function callbackServer(port) {
  const server = http.createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>callback</title><p>signed in callback</p>');
  });
  await new Promise((ok) => server.listen(port, '127.0.0.1', ok));
  return server;
}

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}
