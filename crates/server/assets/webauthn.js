// stepgate WebAuthn glue: the only JavaScript the portal needs. Forms work without it.
"use strict";
(function () {
  const b64u = {
    enc(buf) {
      const bytes = new Uint8Array(buf);
      let s = "";
      for (const b of bytes) s += String.fromCharCode(b);
      return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    },
    dec(str) {
      const s = atob(str.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((str.length + 3) % 4));
      return Uint8Array.from(s, (c) => c.charCodeAt(0)).buffer;
    },
  };
  function csrf() {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : "";
  }
  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf() },
      body: JSON.stringify(body || {}),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || ("request failed: " + r.status));
    return data;
  }
  function creationOptions(o) {
    const pk = o.publicKey;
    pk.challenge = b64u.dec(pk.challenge);
    pk.user.id = b64u.dec(pk.user.id);
    (pk.excludeCredentials || []).forEach((c) => (c.id = b64u.dec(c.id)));
    return o;
  }
  function requestOptions(o) {
    const pk = o.publicKey;
    pk.challenge = b64u.dec(pk.challenge);
    (pk.allowCredentials || []).forEach((c) => (c.id = b64u.dec(c.id)));
    return o;
  }
  function credentialJson(c) {
    const r = c.response;
    const out = { id: c.id, rawId: b64u.enc(c.rawId), type: c.type, extensions: c.getClientExtensionResults ? c.getClientExtensionResults() : {} };
    if (r.attestationObject) {
      out.response = { attestationObject: b64u.enc(r.attestationObject), clientDataJSON: b64u.enc(r.clientDataJSON) };
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response = {
        authenticatorData: b64u.enc(r.authenticatorData),
        clientDataJSON: b64u.enc(r.clientDataJSON),
        signature: b64u.enc(r.signature),
        userHandle: r.userHandle ? b64u.enc(r.userHandle) : null,
      };
    }
    return out;
  }
  function status(el, msg, isError) {
    const out = document.getElementById(el.dataset.status || "webauthn-status");
    if (out) { out.textContent = msg; out.className = isError ? "error" : "muted"; }
  }
  async function register(btn) {
    status(btn, "Follow your browser's prompt…");
    const token = btn.dataset.token || "";
    const start = await post(btn.dataset.start, { kind: btn.dataset.kind || "passkey", token });
    const cred = await navigator.credentials.create(creationOptions(start.options));
    const labelInput = document.getElementById(btn.dataset.label || "passkey-label");
    const done = await post(btn.dataset.finish, { id: start.id, token, response: credentialJson(cred), label: labelInput ? labelInput.value : "Passkey" });
    window.location.assign(done.redirect);
  }
  async function authenticate(btn) {
    status(btn, "Follow your browser's prompt…");
    const start = await post(btn.dataset.start, { token: btn.dataset.token || "" });
    const cred = await navigator.credentials.get(requestOptions(start.options));
    const done = await post(btn.dataset.finish, { id: start.id, token: btn.dataset.token || "", response: credentialJson(cred) });
    window.location.assign(done.redirect);
  }
  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest("[data-webauthn]");
    if (!btn) return;
    ev.preventDefault();
    if (!window.PublicKeyCredential) { status(btn, "This browser does not support passkeys.", true); return; }
    const run = btn.dataset.webauthn === "register" ? register : authenticate;
    run(btn).catch((e) => status(btn, e.message, true));
  });
})();
