// Passkeys on Portcullis' hosted pages. A form marked data-passkey="get" or
// "create" runs a WebAuthn ceremony: it asks data-start (POST, JSON data-body) for
// the options, calls navigator.credentials, and submits the result through the
// page's own form, so the browser gets its session like any sign-in. Without
// JavaScript or WebAuthn the forms stay hidden; nothing here is inline.
(() => {
  'use strict';
  const b64 = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  const unb64 = (s) => {
    let t = s.replace(/-/g, '+').replace(/_/g, '/');
    while (t.length % 4) t += '=';
    return Uint8Array.from(atob(t), (c) => c.charCodeAt(0));
  };
  const encode = (c) => {
    const r = c.response;
    const out = { id: c.id, rawId: b64(c.rawId), type: c.type,
      extensions: c.getClientExtensionResults ? c.getClientExtensionResults() : {},
      response: { clientDataJSON: b64(r.clientDataJSON) } };
    if (r.attestationObject) {
      out.response.attestationObject = b64(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = b64(r.authenticatorData);
      out.response.signature = b64(r.signature);
      if (r.userHandle) out.response.userHandle = b64(r.userHandle);
    }
    return out;
  };
  if (!window.PublicKeyCredential) return;
  for (const form of document.querySelectorAll('form[data-passkey]')) {
    form.hidden = false;
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const failed = form.querySelector('.passkey-error');
      if (failed) failed.hidden = true;
      try {
        const res = await fetch(form.dataset.start, {
          method: 'POST', credentials: 'same-origin',
          headers: { 'content-type': 'application/json' }, body: form.dataset.body || '{}',
        });
        if (!res.ok) throw new Error(`start: ${res.status}`);
        const { challenge_id: id, publicKey } = await res.json();
        publicKey.challenge = unb64(publicKey.challenge);
        let c;
        if (form.dataset.passkey === 'create') {
          publicKey.user.id = unb64(publicKey.user.id);
          for (const x of publicKey.excludeCredentials || []) x.id = unb64(x.id);
          c = await navigator.credentials.create({ publicKey });
        } else {
          for (const x of publicKey.allowCredentials || []) x.id = unb64(x.id);
          c = await navigator.credentials.get({ publicKey });
        }
        form.elements.challenge_id.value = id;
        form.elements.credential.value = JSON.stringify(encode(c));
        form.submit();
      } catch (e) {
        if (failed) failed.hidden = false;
      }
    });
  }
})();
