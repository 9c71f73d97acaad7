// docs/getting-started.md, followed to the end in a browser (issue 25): the guide's files
// and commands (tests/getting_started.rs checks them without a browser), its certificate
// made for the test, stepgate behind Debian's nginx and then behind Traefik with the guide's
// own proxy files, and, in Chromium at https://auth.example.com and https://app.example.com
// (resolved to the proxy's port; only this certificate's key is trusted): Alice follows her
// invitation link, chooses a password, adds a virtual passkey, signs in with it, reaches the
// app and its admin area; Bob, invited as staff, reaches the app but not the admin area.
//
// Needs nginx, Traefik and openssl: skipped without them, except when CI or
// STEPGATE_REQUIRE_NGINX / STEPGATE_REQUIRE_TRAEFIK is set (.ci/run sets them), where a
// missing tool fails the test.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { addVirtualAuthenticator, launchChromium } from '../lib/browser.mjs';
import { followGuide, makeCertificate, removeRoot, startDeployment, tools } from '../lib/guide.mjs';
import { PORTAL, newContext, pathOf, webauthnClick } from '../lib/portal.mjs';

const TEST_TIMEOUT = 120_000;
const found = tools();
const required = process.env.CI || process.env.STEPGATE_REQUIRE_NGINX || process.env.STEPGATE_REQUIRE_TRAEFIK;
const skip = found.missing.length > 0 && !required ? `missing ${found.missing.join(', ')} (CI=1 makes this a failure)` : false;

/** Follows an invitation in a fresh browser context: password, passkey, sign-in. Returns the page. */
async function acceptInvitation(browser, link, who) {
  const context = await newContext(browser);
  const page = await context.newPage();
  const authenticator = await addVirtualAuthenticator(context, page);
  const resp = await page.goto(link);
  assert.equal(resp.status(), 200, `${who}'s invitation page`);
  assert.equal(new URL(page.url()).origin, 'https://auth.example.com');
  assert.match(await page.locator('h1').textContent(), /Welcome/);
  const password = who === 'alice' ? 'copper-kettle-morning-drizzle' : 'violet-harbour-seven-lanterns';
  await page.fill('#new-password', password);
  await page.fill('#confirm-password', password);
  await Promise.all([page.waitForURL(`**${PORTAL}/welcome**`), page.click('#set-password-button')]);
  assert.match(await page.locator('h1').textContent(), /Add a second way to sign in/);
  await page.fill('#passkey-label', `${who}'s laptop`);
  await webauthnClick(page, '#add-passkey-button', (u) => u.pathname === `${PORTAL}/step-up`);
  const creds = await authenticator.cdp.send('WebAuthn.getCredentials', { authenticatorId: authenticator.authenticatorId });
  assert.equal(creds.credentials.length, 1, 'the passkey is on the authenticator');
  assert.equal(creds.credentials[0].rpId, 'example.com', 'the passkey is bound to the guide\'s rp_id');
  await webauthnClick(page, '#webauthn-step-up', (u) => u.pathname === `${PORTAL}/account`);
  return { context, page };
}

for (const proxy of ['nginx', 'traefik']) {
  describe(`the getting-started guide behind ${proxy}`, { skip, timeout: 3 * TEST_TIMEOUT }, () => {
    let guide;
    let deployment;
    let browser;

    before(async () => {
      if (found.missing.length > 0) throw new Error(`missing ${found.missing.join(', ')}`);
      guide = followGuide();
      const { cert, spki } = makeCertificate(guide.root);
      deployment = await startDeployment(guide, proxy, found, cert);
      const p = deployment.https;
      browser = await launchChromium([
        // The guide's host names, at the proxy's port (the URLs keep https's 443).
        `--host-resolver-rules=MAP auth.example.com 127.0.0.1:${p}, MAP app.example.com 127.0.0.1:${p}, EXCLUDE localhost`,
        // Trust this test's certificate (by its key) and no other: the pages are a secure
        // context, as passkeys need.
        `--ignore-certificate-errors-spki-list=${spki}`,
      ]);
    });

    after(async () => {
      await browser?.close();
      await deployment?.stop();
      if (guide) removeRoot(guide);
    });

    it('an invited admin sets a password, adds a passkey, signs in with it and reaches the app and its admin area', { timeout: TEST_TIMEOUT }, async () => {
      const { context, page } = await acceptInvitation(browser, guide.invitations.alice, 'alice');
      try {
        assert.match(await page.locator('#factors tr[data-kind="webauthn"]').textContent(), /alice's laptop/);
        const app = await page.goto('https://app.example.com/');
        assert.equal(app.status(), 200);
        assert.equal(pathOf(page), '/');
        assert.equal(await page.locator('#remote-user').textContent(), 'alice');
        assert.equal(await page.locator('#remote-groups').textContent(), 'admins');
        assert.equal(await page.locator('#remote-aal').textContent(), '2');
        // The admin area wants a passkey used in the last 15 minutes: she just used hers.
        const admin = await page.goto('https://app.example.com/admin/users');
        assert.equal(admin.status(), 200);
        assert.equal(await page.locator('#path').textContent(), '/admin/users');
        assert.equal(await page.locator('#remote-user').textContent(), 'alice');
        // The invitation worked once.
        const again = await page.goto(guide.invitations.alice);
        assert.equal(again.status(), 410);
      } finally {
        await context.close();
      }
    });

    it('a browser that is not signed in is sent to the sign-in page; an invited staff member reaches the app but not the admin area', { timeout: TEST_TIMEOUT }, async () => {
      const anonymous = await newContext(browser);
      try {
        const page = await anonymous.newPage();
        await page.goto('https://app.example.com/admin/users');
        assert.equal(new URL(page.url()).origin, 'https://auth.example.com');
        assert.equal(pathOf(page), `${PORTAL}/login`);
      } finally {
        await anonymous.close();
      }
      const { context, page } = await acceptInvitation(browser, guide.invitations.bob, 'bob');
      try {
        await page.goto('https://app.example.com/');
        assert.equal(await page.locator('#remote-user').textContent(), 'bob');
        const admin = await page.goto('https://app.example.com/admin/users');
        assert.equal(new URL(page.url()).origin, 'https://auth.example.com');
        assert.equal(admin.status(), 403);
        assert.match(await page.locator('main').textContent(), /The admin area is for administrators\./);
      } finally {
        await context.close();
      }
    });
  });
}
