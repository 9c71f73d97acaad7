// "Forgot your password?" with a code by e-mail (issue 24, item 11), walked in Chromium
// against `stepgate serve` whose e-mail goes out over SMTP to a real recording server on
// loopback (Python aiosmtpd): Jane adds her address in Security settings (its code read
// from the mail), signs out, forgets her password, gets a code by e-mail, chooses a new
// password and signs in with it (and her authenticator app). Only where
// `factors.email_otp.password_reset: true` opts in. Screenshots:
// e2e/artifacts/reset-email-NN-*.png.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { launchChromium } from '../lib/browser.mjs';
import { PORTAL, newContext, pathOf, screenshots } from '../lib/portal.mjs';
import { ageSessions, hasAiosmtpd, otpauthSecret, startEchoApp, startServe, startSmtpSink, teamAppWithMfa } from '../lib/serve.mjs';
import { TotpClock } from '../lib/totp.mjs';

const TEST_TIMEOUT = 100_000;
const shot = screenshots('reset-email-');
// CI installs aiosmtpd (.ci/run); elsewhere the test says what is missing and is skipped.
const missing = !hasAiosmtpd() && !process.env.CI ? 'python3 has no aiosmtpd (pip install aiosmtpd)' : false;
let sink;
let app;
let server;
let browser;
let totp;

