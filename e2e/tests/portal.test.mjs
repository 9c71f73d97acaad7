// Browser end-to-end tests of the stepgate portal against `stepgate demo` (issue 4):
// Debian's Chromium driven by playwright-core, TOTP codes computed here, passkeys on
// Chromium's virtual WebAuthn authenticator. Each page of interest is saved to
// e2e/artifacts/NN-name.png.
//
// Jane's journey is one browser page kept across the tests of the first `describe` (the
// virtual authenticator lives as long as the page): a test whose prerequisite failed is
// skipped with the reason, rather than failing for an unrelated cause.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { addVirtualAuthenticator, launchChromium } from '../lib/browser.mjs';
import { startDemo } from '../lib/demo.mjs';
import { PORTAL, newContext as newPortalContext, pathOf, screenshots, webauthnClick } from '../lib/portal.mjs';
import { TotpClock } from '../lib/totp.mjs';

const USERS = {
  jane: { password: 'blue-harbour-lantern', totp: new TotpClock('JANEDEMOJANEDEMOJANEDEMOJANEDEMO') },
  john: { password: 'green-meadow-compass', totp: new TotpClock('JOHNDEMOJOHNDEMOJOHNDEMOJOHNDEMO') },
};
const TEST_TIMEOUT = 90_000;

let demo;
let browser;

const shot = screenshots();

const url = (path) => `${demo.baseUrl}${path}`;
const newContext = () => newPortalContext(browser);

/** On the login page: password, then the sign-in step-up with a TOTP code. Ends on /licences. */
async function signInWithPasswordAndTotp(page, username) {
  const u = USERS[username];
  await page.locator('#username').waitFor();
  await page.fill('#username', username);
  await page.fill('#password', u.password);
  await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('form[action$="/login"] button[type=submit]')]);
  await page.locator('#step-up-reason').waitFor();
  await page.fill('#totp-code', await u.totp.nextCode());
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/licences'),
    page.click('form[action$="/step-up/totp"] button[type=submit]'),
  ]);
  await page.locator('#remote-user').waitFor();
}

before(async () => {
  demo = await startDemo();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await demo?.stop();
});

