// Passkey prompts that go wrong, and the detour to confirm it's you (issue 24, items 1–2),
// on Chromium's virtual authenticator (CDP WebAuthn domain): each failure is shown in words
// a person reads with a next step — never the browser's exception text — and the user can
// try again; a passkey enrolment that first needs a fresh factor follows the server's
// redirect to the confirm page and comes back. Screenshots: e2e/artifacts/webauthn-NN-*.png.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { addVirtualAuthenticator, launchChromium } from '../lib/browser.mjs';
import { startDemo } from '../lib/demo.mjs';
import { PORTAL, newContext, pathOf, screenshots, webauthnClick } from '../lib/portal.mjs';
import { TotpClock } from '../lib/totp.mjs';

const TEST_TIMEOUT = 90_000;
const shot = screenshots('webauthn-');
const JOHN = { password: 'green-meadow-compass', totp: new TotpClock('JOHNDEMOJOHNDEMOJOHNDEMOJOHNDEMO') };
// What a person must never see.
const RAW = /NotAllowedError|InvalidStateError|DOMException|w3\.org|webauthn|The operation either timed out/i;
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

/** Clicks a WebAuthn button and resolves to the error it shows. */
async function failedCeremony(page, selector) {
  await page.evaluate(() => {
    const el = document.getElementById('webauthn-status');
    if (el) el.className = 'muted';
  });
  await page.click(selector);
  const status = page.locator('#webauthn-status.error');
  await status.waitFor();
  return status.textContent();
}

describe('passkey prompts', { timeout: 3 * TEST_TIMEOUT }, () => {
  let context;
  let page;
  let authenticator;

  before(async () => {
    context = await newContext(browser);
    page = await context.newPage();
    authenticator = await addVirtualAuthenticator(context, page);
    // In the office on a healthy company laptop, the password alone signs in (AAL1).
    await context.addCookies([{ name: 'stepgate_demo_device', value: 'office', url: demo.baseUrl }]);
  });
  after(async () => {
    await context?.close();
  });

  it('adding a passkey first asks to confirm it is you, then comes back', { timeout: TEST_TIMEOUT }, async () => {
    await page.goto(url('/licences'));
    await page.fill('#username', 'john');
    await page.fill('#password', JOHN.password);
    await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.click('form[action$="/login"] button[type=submit]')]);
    await page.goto(url(`${PORTAL}/account`));

    // Signed in with the password alone, John has an authenticator app: adding a passkey
    // needs it first. The server answers the script with a redirect, which it follows.
    await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('#add-passkey-button')]);
    assert.match(await page.locator('#step-up-reason').textContent(), /Changing how you sign in/);
    await page.fill('#totp-code', await JOHN.totp.nextCode());
    await Promise.all([
      page.waitForURL((u) => u.pathname === `${PORTAL}/account`),
      page.click('form[action$="/step-up/totp"] button[type=submit]'),
    ]);

    // The device cannot confirm it's him (user verification fails): words, not exceptions.
    await authenticator.cdp.send('WebAuthn.setUserVerified', { authenticatorId: authenticator.authenticatorId, isUserVerified: false });
    const refused = await failedCeremony(page, '#add-passkey-button');
    assert.match(refused, /The passkey was not added/);
    assert.doesNotMatch(refused, RAW);
    await shot(page, 'register-not-verified');

    // Try again once the device can.
    await authenticator.cdp.send('WebAuthn.setUserVerified', { authenticatorId: authenticator.authenticatorId, isUserVerified: true });
    await page.fill('#passkey-label', 'John laptop');
    await webauthnClick(page, '#add-passkey-button', (u) => u.searchParams.get('done') === 'webauthn');
    assert.match(await page.locator('#factors tr[data-kind="webauthn"]').textContent(), /John laptop/);
    await page.click('nav.top form[action$="/logout"] button');
    await page.locator('#message').waitFor();
  });

  it('a passkey sign-in the device cannot verify says so, and works on the next try', { timeout: TEST_TIMEOUT }, async () => {
    await page.goto(url('/licences'));
    assert.equal(pathOf(page), `${PORTAL}/login`);
    await authenticator.cdp.send('WebAuthn.setUserVerified', { authenticatorId: authenticator.authenticatorId, isUserVerified: false });
    const refused = await failedCeremony(page, '#passkey-signin');
    assert.match(refused, /No passkey was used/);
    assert.match(refused, /another way/);
    assert.doesNotMatch(refused, RAW);
    await shot(page, 'signin-not-verified');

    await authenticator.cdp.send('WebAuthn.setUserVerified', { authenticatorId: authenticator.authenticatorId, isUserVerified: true });
    await webauthnClick(page, '#passkey-signin', (u) => u.pathname === '/licences');
    assert.equal(await page.locator('#remote-user').textContent(), 'john');
  });

  it('no passkey on the device, a prompt left to time out, a browser without passkeys: each is told what to do', { timeout: TEST_TIMEOUT }, async () => {
    const other = await newContext(browser);
    try {
      const p = await other.newPage();
      await addVirtualAuthenticator(other, p); // empty: no passkey on this device
      await p.goto(url(`${PORTAL}/login`));
      const none = await failedCeremony(p, '#passkey-signin');
      assert.match(none, /No passkey was used/);
      assert.doesNotMatch(none, RAW);

      // A prompt the person walks away from: no touch ever comes, and the prompt times out
      // (its timeout cut to 1 s in the server's answer, so the test need not wait a minute).
      const walked = await other.newPage();
      const idle = await addVirtualAuthenticator(other, walked);
      await idle.cdp.send('WebAuthn.setAutomaticPresenceSimulation', { authenticatorId: idle.authenticatorId, enabled: false });
      await walked.route('**/webauthn/login/start', async (route) => {
        const response = await route.fetch();
        const body = await response.json();
        body.options.publicKey.timeout = 1000;
        await route.fulfill({ response, json: body });
      });
      await walked.goto(url(`${PORTAL}/login`));
      const timedOut = await failedCeremony(walked, '#passkey-signin');
      assert.match(timedOut, /cancelled or timed out/);
      assert.doesNotMatch(timedOut, RAW);
      await shot(walked, 'signin-timed-out');

      const old = await other.newPage();
      await old.addInitScript(() => {
        delete window.PublicKeyCredential;
      });
      await old.goto(url(`${PORTAL}/login`));
      const unsupported = await failedCeremony(old, '#passkey-signin');
      assert.match(unsupported, /does not support passkeys/);
      await shot(old, 'signin-unsupported-browser');
    } finally {
      await other.close();
    }
  });
});
