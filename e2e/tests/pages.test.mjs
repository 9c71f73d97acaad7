// Every portal page by keyboard and by eye (issue 24, items 4, 7 and 8): a sign-in and a
// step-up done with Tab, Enter and typing only, focus where the next keystroke goes and
// visibly so; then the pages the other tests do not reach, each checked with axe in light,
// dark and at 390×844 (lib/axe.mjs). Screenshots: e2e/artifacts/pages-NN-*.png.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { launchChromium } from '../lib/browser.mjs';
import { startDemo } from '../lib/demo.mjs';
import { PORTAL, newContext, pathOf, screenshots } from '../lib/portal.mjs';
import { TotpClock } from '../lib/totp.mjs';

const TEST_TIMEOUT = 90_000;
const shot = screenshots('pages-');
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
const focused = (page) => page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName);

/** Presses Tab until `selector` has the focus (keyboard only), and checks it shows. */
async function tabTo(page, selector, max = 40) {
  for (let i = 0; i < max; i += 1) {
    const there = await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector);
    if (there) {
      const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
      assert.notEqual(outline, 'none', `the focus on ${selector} is visible`);
      return;
    }
    await page.keyboard.press('Tab');
  }
  throw new Error(`Tab never reached ${selector}`);
}

describe('the portal by keyboard, and every page checked', { timeout: 3 * TEST_TIMEOUT }, () => {
  let context;
  let page;
  let signedIn = false;

  before(async () => {
    context = await newContext(browser);
    page = await context.newPage();
    // In the office: the password alone signs in; changing licences then steps up.
    await context.addCookies([{ name: 'stepgate_demo_device', value: 'office', url: demo.baseUrl }]);
  });
  after(async () => {
    await context?.close();
  });

  it('signs in and steps up with Tab, Enter and typing only', { timeout: TEST_TIMEOUT }, async () => {
    await page.goto(url('/licences'));
    assert.equal(await focused(page), 'username', 'the username field has the focus');
    await page.keyboard.type('jane');
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'password');
    await page.keyboard.type('not-her-password');
    await Promise.all([page.waitForLoadState('load'), page.keyboard.press('Enter')]);
    // After a wrong password the focus is back in the password field, tied to the error.
    await page.locator('#login-error').waitFor();
    assert.equal(await focused(page), 'password');
    assert.equal(await page.locator('#password').getAttribute('aria-invalid'), 'true');
    assert.equal(await page.locator('#password').getAttribute('aria-describedby'), 'login-error');
    assert.equal(await page.locator('#username').inputValue(), 'jane');
    await shot(page, 'login-wrong-password');
    await page.keyboard.type(JANE.password);
    await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.keyboard.press('Enter')]);
    signedIn = true;

    // Provisioning needs fresh MFA: the step-up page has the code field focused.
    await tabTo(page, '#product');
    await page.keyboard.type('Keyboard Suite');
    await page.keyboard.press('Tab');
    await page.keyboard.type('A11y team');
    await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.keyboard.press('Enter')]);
    assert.equal(await focused(page), 'totp-code');
    assert.equal(await page.locator('#totp-code').getAttribute('autocomplete'), 'one-time-code');
    assert.equal(await page.locator('#totp-code').getAttribute('inputmode'), 'numeric');
    await page.keyboard.type(await JANE.totp.nextCode());
    await Promise.all([page.waitForURL(`**${PORTAL}/confirmed**`), page.keyboard.press('Enter')]);
    await tabTo(page, '#continue');
    await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.keyboard.press('Enter')]);

    await tabTo(page, '#product');
    await page.keyboard.type('Keyboard Suite');
    await page.keyboard.press('Tab');
    await page.keyboard.type('A11y team');
    await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.keyboard.press('Enter')]);
    assert.match(await page.locator('#licence-4').textContent(), /A11y team/);
  });

  it('shows the remaining pages in the portal layout, accessibly', { timeout: TEST_TIMEOUT }, async (t) => {
    if (!signedIn) return t.skip('needs the keyboard sign-in');
    await page.goto(url(`${PORTAL}/sessions`));
    assert.match(await page.locator('h1').textContent(), /sessions/i);
    await shot(page, 'sessions');

    await page.goto(url(`${PORTAL}/account`));
    await Promise.all([page.waitForLoadState('load'), page.click('#add-totp')]);
    await page.locator('#totp-secret').waitFor();
    await shot(page, 'enrol-totp');

    await page.goto(url(`${PORTAL}/account`));
    await Promise.all([page.waitForLoadState('load'), page.click('#gen-recovery')]);
    await page.locator('#recovery-codes').waitFor();
    const first = (await page.locator('#recovery-codes li').first().textContent()).trim();
    const download = await page.locator('#download-codes').getAttribute('href');
    assert.ok(download.startsWith('data:text/plain'), download);
    assert.ok(Buffer.from(download.split(',')[1], 'base64').toString('utf8').includes(first), 'the download holds the codes');
    assert.equal(await page.locator('#download-codes').getAttribute('download'), 'recovery-codes.txt');
    assert.equal(await page.locator('#print-codes').count(), 1);
    await shot(page, 'recovery-codes');

    // A form address opened directly: the portal's page with a way on, not a bare 405.
    const notThisWay = await page.goto(url(`${PORTAL}/recheck`));
    assert.equal(notThisWay.status(), 405);
    assert.ok(notThisWay.headers()['content-security-policy'], 'with the security headers');
    assert.equal(await page.locator('#continue').count(), 1);
    await shot(page, 'method-not-allowed');

    const missing = await page.goto(url(`${PORTAL}/no-such-page`));
    assert.equal(missing.status(), 404);
    assert.match(await page.locator('h1').textContent(), /Page not found/);
    await shot(page, 'not-found');

    await page.goto(url(`${PORTAL}/sessions`));
    assert.match(await page.locator('#sessions tbody tr').first().textContent(), /Chrome on Linux|Chromium on Linux|on Linux/);
    assert.match(await page.locator('#sessions tbody tr').first().textContent(), /current session/);

    const expired = await page.goto(url(`${PORTAL}/step-up?t=forged`));
    assert.equal(expired.status(), 400);
    // Every message page names its request (as the response header does) and has a way on.
    assert.equal((await page.locator('#request-id').textContent()).trim(), expired.headers()['x-request-id']);
    assert.equal(await page.locator('#continue').getAttribute('href'), `${PORTAL}/account`);
    await shot(page, 'link-expired');

    await page.goto(url(`${PORTAL}/forgot`));
    await shot(page, 'forgot');
    assert.equal(pathOf(page), `${PORTAL}/forgot`);
  });

  // Issue 24 item 7: the gateway's own answers (a host it does not serve, an application
  // that does not answer) are portal pages with a way on, the request id and the headers.
  it("shows the gateway's own errors in the portal layout, with a way on", { timeout: TEST_TIMEOUT }, async () => {
    const ctx = await newContext(browser);
    try {
      const p = await ctx.newPage();
      const account = `${demo.baseUrl}${PORTAL}/account`;
      /** The page's reference is the id the response carries, and its headers are the portal's. */
      const sameRequest = async (resp) => {
        const id = resp.headers()['x-request-id'];
        assert.match(id, /^[0-9a-f]{24}$/);
        assert.equal((await p.locator('#request-id').textContent()).trim(), id);
        assert.match(resp.headers()['content-security-policy'], /script-src 'self'/);
        assert.equal(resp.headers()['x-frame-options'], 'DENY');
      };

      const elsewhere = await p.goto(`http://elsewhere.localhost:${demo.port}/somewhere`);
      assert.equal(elsewhere.status(), 421);
      assert.equal((await p.locator('h1').textContent()).trim(), 'Not served here');
      assert.equal(await p.locator('#continue').getAttribute('href'), account);
      await sameRequest(elsewhere);
      await shot(p, 'not-served-here');

      // "Not answering" (502/504) and "try again in a moment" (503) are the same page with
      // "Try again" first: crates/server/tests/gateway.rs (the demo has no app whose
      // upstream is down and whose session cookie Chromium keeps).
    } finally {
      await ctx.close();
    }
  });
});
