// The README's demo step 10 in Chromium, against `stepgate demo`: signed in as Jane (AAL2),
// her session reads the admin API (/_stepgate/admin/api/v1/users/john opens as JSON); a
// change (POST …/users/john/unlock, JSON) is refused with a problem document whose
// `step_up_url` she opens in the browser: it asks for a security key, she adds one on
// Chromium's virtual USB authenticator from there (no Back button), steps up with it, and
// the same change then goes through. A script's token (`stepgate admin token create`)
// reads the user list. Screenshots: e2e/artifacts/admin-api-NN-*.png.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { addVirtualAuthenticator, launchChromium } from '../lib/browser.mjs';
import { startDemo, stepgateCli } from '../lib/demo.mjs';
import { PORTAL, newContext, pathOf, screenshots, webauthnClick } from '../lib/portal.mjs';
import { TotpClock } from '../lib/totp.mjs';

const TEST_TIMEOUT = 90_000;
const API = `${PORTAL}/admin/api/v1`;
const totp = new TotpClock('JANEDEMOJANEDEMOJANEDEMOJANEDEMO');
const shot = screenshots('admin-api-');
let demo;
let browser;

before(async () => {
  demo = await startDemo();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await demo?.stop();
});

const url = (path) => `${demo.baseUrl}${path}`;

/** A POST from the page's own script, as the README's curl would send it with her cookie. */
const unlockJohn = (page) => page.evaluate(async (path) => {
  const r = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  return { status: r.status, body: await r.json().catch(() => null) };
}, `${API}/users/john/unlock`);

describe("the README's step 10: the admin API", { timeout: 2 * TEST_TIMEOUT }, () => {
  it('reads with her session, and a change asks for her security key first', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await page.goto(url('/licences'));
      await page.fill('#username', 'jane');
      await page.fill('#password', 'blue-harbour-lantern');
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('form[action$="/login"] button[type=submit]')]);
      await page.fill('#totp-code', await totp.nextCode());
      await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.click('form[action$="/step-up/totp"] button[type=submit]')]);

      // Her session reads: the address opens as JSON in the browser.
      const read = await page.goto(url(`${API}/users/john`));
      assert.equal(read.status(), 200);
      assert.match(read.headers()['content-type'], /json/);
      const john = JSON.parse(await page.locator('body').innerText());
      assert.equal(john.user.username, 'john', JSON.stringify(john));

      // A change needs AAL3 within 5 minutes: a problem document with the way to get it.
      await page.goto(url('/licences'));
      const refused = await unlockJohn(page);
      assert.equal(refused.status, 403, JSON.stringify(refused.body));
      assert.match(refused.body.type, /step-up-required$/);
      assert.ok(refused.body.step_up_url, JSON.stringify(refused.body));

      // Its address in the browser: the step-up page; she has no key, so it leads to
      // Security settings, where she adds one, and back to the step-up.
      const key = await addVirtualAuthenticator(context, page, { securityKey: true });
      await page.goto(new URL(refused.body.step_up_url, demo.baseUrl).href);
      assert.equal(pathOf(page), `${PORTAL}/step-up`);
      assert.equal(await page.locator('#webauthn-step-up').count(), 0, 'no key yet: nothing to offer');
      await shot(page, 'step-up-for-a-change');
      await Promise.all([page.waitForURL(`**${PORTAL}/account**`), page.click('#add-factor')]);
      await page.fill('#passkey-label', 'Jane security key');
      await webauthnClick(page, '#add-security-key-button', (u) => u.pathname === `${PORTAL}/account` && u.searchParams.get('done') === 'webauthn');
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('#continue-to-app')]);
      await webauthnClick(page, '#webauthn-step-up', (u) => u.pathname !== `${PORTAL}/step-up`);
      const { credentials } = await key.cdp.send('WebAuthn.getCredentials', { authenticatorId: key.authenticatorId });
      assert.equal(credentials.length, 1, 'the key was used');
      // The API's step-up returns to the admin console (the change is the script's to resend).
      assert.equal(pathOf(page), `${PORTAL}/admin/`);
      await shot(page, 'after-step-up');

      // The same change now goes through.
      const done = await unlockJohn(page);
      assert.ok(done.status >= 200 && done.status < 300, JSON.stringify(done));
    } finally {
      await context.close();
    }
  });

  it("reads the user list with a script's token", { timeout: TEST_TIMEOUT }, async () => {
    const r = await stepgateCli(demo, ['admin', 'token', 'create', '--name', 'demo', '--scope', 'users:read']);
    assert.equal(r.code, 0, r.stderr);
    const token = r.stdout.match(/sgadm_\S+/)?.[0];
    assert.ok(token, `no token in:\n${r.stdout}`);
    const list = await fetch(url(`${API}/users`), { headers: { authorization: `Bearer ${token}` } });
    assert.equal(list.status, 200);
    const body = JSON.stringify(await list.json());
    assert.ok(body.includes('"jane"') && body.includes('"john"'), body);
    // Read only: the token's scope does not reach a change.
    const change = await fetch(url(`${API}/users/john/unlock`), {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(change.status, 403);
  });
});
