// Single sign-on across the demo's hosts in a real browser (issue 18, item 5): Chromium
// keeps a `Domain=localhost` cookie to localhost itself, so the Team Wiki on wiki.localhost
// gets the session by a hand-off (docs/gateway.md): signed in on the Licence Console
// (localhost), Jane opens the wiki and lands in it without a sign-in page; no URL on the way
// carries her session id; signing out on the wiki ends the session on both hosts.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { launchChromium } from '../lib/browser.mjs';
import { startDemo } from '../lib/demo.mjs';
import { PORTAL, newContext, pathOf, screenshots } from '../lib/portal.mjs';
import { TotpClock } from '../lib/totp.mjs';

const JANE = { password: 'blue-harbour-lantern', totp: new TotpClock('JANEDEMOJANEDEMOJANEDEMOJANEDEMO') };
const TEST_TIMEOUT = 90_000;

let demo;
let browser;
const shot = screenshots('sso-');
const console_ = (path) => `${demo.baseUrl}${path}`;
const wiki = (path) => `${demo.baseUrl.replace('//localhost', '//wiki.localhost')}${path}`;

before(async () => {
  demo = await startDemo();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await demo?.stop();
});

describe('single sign-on to the Team Wiki on its own host', { timeout: 2 * TEST_TIMEOUT }, () => {
  it('signed in on the Licence Console, Jane opens the wiki without signing in; signing out there ends both', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await page.goto(console_('/licences'));
      assert.equal(pathOf(page), `${PORTAL}/login`);
      await page.fill('#username', 'jane');
      await page.fill('#password', JANE.password);
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('form[action$="/login"] button[type=submit]')]);
      await page.fill('#totp-code', await JANE.totp.nextCode());
      await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.click('form[action$="/step-up/totp"] button[type=submit]')]);
      assert.equal(await page.locator('#remote-user').textContent(), 'jane');

      // Every URL the browser asks for on the way to the wiki, and every page it shows.
      const asked = [];
      const shown = [];
      page.on('request', (r) => asked.push(r.url()));
      page.on('response', (r) => {
        if (r.status() === 200 && r.request().isNavigationRequest()) shown.push(r.url());
      });
      await page.goto(wiki('/'));
      assert.equal(new URL(page.url()).host, new URL(wiki('/')).host, `on the wiki: ${page.url()}`);
      assert.match(await page.locator('h1').textContent(), /Team Wiki/);
      assert.equal(await page.locator('#remote-user').textContent(), 'jane');
      assert.deepEqual(shown, [wiki('/')], 'no sign-in page on the way');
      assert.ok(asked.some((u) => new URL(u).pathname === `${PORTAL}/handoff`), `the hand-off was used: ${asked}`);
      const sessionIds = (await context.cookies()).filter((c) => /session/.test(c.name)).map((c) => c.value);
      assert.ok(sessionIds.length >= 2, 'a session cookie on each host');
      for (const id of sessionIds) {
        assert.ok(!asked.some((u) => u.includes(id)), 'no URL carries the session id');
      }
      await shot(page, 'wiki-signed-in');

      // Signing out on the wiki ends the one session: both hosts ask for a sign-in.
      await page.goto(wiki(`${PORTAL}/account`));
      await page.click('nav.top form[action$="/logout"] button');
      await page.locator('#message').waitFor();
      assert.match(await page.locator('h1').textContent(), /Signed out/);
      await page.goto(console_('/licences'));
      assert.equal(pathOf(page), `${PORTAL}/login`, 'the Licence Console asks for a sign-in');
      await page.goto(wiki('/'));
      assert.equal(pathOf(page), `${PORTAL}/login`, 'and so does the wiki');
      assert.equal(new URL(page.url()).host, new URL(console_('/')).host, 'on the portal of the public host');
    } finally {
      await context.close();
    }
  });
});
