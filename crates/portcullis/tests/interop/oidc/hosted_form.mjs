// Drives Portcullis' hosted pages over plain HTTP, as a browser without JavaScript
// would: a cookie jar, no automatic redirects, and the first POST form of each page
// submitted with its hidden fields (plus email/password, or decision=allow).

export function htmlDecode(s) {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|quot|lt|gt|apos);/g, (_, e) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return { amp: '&', quot: '"', lt: '<', gt: '>', apos: "'" }[e];
  });
}

function attr(tag, name) {
  const m = tag.match(new RegExp(`\\s${name}="([^"]*)"`));
  return m ? htmlDecode(m[1]) : undefined;
}

/** The first `<form method="post">` of a page: its action and fields. */
export function parseForm(html) {
  const m = html.match(/<form\b[^>]*method="post"[^>]*>([\s\S]*?)<\/form>/i);
  if (!m) return null;
  const open = m[0].slice(0, m[0].indexOf('>') + 1);
  const fields = [];
  const names = new Set();
  for (const input of m[1].matchAll(/<input\b[^>]*>/gi)) {
    const name = attr(input[0], 'name');
    if (name === undefined) continue;
    fields.push([name, attr(input[0], 'value') ?? '']);
    names.add(name);
  }
  const buttons = [...m[1].matchAll(/<button\b[^>]*>/gi)].map((b) => [attr(b[0], 'name'), attr(b[0], 'value')]);
  return { action: attr(open, 'action') ?? '', fields, names, buttons };
}

/** Follows the hosted flow from `startUrl` until a redirect to `stopPrefix`; returns that URL. */
export async function driveHostedFlow(startUrl, stopPrefix, email, password) {
  const jar = new Map();
  const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const remember = (res) => {
    for (const c of res.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(';');
      const i = pair.indexOf('=');
      const [k, v] = [pair.slice(0, i).trim(), pair.slice(i + 1)];
      if (attrs.some((a) => a.trim().toLowerCase() === 'max-age=0')) jar.delete(k);
      else jar.set(k, v);
    }
  };
  let url = startUrl;
  let res = await fetch(url, { redirect: 'manual', headers: { cookie: cookieHeader() } });
  const steps = [];
  for (let i = 0; i < 10; i++) {
    remember(res);
    if (res.status >= 300 && res.status < 400) {
      const next = new URL(res.headers.get('location'), url).href;
      steps.push(`${res.status} -> ${next.split('?')[0]}`);
      if (next.startsWith(stopPrefix)) return { callback: next, steps };
      url = next;
      res = await fetch(url, { redirect: 'manual', headers: { cookie: cookieHeader() } });
      continue;
    }
    const body = await res.text();
    const form = res.status === 200 ? parseForm(body) : null;
    if (!form) throw new Error(`unexpected ${res.status} at ${url}: ${body.slice(0, 500)}`);
    const data = new URLSearchParams(form.fields);
    if (form.names.has('email')) data.set('email', email);
    if (form.names.has('password')) data.set('password', password);
    if (form.buttons.some(([n, v]) => n === 'decision' && v === 'allow')) data.set('decision', 'allow');
    steps.push(`${res.status} form ${form.names.has('password') ? 'sign-in' : 'consent'}`);
    url = new URL(form.action || url, url).href;
    res = await fetch(url, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: cookieHeader(), 'content-type': 'application/x-www-form-urlencoded' },
      body: data.toString(),
    });
  }
  throw new Error(`no redirect to ${stopPrefix} after 10 steps: ${steps.join(', ')}`);
}
