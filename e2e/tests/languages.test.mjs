// The portal in French (issue 24, item 9): a browser that asks for French gets the sign-in,
// the step-up and the sessions pages in French, each checked with axe in light, dark and at
// 390×844 (lib/axe.mjs); the switcher at the foot of the page (a plain link, no script)
// brings English back and the choice sticks. Screenshots: e2e/artifacts/lang-NN-*.png.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { launchChromium } from '../lib/browser.mjs';
import { startDemo } from '../lib/demo.mjs';
import { PORTAL, newContext, pathOf, screenshots } from '../lib/portal.mjs';
import { TotpClock } from '../lib/totp.mjs';

const TEST_TIMEOUT = 90_000;
const shot = screenshots('lang-');
const JANE = { password: 'blue-harbour-lantern', totp: new TotpClock('JANEDEMOJANEDEMOJANEDEMOJANEDEMO') };
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

describe('the portal in French', { timeout: 2 * TEST_TIMEOUT }, () => {
  it('signs in, steps up and lists sessions in French, then switches back to English', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext(browser, { locale: 'fr-FR', extraHTTPHeaders: { 'accept-language': 'fr-FR,fr;q=0.9,en;q=0.5' } });
    try {
      const page = await context.newPage();
      await page.goto(url('/licences'));
      assert.equal(await page.locator('html').getAttribute('lang'), 'fr');
      assert.equal((await page.locator('h1').textContent()).trim(), 'Se connecter');
      assert.equal(await page.title(), 'Se connecter · stepgate');
      assert.match(await page.locator('label[for=username]').textContent(), /Nom d’utilisateur/);
      await shot(page, 'login-fr');

      // A wrong password, in French, tied to the field.
      await page.fill('#username', 'jane');
      await page.fill('#password', 'pas-son-mot-de-passe');
      await Promise.all([page.waitForLoadState('load'), page.press('#password', 'Enter')]);
      assert.match(await page.locator('#login-error').textContent(), /Nom d’utilisateur ou mot de passe incorrect/);
      await shot(page, 'login-wrong-fr');

      // Away from the office the sign-in asks for a second step: the reason in French.
      await page.fill('#password', JANE.password);
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.press('#password', 'Enter')]);
      assert.equal((await page.locator('h1').textContent()).trim(), 'Encore une étape pour vous connecter');
      const reason = await page.locator('#step-up-reason').textContent();
      assert.doesNotMatch(reason, /AAL|factor/);
      assert.match(await page.locator('label[for=totp-code]').textContent(), /Code de votre application d’authentification/);
      await shot(page, 'step-up-fr');
      await page.fill('#totp-code', await JANE.totp.nextCode());
      await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.press('#totp-code', 'Enter')]);

      await page.goto(url(`${PORTAL}/sessions`));
      assert.equal((await page.locator('h1').textContent()).trim(), 'Vos sessions');
      assert.match(await page.locator('#current-session').textContent(), /session actuelle/);
      // The times are the browser's own, written in French by the page script.
      const when = await page.locator('#current-session time').first().textContent();
      assert.doesNotMatch(when, /UTC/, 'the page script rewrote the UTC time in local time');
      await shot(page, 'sessions-fr');

      // The switcher: a link, and the choice sticks for the next pages.
      await Promise.all([page.waitForURL(`**${PORTAL}/sessions`), page.click('#lang-en')]);
      assert.equal(pathOf(page), `${PORTAL}/sessions`);
      assert.equal(await page.locator('html').getAttribute('lang'), 'en');
      assert.equal((await page.locator('h1').textContent()).trim(), 'Your sessions');
      await page.goto(url(`${PORTAL}/account`));
      assert.equal(await page.locator('html').getAttribute('lang'), 'en');
      assert.equal(await page.locator('#lang-fr').textContent(), 'Français');
      await shot(page, 'account-en-after-switch');
    } finally {
      await context.close();
    }
  });
});
