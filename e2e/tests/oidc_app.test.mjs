// The README's demo walk, step 9 (issue 24, "each step completes in Chromium"): the demo's
// OpenID Connect app, Expense Reports, on its own port. Signed in on the Licence Console,
// Jane opens it, *Sign in with stepgate* goes through stepgate's OpenID Provider with her
// running session (no sign-in page) and shows the ID token's acr and amr; *Approve
// expenses* asks for acr_values=aal3, voluntarily: with no security key Jane cannot reach
// it, so stepgate answers with what she has (aal2) and no dead-end step-up (with a key it
// steps up: crates/server/tests/oidc_provider/). No Back button anywhere.
// Screenshots: e2e/artifacts/oidc-NN-*.png.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { launchChromium } from '../lib/browser.mjs';
import { ARTIFACTS_DIR, startDemo } from '../lib/demo.mjs';
import { PORTAL, newContext, screenshots } from '../lib/portal.mjs';
import { TotpClock } from '../lib/totp.mjs';

const TEST_TIMEOUT = 90_000;
const shot = screenshots('oidc-');
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

/** The Expense Reports address the demo prints at start (README step 9). */
function expenseReports() {
  const log = readFileSync(join(ARTIFACTS_DIR, 'stepgate-demo.log'), 'utf8');
  const m = log.match(/Expense Reports \(an OpenID Connect app\): open (http:\/\/localhost:\d+\/)/);
  assert.ok(m, `the demo prints the Expense Reports address:\n${log}`);
  return m[1];
}

describe('README step 9: an OpenID Connect app', { timeout: 2 * TEST_TIMEOUT }, () => {
  it('signs in to Expense Reports with the running session, and asks for more for aal3', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await page.goto(`${demo.baseUrl}/licences`);
      await page.fill('#username', 'jane');
      await page.fill('#password', JANE.password);
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.press('#password', 'Enter')]);
      await page.fill('#totp-code', await JANE.totp.nextCode());
      await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.press('#totp-code', 'Enter')]);

      const app = expenseReports();
      await page.goto(app);
      assert.equal((await page.locator('h1').textContent()).trim(), 'Expense Reports');
      await shot(page, 'expense-reports');
      // Through stepgate's OpenID Provider and back, with no sign-in page on the way.
      const visited = [];
      // Every address the page went through, redirects included.
      page.on('request', (r) => {
        if (r.isNavigationRequest() && r.frame() === page.mainFrame()) visited.push(r.url());
      });
      await page.click('#sign-in');
      await page.locator('#acr').waitFor();
      assert.ok(page.url().startsWith(app), page.url());
      assert.ok(visited.some((u) => u.startsWith(demo.baseUrl)), `through stepgate: ${visited.join(' → ')}`);
      assert.ok(!visited.some((u) => new URL(u).pathname.startsWith(`${PORTAL}/login`)), `no sign-in page: ${visited.join(' → ')}`);
      assert.ok((await page.locator('#acr').textContent()).trim().length > 0, 'the ID token has an acr');
      assert.match(await page.locator('#amr').textContent(), /otp|pwd/);
      await shot(page, 'signed-in');

      // Approving expenses asks for aal3 (voluntary): through stepgate again, and back with
      // what Jane can reach without a security key.
      await page.goto(app);
      visited.length = 0;
      await page.click('#sign-in-aal3');
      await page.locator('#acr').waitFor();
      assert.ok(page.url().startsWith(app), page.url());
      assert.ok(visited.some((u) => u.startsWith(demo.baseUrl) && u.includes('acr_values=aal3')), visited.join(' → '));
      assert.equal((await page.locator('#acr').textContent()).trim(), 'aal2');
      await shot(page, 'approve-without-a-key');
    } finally {
      await context.close();
    }
  });
});
