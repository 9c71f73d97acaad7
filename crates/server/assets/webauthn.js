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
  // The page's words in the reader's language (base.html's #portal-words, from the
  // catalogue), English when a page has none.
  const words = (document.getElementById("portal-words") || {}).dataset || {};
  const w = (key, english) => words[key] || english;
  // The browser was sent on to another page: nothing to show.
  class Redirected extends Error {}
  // The server's own message, already in words a person reads; `signIn`, where to sign
  // in again when the session ended on the way.
  class ServerError extends Error {
    constructor(message, signIn) {
      super(message);
      this.signIn = signIn || "";
    }
  }

  // What went wrong, in words a person knows, with the next step: never the browser's
  // exception text. Browsers report "cancelled", "timed out" and "no passkey on this
  // device" all as NotAllowedError (on purpose: a page must not learn which passkeys exist).
  function humanError(e, registering) {
    if (e instanceof ServerError) return e.message || w("serverError", "Something went wrong on our side. Try again in a moment.");
    switch (e && e.name) {
      case "NotAllowedError":
        return registering
          ? w("notAllowedRegister", "The passkey was not added: the prompt was cancelled, timed out, or your device could not confirm it's you. Try again when you're ready.")
          : w("notAllowed", "No passkey was used: the prompt was cancelled or timed out, your device could not confirm it's you, or it has no passkey for this account. Try again, or use another way to sign in.");
      case "InvalidStateError":
        return registering
          ? w("invalidStateRegister", "This device already holds a passkey for your account. Use that one, or add a passkey on another device or security key.")
          : w("invalidState", "Your passkey could not be used on this device. Try again, or use another way to sign in.");
      case "AbortError":
        return w("abort", "The passkey prompt was closed. Try again when you're ready.");
      case "SecurityError":
        return w("security", "Passkeys cannot be used at this address. Open the site at its usual address and try again.");
      case "NotSupportedError":
        return w("notSupported", "This browser or device cannot use this kind of passkey. Try another browser, or use another way to sign in.");
      case "ConstraintError":
        return w("constraint", "Your device could not confirm it's you: set up a screen lock, fingerprint or PIN on it, or use another way to sign in.");
      case "TypeError":
        return w("network", "We could not reach the server. Check your connection and try again.");
      default:
        return w("other", "Something went wrong with the passkey. Try again, or use another way to sign in.");
    }
  }
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
    // The session ended on the way (the identity provider no longer vouches, say): say
    // why, with the way to sign in again.
    if (!r.ok && data.signed_out) throw new ServerError(data.error, data.redirect);
    // The server sends the browser on (to confirm it's you first, say): follow it.
    if (!r.ok && data.redirect) {
      window.location.assign(data.redirect);
      throw new Redirected();
    }
    if (!r.ok) throw new ServerError(data.error);
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
  function status(el, msg, isError, signIn) {
    const out = document.getElementById(el.dataset.status || "webauthn-status");
    if (!out) return;
    out.textContent = msg;
    out.className = isError ? "error" : "muted";
    if (signIn) {
      const a = document.createElement("a");
      a.href = signIn;
      a.textContent = w("signInAgain", "Sign in again");
      out.append(" ", a);
    }
  }
  async function register(btn) {
    status(btn, w("followPrompt", "Follow your browser's prompt…"));
    const token = btn.dataset.token || "";
    const then = btn.dataset.then || "";
    const start = await post(btn.dataset.start, { kind: btn.dataset.kind || "passkey", token, then });
    const cred = await navigator.credentials.create(creationOptions(start.options));
    const labelInput = document.getElementById(btn.dataset.label || "passkey-label");
    const done = await post(btn.dataset.finish, { id: start.id, token, then, response: credentialJson(cred), label: labelInput ? labelInput.value : "Passkey" });
    window.location.assign(done.redirect);
  }
  async function authenticate(btn) {
    status(btn, w("followPrompt", "Follow your browser's prompt…"));
    const start = await post(btn.dataset.start, { token: btn.dataset.token || "" });
    const cred = await navigator.credentials.get(requestOptions(start.options));
    const done = await post(btn.dataset.finish, { id: start.id, token: btn.dataset.token || "", response: credentialJson(cred) });
    status(btn, w("takingYouOn", "Done. Taking you on…"));
    window.location.assign(done.redirect);
  }
  // Recovery codes: print, copy (the same script: the CSP allows no other).
  document.addEventListener("click", (ev) => {
    const p = ev.target.closest("[data-print]");
    if (p) { window.print(); return; }
    const c = ev.target.closest("[data-copy]");
    if (!c) return;
    const list = document.getElementById(c.dataset.copy);
    const out = document.getElementById("codes-status");
    const text = list ? Array.from(list.querySelectorAll("li"), (li) => li.textContent).join("\n") : "";
    const say = (m) => { if (out) out.textContent = m; };
    if (!navigator.clipboard) { say(w("copyUnavailable", "Copying is not available here: select the codes and copy them.")); return; }
    navigator.clipboard.writeText(text).then(() => say(w("copied", "Copied.")), () => say(w("copyFailed", "Copying did not work: select the codes and copy them.")));
  });
  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest("[data-webauthn]");
    if (!btn) return;
    ev.preventDefault();
    const registering = btn.dataset.webauthn === "register";
    if (!window.PublicKeyCredential || !navigator.credentials) {
      status(btn, w("noPasskeys", "This browser does not support passkeys. Update it or use another browser, or use another way to sign in."), true);
      return;
    }
    const run = registering ? register : authenticate;
    run(btn).catch((e) => {
      if (e instanceof Redirected) return;
      status(btn, humanError(e, registering), true, e instanceof ServerError ? e.signIn : "");
    });
  });
})();
