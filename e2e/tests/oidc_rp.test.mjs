// stepgate as an OpenID Provider in a real browser (issue 19, item 6), against
// `stepgate demo`: Jane signs in to the demo's "Expense Reports" relying party (its own
// port, the code flow with PKCE through stepgate), then presses its button that asks for
// `acr_values=aal3`. `acr_values` is voluntary, so she first adds a security key (Chromium's
// virtual USB authenticator) in stepgate's security settings; the button then takes her to
// stepgate's step-up page, the key passes it, and the app's page shows the ID token's new
// `acr` (and `amr`, `auth_time`).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { addVirtualAuthenticator, launchChromium } from '../lib/browser.mjs';
import { ARTIFACTS_DIR, startDemo } from '../lib/demo.mjs';
import { PORTAL, newContext, pathOf, screenshots, webauthnClick } from '../lib/portal.mjs';
import { TotpClock } from '../lib/totp.mjs';

const JANE = { password: 'blue-harbour-lantern', totp: new TotpClock('JANEDEMOJANEDEMOJANEDEMOJANEDEMO') };
const TEST_TIMEOUT = 120_000;

let demo;
let browser;
let rpUrl;
const shot = screenshots('oidc-rp-');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Expense Reports' address, as `stepgate demo` prints it in its banner. */
async function expenseReportsUrl() {
  for (let i = 0; i < 100; i += 1) {
    const log = readFileSync(join(ARTIFACTS_DIR, 'stepgate-demo.log'), 'utf8');
    const m = log.match(/Expense Reports \(an OpenID Connect app\): open (http:\/\/localhost:\d+)\//);
    if (m) return m[1];
    await sleep(100);
  }
  throw new Error('the demo did not say where Expense Reports listens');
}

before(async () => {
  demo = await startDemo();
  rpUrl = await expenseReportsUrl();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await demo?.stop();
});

describe('Expense Reports signs in through stepgate and steps up with acr_values=aal3', { timeout: TEST_TIMEOUT }, () => {
  it('signs in, asks for aal3, steps up with a security key and shows acr aal3', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      // The virtual key lives with the page, across the RP's and stepgate's origins (both
      // `localhost`, the WebAuthn RP id).
      await addVirtualAuthenticator(context, page, { securityKey: true });
      const rp = new URL(rpUrl);
      const atRp = (path) => (u) => u.host === rp.host && u.pathname === path;

      await page.goto(`${rpUrl}/`);
      assert.equal(await page.locator('#status').textContent(), 'Not signed in.');
      await Promise.all([page.waitForURL(`**${PORTAL}/login**`), page.click('#sign-in')]);
      await page.fill('#username', 'jane');
      await page.fill('#password', JANE.password);
      await page.click('form[action$="/login"] button[type=submit]');
      // Whatever the sign-in policy asks beyond the password (the demo: her authenticator
      // app), then back to the app with a code.
      await page.waitForURL((u) => atRp('/')(u) || u.pathname === `${PORTAL}/step-up`);
      if (pathOf(page) === `${PORTAL}/step-up`) {
        if (!(await page.locator('#totp-code').isVisible())) await page.click('#other-ways > summary');
        await page.fill('#totp-code', await JANE.totp.nextCode());
        await page.click('form[action$="/step-up/totp"] button[type=submit]');
      }
      await page.locator('#user', { hasText: 'jane' }).waitFor().catch(async (e) => {
        throw new Error(`not back at the app signed in: at ${page.url()}: ${(await page.locator('body').innerText()).slice(0, 600)}`);
      });
      const firstAcr = (await page.locator('#acr').textContent()).trim();
      assert.notEqual(firstAcr, 'aal3', 'a password and an app code are not AAL3');
      const firstAuthTime = (await page.locator('#auth-time').textContent()).trim();
      await shot(page, 'signed-in');

      // `acr_values` is voluntary: stepgate steps up to what the user can reach. Jane adds a
      // security key in her security settings (the session is fresh enough to enrol)...
      await page.goto(`${demo.baseUrl}${PORTAL}/account`);
      await page.fill('#passkey-label', 'E2E security key');
      await webauthnClick(page, '#add-security-key-button', (u) => u.pathname === `${PORTAL}/account` && u.searchParams.get('done') === 'webauthn');
      await page.locator('#factors tr[data-kind="webauthn"]', { hasText: 'E2E security key' }).waitFor();

      // ...and back in the app asks for aal3: stepgate's step-up page wants the key.
      await page.goto(`${rpUrl}/`);
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('#sign-in-aal3')]);
      await page.locator('#webauthn-step-up').waitFor();
      assert.match(await page.locator('main').textContent(), /Expense Reports/, 'the page names the app asking');
      await shot(page, 'step-up-aal3');
      // The key passes the step-up; stepgate issues the code and the app redeems it.
      await webauthnClick(page, '#webauthn-step-up', atRp('/'));

      await page.locator('#acr', { hasText: 'aal3' }).waitFor();
      assert.equal((await page.locator('#acr').textContent()).trim(), 'aal3');
      const amr = await page.locator('#amr').textContent();
      assert.match(amr, /hwk/, `a hardware-bound key in amr: ${amr}`);
      const authTime = (await page.locator('#auth-time').textContent()).trim();
      assert.notEqual(authTime, firstAuthTime, 'the step-up is a new authentication');
      await shot(page, 'acr-aal3');
    } finally {
      await context.close();
    }
  });
});