describe("Jane's journey: password + TOTP, step-up, passkeys, sign-out", { timeout: 5 * TEST_TIMEOUT }, () => {
  let context;
  let page;
  let authenticator; // { cdp, authenticatorId }
  const done = {};
  /** Skips the test unless the earlier tests it builds on passed. */
  const needs = (t, ...steps) => {
    const missing = steps.filter((s) => !done[s]);
    if (missing.length) {
      t.skip(`needs the earlier step(s) ${missing.join(', ')}, which did not pass`);
      return false;
    }
    return true;
  };

  before(async () => {
    context = await newContext();
    page = await context.newPage();
  });
  after(async () => {
    await context?.close();
  });

  it('signs in with password + TOTP and lands on the page asked for', { timeout: TEST_TIMEOUT }, async () => {
    const resp = await page.goto(url('/licences'));
    assert.equal(pathOf(page), `${PORTAL}/login`, 'no session: redirected to the login page');
    assert.equal(resp.status(), 200);
    assert.ok(new URL(page.url()).searchParams.get('t'), 'the login URL carries the return token');

    await page.fill('#username', 'jane');
    await page.fill('#password', USERS.jane.password);
    await shot(page, 'login');
    await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('form[action$="/login"] button[type=submit]')]);
    // From localhost on a healthy laptop the sign-in policy asks for AAL2.
    await page.locator('#step-up-reason').waitFor();
    assert.match(await page.locator('h1').textContent(), /One more step to sign in/);
    assert.equal(await page.locator('#totp-code').count(), 1, 'TOTP is offered');
    await page.fill('#totp-code', await USERS.jane.totp.nextCode());
    await shot(page, 'sign-in-step-up-totp');
    await Promise.all([
      page.waitForURL((u) => u.pathname === '/licences'),
      page.click('form[action$="/step-up/totp"] button[type=submit]'),
    ]);
    assert.equal(await page.locator('#remote-user').textContent(), 'jane');
    assert.match(await page.locator('#identity').textContent(), /AAL 2/);
    // The upstream checked stepgate's signed assertion against the JWKS.
    assert.match(await page.locator('#assertion').textContent(), /assertion verified ✓/);
    await shot(page, 'licences-signed-in');
    done.login = true;
  });

  it('provisions a licence without a prompt right after MFA (fresh factor)', { timeout: TEST_TIMEOUT }, async (t) => {
    if (!needs(t, 'login')) return;
    await page.fill('#product', 'Acme Analytics');
    await page.fill('#holder', 'E2E team');
    await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.click('#provision')]);
    const row = page.locator('#licence-4');
    await row.waitFor();
    assert.match(await row.textContent(), /E2E team/);
    assert.equal((await row.locator('.status').textContent()).trim(), 'active');
  });

  // Item 1 of issue 24: the step-up loop closes — no Back button anywhere.
  it('asks for a passkey she does not have; she adds one and comes back to revoke', { timeout: TEST_TIMEOUT }, async (t) => {
    if (!needs(t, 'login')) return;
    authenticator = await addVirtualAuthenticator(context, page);
    await page.goto(url('/licences'));
    await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.locator('#licence-2 form[action$="/revoke"] button').click()]);
    await page.locator('#step-up-reason').waitFor();
    assert.match(await page.locator('#step-up-reason').textContent(), /passkey|security key/i);
    assert.equal(await page.locator('#totp-code').count(), 0, 'TOTP is not enough for a revocation');
    assert.match(await page.locator('#add-factor').textContent(), /Add a passkey/);
    await shot(page, 'step-up-no-passkey');

    await Promise.all([page.waitForURL(`**${PORTAL}/account**`), page.click('#add-factor')]);
    assert.equal(await page.locator('#factors tr[data-kind="webauthn"]').count(), 0, 'no passkey yet');
    assert.match(await page.locator('#resume').textContent(), /Licence Console/);
    await shot(page, 'account-before-passkey');
    await page.fill('#passkey-label', 'E2E virtual passkey');
    await webauthnClick(
      page,
      '#add-passkey-button',
      (u) => u.pathname === `${PORTAL}/account` && u.searchParams.get('done') === 'webauthn',
    );
    const row = page.locator('#factors tr[data-kind="webauthn"]');
    await row.waitFor();
    assert.match(await row.textContent(), /E2E virtual passkey/);
    assert.equal(await page.locator('#account-error').count(), 0);
    done.passkey = true;
    assert.match(await page.locator('#continue-to-app').textContent(), /Continue to Licence Console/);
    await shot(page, 'account-passkey-added');

    await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('#continue-to-app')]);
    assert.equal(await page.locator('#webauthn-step-up').count(), 1, 'the new passkey is offered');
    await shot(page, 'step-up-revoke');
    // A POST is not replayed: the user is told, and led back to press it again.
    await webauthnClick(page, '#webauthn-step-up', (u) => u.pathname === `${PORTAL}/confirmed`);
    assert.match(await page.locator('#message').textContent(), /Confirmed\. Your request to revoke a licence has not been sent yet/);
    await shot(page, 'confirmed-not-sent');
    await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.click('#continue')]);
    assert.equal((await page.locator('#licence-2 .status').textContent()).trim(), 'active');

    await Promise.all([
      page.waitForURL((u) => u.pathname === '/licences'),
      page.locator('#licence-2 form[action$="/revoke"] button').click(),
    ]);
    assert.equal((await page.locator('#licence-2 .status').textContent()).trim(), 'revoked');
    assert.equal((await page.locator('#licence-1 .status').textContent()).trim(), 'active');
    await shot(page, 'licences-revoked');
  });

  it('signs out, and the app asks to sign in again', { timeout: TEST_TIMEOUT }, async (t) => {
    if (!needs(t, 'login')) return;
    await page.goto(url(`${PORTAL}/account`));
    await page.click('nav.top form[action$="/logout"] button');
    await page.locator('#message').waitFor();
    assert.match(await page.locator('h1').textContent(), /Signed out/);
    await shot(page, 'signed-out');

    await page.goto(url('/licences'));
    assert.equal(pathOf(page), `${PORTAL}/login`);
    await page.locator('#passkey-signin').waitFor();
    await shot(page, 'login-after-sign-out');
    done.signedOut = true;
  });

  const credentials = async () =>
    (await authenticator.cdp.send('WebAuthn.getCredentials', { authenticatorId: authenticator.authenticatorId }))
      .credentials;

  /** From the login page: the passkey button signs Jane in, at AAL2, without a password. */
  async function passwordlessSignIn(name) {
    assert.equal(pathOf(page), `${PORTAL}/login`);
    try {
      await webauthnClick(page, '#passkey-signin', (u) => u.pathname === '/licences');
    } finally {
      await shot(page, name);
    }
    assert.equal(await page.locator('#remote-user').textContent(), 'jane');
    assert.match(await page.locator('#identity').textContent(), /AAL 2/, 'a passkey with user verification is AAL2');
    assert.equal((await page.locator('#licence-2 .status').textContent()).trim(), 'revoked', 'same demo data');
  }

  async function signOutIfSignedIn() {
    await page.goto(url('/licences'));
    if (pathOf(page) === '/licences') {
      await page.goto(url(`${PORTAL}/account`));
      await page.click('nav.top form[action$="/logout"] button');
      await page.locator('#message').waitFor();
      await page.goto(url('/licences'));
    }
    assert.equal(pathOf(page), `${PORTAL}/login`);
  }

  // The enrolled passkey must be discoverable (the portal asks for a resident key), so
  // "Sign in with a passkey" finds it with an empty allow list.
  it('signs in passwordless with the passkey as enrolled (discoverable credential)', { timeout: TEST_TIMEOUT }, async (t) => {
    if (!needs(t, 'passkey', 'signedOut')) return;
    const [cred] = await credentials();
    assert.ok(cred, 'the virtual authenticator holds the enrolled passkey');
    assert.equal(cred.isResidentCredential, true, 'the enrolled passkey is discoverable');
    await passwordlessSignIn('licences-passwordless');
    done.passwordless = true;
  });

  it('signs out after the passwordless sign-in', { timeout: TEST_TIMEOUT }, async (t) => {
    if (!needs(t, 'passwordless')) return;
    await page.goto(url(`${PORTAL}/account`));
    await page.click('nav.top form[action$="/logout"] button');
    await page.locator('#message').waitFor();
    await page.goto(url('/licences'));
    assert.equal(pathOf(page), `${PORTAL}/login`);
  });
});

