// The admin console in Chromium against `stepgate demo` (issue 21, item 5): Jane, the
// demo's administrator, signs in, registers a security key on Chromium's virtual USB
// authenticator and steps up to AAL3 with it when a change asks; she finds John's blocked
// request by its request id and reads the trace, unlocks John, revokes his session (his
// next request is refused), runs what-if, and sees the report-only policy's would-be
// denials. Every console page is checked with axe in light, dark and at 390×844
// (lib/axe.mjs). Screenshots: e2e/artifacts/admin-console-NN-*.png.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { addVirtualAuthenticator, launchChromium } from '../lib/browser.mjs';
import { startDemo } from '../lib/demo.mjs';
import { PORTAL, newContext, pathOf, screenshots, webauthnClick } from '../lib/portal.mjs';
import { TotpClock } from '../lib/totp.mjs';

const JANE = { username: 'jane', password: 'blue-harbour-lantern', totp: new TotpClock('JANEDEMOJANEDEMOJANEDEMOJANEDEMO') };
const JOHN = { username: 'john', password: 'green-meadow-compass', totp: new TotpClock('JOHNDEMOJOHNDEMOJOHNDEMOJOHNDEMO') };
const TEST_TIMEOUT = 240_000;

let demo;
let browser;
const shot = screenshots('admin-console-');
const url = (path) => `${demo.baseUrl}${path}`;
const console_ = (path) => url(`${PORTAL}/admin${path}`);

before(async () => {
  demo = await startDemo();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await demo?.stop();
});

/** Opens `path`, signs `who` in with password + TOTP; ends where `path` leads. */
async function signIn(page, path, who) {
  await page.goto(url(path));
  assert.equal(pathOf(page), `${PORTAL}/login`);
  await page.fill('#username', who.username);
  await page.fill('#password', who.password);
  await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('form[action$="/login"] button[type=submit]')]);
  if (!(await page.locator('#totp-code').isVisible())) {
    await page.click('#other-ways > summary');
  }
  await page.fill('#totp-code', await who.totp.nextCode());
  await Promise.all([page.waitForURL((u) => u.pathname !== `${PORTAL}/step-up`), page.click('form[action$="/step-up/totp"] button[type=submit]')]);
}

/** A wrong password for `username` from a fresh context. */
async function wrongPassword(username) {
  const context = await newContext(browser);
  try {
    const page = await context.newPage();
    await page.goto(url(`${PORTAL}/login`));
    await page.fill('#username', username);
    await page.fill('#password', 'not the password');
    await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === `${PORTAL}/login`),
      page.click('form[action$="/login"] button[type=submit]'),
    ]);
  } finally {
    await context.close();
  }
}

describe('the admin console', { timeout: TEST_TIMEOUT }, () => {
  it('finds a blocked request, unlocks, revokes, runs what-if and shows report-only denials', { timeout: TEST_TIMEOUT }, async () => {
    // John: signed in, refused the Licence Console's admin page (the blocked page, in its
    // place, names the request), then locked out by three wrong passwords from elsewhere.
    const johns = await newContext(browser);
    const janes = await newContext(browser);
    try {
      const john = await johns.newPage();
      await signIn(john, '/licences', JOHN);
      await john.goto(url('/admin'));
      await john.locator('#blocked-reference').waitFor();
      const reference = await john.locator('#blocked-reference').textContent();
      const requestId = reference.match(/[0-9a-f]{24}/)?.[0];
      assert.ok(requestId, `the blocked page names the request: ${reference}`);
      for (let i = 0; i < 3; i += 1) await wrongPassword('john');

      // Jane: signed in to the console (reads need her group, not AAL3).
      const page = await janes.newPage();
      await signIn(page, `${PORTAL}/admin/`, JANE);
      assert.equal(pathOf(page), `${PORTAL}/admin/`);
      await page.locator('#decisions-chart').waitFor();
      assert.match(await page.locator('#locked-users').textContent(), /john/);
      await shot(page, 'dashboard');

      // The blocked decision by request id, and its trace.
      await page.click('nav.admin >> text=Decisions');
      await shot(page, 'decisions');
      await page.fill('#id', requestId);
      await Promise.all([page.waitForURL(`**/admin/decisions?id=${requestId}`), page.click('form.lookup button[type=submit]')]);
      assert.equal(await page.locator('#outcome').textContent(), 'deny');
      const decided = page.locator('#trace tr', { hasText: 'matched — decided' });
      assert.match(await decided.textContent(), /admin-console-admins-only/);
      await shot(page, 'decision-trace');

      // A security key on the virtual authenticator, registered from Security settings.
      await addVirtualAuthenticator(janes, page, { securityKey: true });
      await page.goto(url(`${PORTAL}/account`));
      await page.fill('#passkey-label', 'E2E admin key');
      await webauthnClick(page, '#add-security-key-button', (u) => u.pathname === `${PORTAL}/account` && u.searchParams.get('done') === 'webauthn');

      // Unlocking John asks for the key (AAL3), then returns to the users page.
      await page.goto(console_('/users'));
      const unlock = page.locator('button[aria-label="Unlock john"]');
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), unlock.click()]);
      await webauthnClick(page, '#webauthn-step-up', (u) => u.pathname === `${PORTAL}/admin/users`);
      await Promise.all([page.waitForURL(/done=/), page.locator('button[aria-label="Unlock john"]').click()]);
      assert.match(await page.locator('p.notice[role=status]').textContent(), /Unlocked john/);
      assert.equal(await page.locator('button[aria-label="Unlock john"]').count(), 0);
      await shot(page, 'users-unlocked');

      // John's session revoked: his next request is refused (back to the sign-in page).
      await page.goto(console_('/sessions?user=john'));
      await shot(page, 'sessions');
      await Promise.all([page.waitForURL(/done=/), page.locator('#sessions button[aria-label^="Revoke john"]').first().click()]);
      assert.match(await page.locator('p.notice[role=status]').textContent(), /Revoked a session of john/);
      await john.goto(url('/licences'));
      assert.equal(pathOf(john), `${PORTAL}/login`, 'the revoked session is refused');

      // What-if: John on the admin page, through the pipeline.
      await page.goto(console_('/what-if'));
      await page.selectOption('#w-app', 'licence-console');
      await page.fill('#w-path', '/admin');
      await page.fill('#w-user', 'john');
      await page.fill('#w-groups', 'staff');
      await Promise.all([page.waitForURL(/go=1/), page.click('#what-if-form button[type=submit]')]);
      const answer = await page.locator('#what-if-outcome').textContent();
      assert.match(answer, /deny/);
      assert.match(answer, /admin-console-admins-only/);
      await shot(page, 'what-if');

      // The report-only policy's would-be denials (the sign-ins above, from outside the office).
      await page.goto(console_('/policies'));
      const trial = page.locator('#policies tr[data-policy="remote-sign-in-trial"]');
      assert.match(await trial.textContent(), /would have decided deny: \d+/);
      await shot(page, 'policies');

      // The other pages, checked too.
      await page.goto(console_('/devices'));
      await shot(page, 'devices');
      await page.goto(console_('/audit?kind=signin.failure'));
      assert.match(await page.locator('#audit').textContent(), /signin\.failure/);
      await shot(page, 'audit');
    } finally {
      await johns.close();
      await janes.close();
    }
  });
});