before(async () => {
  if (missing) return;
  sink = await startSmtpSink();
  app = await startEchoApp('Team App');
  server = await startServe('reset-email-stepgate', ({ port, baseUrl, dataDir }) => `
server: { listen: "127.0.0.1:${port}", public_url: "${baseUrl}", data_dir: "${dataDir}" }
sessions: { cookie: { secure: false }, cache_ttl: 0s }   # no per-node cache: an aged session is seen at once
factors:
  email_otp:
    enabled: true
    password_reset: true
    transport: { smtp: { host: 127.0.0.1, port: ${sink.port}, security: none, from: "stepgate <noreply@stepgate.test>" } }
portal:
  help: { text: the e2e help desk, email: help@example.com }
${teamAppWithMfa(app.port)}`, async (cli) => {
    await cli(['user', 'add', 'jane', '--email', 'jane@example.com', '--password-stdin'], 'blue-harbour-lantern\n');
    totp = new TotpClock(otpauthSecret(await cli(['user', 'enroll-totp', 'jane', '--no-qr'])));
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await app?.close();
  await sink?.stop();
});

const url = (path) => `${server.baseUrl}${path}`;

/** On the step-up page: a code from the authenticator app (behind "Try another way" if it is not first); waits for `arrived`. */
async function totpStep(page, arrived) {
  if (!(await page.locator('#totp-code').isVisible())) await page.click('#other-ways summary');
  await page.fill('#totp-code', await totp.nextCode());
  await Promise.all([page.waitForURL(arrived), page.click('form[action$="/step-up/totp"] button[type=submit]')]);
}

describe('a forgotten password, reset with a code by e-mail', { timeout: 3 * TEST_TIMEOUT, skip: missing }, () => {
  it('adds the address, then resets the password from the code in the mail and signs in with the new one', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await page.goto(url('/reports'));
      await page.fill('#username', 'jane');
      await page.fill('#password', 'blue-harbour-lantern');
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('form[action$="/login"] button[type=submit]')]);
      await totpStep(page, (u) => u.pathname === '/reports');
      assert.equal(await page.locator('#remote-user').textContent(), 'jane');

      // Security settings: her address, confirmed with the code the mail carries.
      await page.goto(url(`${PORTAL}/account`));
      await page.fill('#email-dest', 'jane@example.com');
      await Promise.all([page.waitForLoadState('load'), page.click('form[action$="/account/contact/start"]:has(#email-dest) button[type=submit]')]);
      const confirm = await sink.message(1);
      assert.equal(confirm.to, 'jane@example.com');
      await page.fill('#contact-code', confirm.code);
      await Promise.all([page.waitForLoadState('load'), page.click('form[action$="/account/contact/confirm"] button[type=submit]')]);
      assert.equal(await page.locator('#contact-code').count(), 0, 'the address is confirmed');
      await page.click('nav.top form[action$="/logout"] button');
      await page.locator('#message').waitFor();

      // Signed out, the password forgotten: "Forgot your password?" on the sign-in page.
      await page.goto(url('/reports'));
      await Promise.all([page.waitForURL(`**${PORTAL}/forgot**`), page.click('#forgot-link')]);
      assert.equal(await page.locator('#by-email').count(), 1, 'a code by e-mail is offered');
      assert.match(await page.locator('#forgot-help').textContent(), /the e2e help desk/);
      await shot(page, 'forgot');
      await page.fill('#forgot-email-username', 'jane');
      await Promise.all([page.waitForLoadState('load'), page.click('#forgot-email-send')]);
      await page.locator('#code-sent').waitFor();
      // The code field has the focus and is the kind phones fill in from the mail.
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'forgot-email-code');
      assert.equal(await page.locator('#forgot-email-code').getAttribute('autocomplete'), 'one-time-code');
      await shot(page, 'code-sent');
      const mail = await sink.message(2);
      assert.equal(mail.to, 'jane@example.com');
      assert.match(mail.code, /^\d{6}$/);

      // A wrong code: said so, tied to the field; the right one leads to a new password.
      const wrong = mail.code === '000000' ? '111111' : '000000';
      await page.fill('#forgot-email-code', wrong);
      await Promise.all([page.waitForLoadState('load'), page.click('#forgot-email-submit')]);
      await page.locator('#forgot-error').waitFor();
      assert.equal(await page.locator('#forgot-email-code').getAttribute('aria-invalid'), 'true');
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'forgot-email-code', 'the code field has the focus again');
      assert.equal(await page.locator('#forgot-code').getAttribute('aria-invalid'), null, 'the recovery-code form is not the one in error');
      assert.equal(await page.locator('#by-email ~ #forgot-error').count(), 1, 'the error is said beside the e-mail code, not above the recovery-code form');
      await shot(page, 'wrong-code');
      await page.fill('#forgot-email-code', mail.code);
      await Promise.all([page.waitForURL(`**${PORTAL}/reset/**`), page.click('#forgot-email-submit')]);
      assert.match(await page.locator('h1').textContent(), /Choose a new password/);
      await shot(page, 'new-password');
      await page.fill('#new-password', 'copper-lighthouse-meadow-5');
      await page.fill('#confirm-password', 'copper-lighthouse-meadow-5');
      // The sign-in the new password starts still needs her second factor.
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('#set-password-button')]);
      await totpStep(page, (u) => u.pathname !== `${PORTAL}/step-up`);
      await page.goto(url('/reports'));
      assert.equal(pathOf(page), '/reports');
      assert.equal(await page.locator('#remote-user').textContent(), 'jane');
      assert.equal(sink.count(), 2, 'one confirmation and one reset code, nothing else');
    } finally {
      await context.close();
    }

    // The old password no longer signs in; the new one does.
    const check = await newContext(browser);
    try {
      const page = await check.newPage();
      await page.goto(url('/reports'));
      await page.fill('#username', 'jane');
      await page.fill('#password', 'blue-harbour-lantern');
      await Promise.all([page.waitForLoadState('load'), page.click('form[action$="/login"] button[type=submit]')]);
      assert.match(await page.locator('#login-error').textContent(), /Wrong username or password/);
      await page.fill('#password', 'copper-lighthouse-meadow-5');
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('form[action$="/login"] button[type=submit]')]);
    } finally {
      await check.close();
    }
  });
  it('changes the password behind a fresh factor once her sign-in is older than 10 minutes', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await page.goto(url('/reports'));
      await page.fill('#username', 'jane');
      await page.fill('#password', 'copper-lighthouse-meadow-5');
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('form[action$="/login"] button[type=submit]')]);
      await totpStep(page, (u) => u.pathname === '/reports');
      // Fifteen minutes later (her session's times moved back): the change needs a fresh factor.
      ageSessions(server.dataDir, 'jane', 15 * 60);
      await page.goto(url(`${PORTAL}/account`));
      await page.fill('#account-new-password', 'amber-quartz-harbour-8');
      await page.fill('#account-confirm-password', 'amber-quartz-harbour-8');
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('#change-password-button')]);
      assert.match(await page.locator('#step-up-reason').textContent(), /Changing how you sign in/);
      await shot(page, 'confirm-before-change');
      // Back in Security settings, told that the change itself was not made (a form is
      // never re-sent for her), so she makes it again.
      await totpStep(page, (u) => u.pathname === `${PORTAL}/account`);
      assert.match(await page.locator('#notice').textContent(), /Confirmed\. Nothing has been changed yet/);
      await shot(page, 'confirmed-change-again');
      await page.fill('#account-new-password', 'amber-quartz-harbour-8');
      await page.fill('#account-confirm-password', 'amber-quartz-harbour-8');
      await Promise.all([page.waitForURL((u) => u.searchParams.get('done') === 'password-others'), page.click('#change-password-button')]);
      assert.match(await page.locator('#notice').textContent(), /Password changed/);
    } finally {
      await context.close();
    }
  });
});
