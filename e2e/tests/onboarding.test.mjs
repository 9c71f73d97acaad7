// Getting in the first time (issue 24, item 10): an administrator invites a user who has
// nothing yet (`stepgate user invite`, run against the demo's store); the user opens the
// single-use link in Chromium, chooses a password, adds a passkey on the virtual
// authenticator and finishes a sign-in whose policy needs MFA with it; the link works only
// once, and not after it expires. Screenshots: e2e/artifacts/onboarding-NN-*.png.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { addVirtualAuthenticator, launchChromium } from '../lib/browser.mjs';
import { startDemo, stepgateCli } from '../lib/demo.mjs';
import { PORTAL, newContext, pathOf, screenshots, webauthnClick } from '../lib/portal.mjs';

const TEST_TIMEOUT = 90_000;
const shot = screenshots('onboarding-');
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

/** Issues a link with the CLI and returns the URL it prints. */
async function issue(args) {
  const r = await stepgateCli(demo, ['user', ...args]);
  assert.equal(r.code, 0, `stepgate user ${args.join(' ')} failed:\n${r.stderr}`);
  const m = r.stdout.match(/^(http\S+\/(?:invite|reset)\/\S+)$/m);
  assert.ok(m, `no link in the output:\n${r.stdout}`);
  return { url: m[1], stdout: r.stdout };
}

/** The e-mails in the demo's outbox, decoded (quoted-printable soft breaks joined). */
function mails() {
  const dir = join(demo.dataDir, 'outbox', 'mail');
  let names = [];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.map((n) => readFileSync(join(dir, n), 'utf8').replace(/=\r?\n/g, '').replace(/=3D/g, '='));
}

describe('an invited user gets in the first time', { timeout: 4 * TEST_TIMEOUT }, () => {
  it('sets a password, adds a passkey and signs in where MFA is required; the link then no longer works', { timeout: TEST_TIMEOUT }, async () => {
    const { url: link, stdout } = await issue(['invite', 'alice', '--email', 'alice@example.com', '--name', 'Alice Martin']);
    assert.match(stdout, /created user alice/);
    assert.match(stdout, /e-mailed to a\*\*\*@example\.com/);
    const mail = mails().find((m) => m.includes('To: alice@example.com'));
    assert.ok(mail, 'the invitation was e-mailed (the demo writes e-mails to its outbox)');
    assert.ok(mail.includes(link), 'the e-mail carries the same link');

    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      const authenticator = await addVirtualAuthenticator(context, page);
      // Opening the link (as a mail scanner would) does not use it up.
      const probe = await fetch(link);
      assert.equal(probe.status, 200);

      await page.goto(link);
      assert.match(await page.locator('h1').textContent(), /Welcome/);
      assert.match(await page.title(), /Welcome — choose a password/);
      await shot(page, 'invitation');

      // Two different passwords: refused, nothing used up.
      await page.fill('#new-password', 'amber-violin-orchard-42');
      await page.fill('#confirm-password', 'amber-violin-orchard-43');
      await Promise.all([page.waitForLoadState('load'), page.click('#set-password-button')]);
      await page.locator('#password-error').waitFor();
      assert.match(await page.locator('#password-error').textContent(), /not the same/);
      // A breached or too-short password: refused with the rule (NIST SP 800-63B).
      await page.fill('#new-password', 'short');
      await page.fill('#confirm-password', 'short');
      await page.locator('#new-password').evaluate((el) => el.removeAttribute('minlength'));
      await page.locator('#confirm-password').evaluate((el) => el.removeAttribute('minlength'));
      await Promise.all([page.waitForLoadState('load'), page.click('#set-password-button')]);
      assert.match(await page.locator('#password-error').textContent(), /Choose another password/);
      assert.equal(await page.locator('#new-password').getAttribute('aria-invalid'), 'true');
      await shot(page, 'invitation-weak-password');

      await page.fill('#new-password', 'amber-violin-orchard-42');
      await page.fill('#confirm-password', 'amber-violin-orchard-42');
      await Promise.all([page.waitForURL(`**${PORTAL}/welcome**`), page.click('#set-password-button')]);
      assert.match(await page.locator('h1').textContent(), /Add a second way to sign in/);
      assert.equal(await page.locator('#welcome-skip').count(), 0, 'MFA is required here: no skipping');
      await shot(page, 'welcome');

      // The app is not reachable yet: the sign-in still needs a second factor.
      const app = await fetch(`${demo.baseUrl}/licences`, {
        redirect: 'manual',
        headers: { cookie: (await context.cookies()).map((c) => `${c.name}=${c.value}`).join('; ') },
      });
      assert.notEqual(app.status, 200, 'a password alone does not reach the app');

      await page.fill('#passkey-label', 'Alice laptop');
      await webauthnClick(page, '#add-passkey-button', (u) => u.pathname === `${PORTAL}/step-up`);
      const creds = await authenticator.cdp.send('WebAuthn.getCredentials', { authenticatorId: authenticator.authenticatorId });
      assert.equal(creds.credentials.length, 1, 'the passkey is on the authenticator');
      assert.match(await page.locator('h1').textContent(), /One more step to sign in/);
      assert.equal(await page.locator('#webauthn-step-up').count(), 1, 'the new passkey is offered');
      await shot(page, 'sign-in-with-new-passkey');

      await webauthnClick(page, '#webauthn-step-up', (u) => u.pathname === `${PORTAL}/account`);
      assert.match(await page.locator('#factors tr[data-kind="webauthn"]').textContent(), /Alice laptop/);

      // The app whose sign-in needs MFA lets her in.
      await page.goto(`${demo.baseUrl}/licences`);
      assert.equal(pathOf(page), '/licences');
      assert.equal(await page.locator('#remote-user').textContent(), 'alice');
      assert.match(await page.locator('#identity').textContent(), /AAL 2/);

      // The link worked once.
      const again = await page.goto(link);
      assert.equal(again.status(), 410);
      assert.match(await page.locator('h1').textContent(), /expired/);
      await shot(page, 'invitation-used');
    } finally {
      await context.close();
    }
  });

  it('refuses an invitation once it has expired', { timeout: TEST_TIMEOUT }, async () => {
    const { url: link } = await issue(['invite', 'bob', '--valid-for', '1s', '--no-email']);
    await new Promise((r) => setTimeout(r, 1_500));
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      const resp = await page.goto(link);
      assert.equal(resp.status(), 410);
      assert.match(await page.locator('#message').textContent(), /expired or was already used/);
    } finally {
      await context.close();
    }
  });

  it('refuses a link that was never issued', { timeout: TEST_TIMEOUT }, async () => {
    const resp = await fetch(`${demo.baseUrl}${PORTAL}/invite/${'A'.repeat(43)}`);
    assert.equal(resp.status, 410);
  });
});
