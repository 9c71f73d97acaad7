// Passwords can be changed and reset (issue 24, item 11), walked in Chromium against
// `stepgate demo`: John changes his password from security settings (behind the fresh
// factor of his sign-in) and his other session is signed out; Jane resets hers through an
// administrator's link (`stepgate user reset-link`), then again with a recovery code from
// "Forgot your password?". Screenshots: e2e/artifacts/password-NN-*.png.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { launchChromium } from '../lib/browser.mjs';
import { startDemo, stepgateCli } from '../lib/demo.mjs';
import { PORTAL, newContext, pathOf, screenshots } from '../lib/portal.mjs';
import { TotpClock } from '../lib/totp.mjs';

const TEST_TIMEOUT = 120_000;
const shot = screenshots('password-');
const TOTP = {
  jane: new TotpClock('JANEDEMOJANEDEMOJANEDEMOJANEDEMO'),
  john: new TotpClock('JOHNDEMOJOHNDEMOJOHNDEMOJOHNDEMO'),
};
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

/** On the login page: password, then a TOTP code; ends on /licences. */
async function signIn(page, username, password) {
  await page.goto(url('/licences'));
  await page.fill('#username', username);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('form[action$="/login"] button[type=submit]')]);
  await totpStep(page, username, (u) => u.pathname === '/licences');
}

/** On the step-up page: a TOTP code, then wait for `arrived`. */
async function totpStep(page, username, arrived) {
  await page.fill('#totp-code', await TOTP[username].nextCode());
  await Promise.all([page.waitForURL(arrived), page.click('form[action$="/step-up/totp"] button[type=submit]')]);
}

describe('password change and reset', { timeout: 4 * TEST_TIMEOUT }, () => {
  let johnPassword = 'green-meadow-compass';
  let janePassword = 'blue-harbour-lantern';

  it('changes the password behind a fresh factor and signs out the other session', { timeout: TEST_TIMEOUT }, async () => {
    const other = await newContext(browser);
    const context = await newContext(browser);
    try {
      const otherPage = await other.newPage();
      await signIn(otherPage, 'john', johnPassword);
      const page = await context.newPage();
      await signIn(page, 'john', johnPassword);

      await page.goto(url(`${PORTAL}/account`));
      // A breached/short password is refused, with the rule.
      await page.fill('#account-new-password', 'short');
      await page.fill('#account-confirm-password', 'short');
      for (const id of ['#account-new-password', '#account-confirm-password']) {
        await page.locator(id).evaluate((el) => el.removeAttribute('minlength'));
      }
      await Promise.all([page.waitForLoadState('load'), page.click('#change-password-button')]);
      assert.match(await page.locator('#account-error').textContent(), /not changed/);

      johnPassword = 'copper-kettle-harbour-9';
      await page.fill('#account-new-password', johnPassword);
      await page.fill('#account-confirm-password', johnPassword);
      assert.equal(await page.locator('#sign-out-others').isChecked(), true, 'signing out the others is the default');
      await shot(page, 'change-password');
      await Promise.all([page.waitForURL((u) => u.searchParams.get('done') === 'password-others'), page.click('#change-password-button')]);
      assert.match(await page.locator('#notice').textContent(), /Password changed\. Your other sessions were signed out/);

      // The other browser is signed out; this one is not.
      await otherPage.goto(url('/licences'));
      assert.equal(pathOf(otherPage), `${PORTAL}/login`);
      await page.goto(url('/licences'));
      assert.equal(pathOf(page), '/licences');

      // The old password no longer works, the new one does.
      await otherPage.fill('#username', 'john');
      await otherPage.fill('#password', 'green-meadow-compass');
      await Promise.all([otherPage.waitForLoadState('load'), otherPage.click('form[action$="/login"] button[type=submit]')]);
      assert.match(await otherPage.locator('#login-error').textContent(), /Wrong username or password/);
    } finally {
      await other.close();
      await context.close();
    }
  });

  it("resets Jane's password through an administrator's link", { timeout: TEST_TIMEOUT }, async () => {
    const r = await stepgateCli(demo, ['user', 'reset-link', 'jane', '--no-email']);
    assert.equal(r.code, 0, r.stderr);
    const link = r.stdout.match(/^(http\S+\/reset\/\S+)$/m)[1];
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await page.goto(link);
      assert.match(await page.locator('h1').textContent(), /Choose a new password/);
      await shot(page, 'reset-link');
      janePassword = 'silver-lantern-meadow-7';
      await page.fill('#new-password', janePassword);
      await page.fill('#confirm-password', janePassword);
      // The sign-in the new password starts still needs her second factor.
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('#set-password-button')]);
      await totpStep(page, 'jane', (u) => u.pathname === `${PORTAL}/account`);
      await page.goto(url('/licences'));
      assert.equal(await page.locator('#remote-user').textContent(), 'jane');
      const used = await page.goto(link);
      assert.equal(used.status(), 410, 'the reset link works once');
    } finally {
      await context.close();
    }
  });

  it('resets a forgotten password with a recovery code', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await signIn(page, 'jane', janePassword);
      await page.goto(url(`${PORTAL}/account`));
      await Promise.all([page.waitForLoadState('load'), page.click('#gen-recovery')]);
      const codes = await page.locator('#recovery-codes li').allTextContents();
      assert.ok(codes.length >= 2, 'recovery codes are shown');
      await page.goto(url(`${PORTAL}/account`));
      await page.click('nav.top form[action$="/logout"] button');
      await page.locator('#message').waitFor();

      await page.goto(url('/licences'));
      await Promise.all([page.waitForURL(`**${PORTAL}/forgot**`), page.click('#forgot-link')]);
      await page.fill('#forgot-username', 'jane');
      await page.fill('#forgot-code', 'not-a-code');
      await Promise.all([page.waitForLoadState('load'), page.click('#forgot-submit')]);
      assert.match(await page.locator('#forgot-error').textContent(), /do not match/);
      await shot(page, 'forgot');
      await page.fill('#forgot-code', codes[0].trim());
      await Promise.all([page.waitForURL(`**${PORTAL}/reset/**`), page.click('#forgot-submit')]);
      janePassword = 'velvet-canyon-lighthouse-3';
      await page.fill('#new-password', janePassword);
      await page.fill('#confirm-password', janePassword);
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('#set-password-button')]);
      await totpStep(page, 'jane', (u) => u.pathname === `${PORTAL}/account`);
      assert.equal(await page.locator('nav.top strong').textContent(), 'jane');
    } finally {
      await context.close();
    }
  });
});