describe("John's blocked device", { timeout: 2 * TEST_TIMEOUT }, () => {
  it('shows the failing checks, and the re-check lets him in once fixed', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext();
    try {
      const page = await context.newPage();
      await page.goto(url('/licences'));
      await signInWithPasswordAndTotp(page, 'john');
      assert.equal(await page.locator('#remote-user').textContent(), 'john');

      // Pretend the laptop lost its disk encryption.
      await page.goto(url(`${PORTAL}/account#demo`));
      await page.check('input[name=profile][value=noncompliant]');
      await shot(page, 'account-device-profile');
      await Promise.all([page.waitForNavigation(), page.click('#demo-device-save')]);

      const resp = await page.goto(url('/licences'));
      assert.equal(resp.status(), 403);
      await page.locator('#blocked-reason').waitFor();
      assert.match(await page.locator('#blocked-reason').textContent(), /does not meet the security requirements/);
      const disk = page.locator('#failing-checks li[data-check="disk_encryption"]');
      assert.match(await disk.textContent(), /Disk encryption is off/);
      assert.equal(await page.locator('#failing-checks li[data-check="os_version"]').count(), 1);
      assert.equal(await page.locator('#recheck').count(), 1);
      assert.match(await page.locator('#blocked-app').textContent(), /Licence Console/);
      assert.match(await page.locator('#blocked-reference').textContent(), /Blocked at .* reference managed-noncompliant-deny/);
      assert.equal(await page.locator('#help-email').getAttribute('href'), 'mailto:it-help@example.com');
      await shot(page, 'blocked-device');

      // Still blocked: re-check without fixing anything.
      await Promise.all([page.waitForNavigation(), page.click('#recheck')]);
      await page.locator('#failing-checks li[data-check="disk_encryption"]').waitFor();

      // Fix it (in another tab, as a user would), then re-check on the blocked page.
      const settings = await context.newPage();
      await settings.goto(url(`${PORTAL}/account#demo`));
      await settings.check('input[name=profile][value=healthy]');
      await Promise.all([settings.waitForNavigation(), settings.click('#demo-device-save')]);
      await settings.close();

      await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.click('#recheck')]);
      assert.equal(await page.locator('#remote-user').textContent(), 'john');
      await shot(page, 'licences-after-recheck');

      // A refusal by group: re-checking the device would change nothing; it says who to ask.
      const admin = await page.goto(url('/admin'));
      assert.equal(admin.status(), 403);
      assert.match(await page.locator('#blocked-reason').textContent(), /licence administrators/);
      assert.equal(await page.locator('#recheck').count(), 0, 'no device re-check for a group refusal');
      assert.match(await page.locator('#who-to-ask').textContent(), /If you need access, ask the demo help desk/);
      await shot(page, 'blocked-group');
    } finally {
      await context.close();
    }
  });
});
