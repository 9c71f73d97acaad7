// Enrolment at first sign-in (issue 24, item 10), walked in Chromium against `stepgate
// serve` with `enrolment.at_first_sign_in: { networks: [office] }`: a new hire who has only
// a password, signing in from the office network, is led from the password straight to
// adding a passkey (the CDP virtual authenticator), passes the sign-in's MFA with it and
// reaches an app whose sign-in needs MFA; from elsewhere the same password only leads to
// "ask your help desk". The office is told apart by the client address stepgate reads from
// X-Forwarded-For, which it trusts from loopback here (`server.trusted_proxies`), as behind
// a front proxy. Screenshots: e2e/artifacts/first-sign-in-NN-*.png.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { addVirtualAuthenticator, launchChromium } from '../lib/browser.mjs';
import { PORTAL, newContext, pathOf, screenshots, webauthnClick } from '../lib/portal.mjs';
import { startEchoApp, startServe, teamAppWithMfa } from '../lib/serve.mjs';

const TEST_TIMEOUT = 90_000;
const shot = screenshots('first-sign-in-');
const PASSWORD = 'a long new-hire passphrase 42';
let app;
let server;
let browser;

before(async () => {
  app = await startEchoApp('Team App');
  server = await startServe('first-sign-in-stepgate', ({ port, baseUrl, dataDir }) => `
server: { listen: "127.0.0.1:${port}", public_url: "${baseUrl}", data_dir: "${dataDir}", trusted_proxies: [127.0.0.1] }
sessions: { cookie: { secure: false } }
networks:
  office: [198.51.100.0/24]
enrolment:
  at_first_sign_in: { networks: [office] }
factors:
  webauthn: { rp_id: localhost, rp_origin: "${baseUrl}", rp_name: e2e }
portal:
  help: { text: the e2e help desk, email: help@example.com }
${teamAppWithMfa(app.port)}`, async (cli) => {
    await cli(['user', 'add', 'newbie', '--name', 'New Hire', '--password-stdin'], `${PASSWORD}\n`);
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await app?.close();
});

/** A browser whose requests reach stepgate as if through the front proxy from `ip`. */
const from = (ip) => newContext(browser, { extraHTTPHeaders: { 'x-forwarded-for': ip } });

/** Opens the app and types the new hire's password on the sign-in page it leads to. */
async function password(page) {
  await page.goto(`${server.baseUrl}/start?from=first-sign-in`);
  assert.equal(pathOf(page), `${PORTAL}/login`);
  await page.fill('#username', 'newbie');
  await page.fill('#password', PASSWORD);
  await Promise.all([page.waitForURL((u) => u.pathname !== `${PORTAL}/login`), page.click('form[action$="/login"] button[type=submit]')]);
}

describe('enrolment at first sign-in', { timeout: 2 * TEST_TIMEOUT }, () => {
  it('from elsewhere, a password alone leads to the help desk, not to enrolment', { timeout: TEST_TIMEOUT }, async () => {
    const context = await from('203.0.113.9');
    try {
      const page = await context.newPage();
      await password(page);
      assert.equal(pathOf(page), `${PORTAL}/step-up`);
      assert.match(await page.locator('#no-factor').textContent(), /the e2e help desk/);
      assert.equal(await page.locator('#add-passkey-button').count(), 0);
      await shot(page, 'elsewhere');
    } finally {
      await context.close();
    }
  });

  it('from the office, the new hire adds a passkey and reaches the app that needs MFA', { timeout: TEST_TIMEOUT }, async () => {
    const context = await from('198.51.100.7');
    try {
      const page = await context.newPage();
      const authenticator = await addVirtualAuthenticator(context, page);
      await password(page);
      assert.equal(pathOf(page), `${PORTAL}/welcome`);
      assert.match(await page.locator('main').textContent(), /Signing in needs more than your password/);
      assert.equal(await page.locator('#welcome-skip').count(), 0, 'no skipping an MFA sign-in');
      await shot(page, 'welcome');

      // The app is not reachable yet: the sign-in is still pending.
      const cookies = (await context.cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
      const early = await fetch(`${server.baseUrl}/start`, { redirect: 'manual', headers: { cookie: cookies, 'x-forwarded-for': '198.51.100.7' } });
      assert.notEqual(early.status, 200, 'a password alone does not reach the app');

      await page.fill('#passkey-label', 'New hire laptop');
      await webauthnClick(page, '#add-passkey-button', (u) => u.pathname === `${PORTAL}/step-up`);
      const creds = await authenticator.cdp.send('WebAuthn.getCredentials', { authenticatorId: authenticator.authenticatorId });
      assert.equal(creds.credentials.length, 1, 'the passkey is on the authenticator');
      assert.equal(await page.locator('#webauthn-step-up').count(), 1, 'the new passkey is offered');
      await shot(page, 'step-up-with-new-passkey');

      await webauthnClick(page, '#webauthn-step-up', (u) => !u.pathname.startsWith(PORTAL));
      assert.equal(pathOf(page), '/start', 'back where the sign-in began');
      assert.equal(await page.locator('#remote-user').textContent(), 'newbie');
      assert.equal(await page.locator('#remote-aal').textContent(), '2');
    } finally {
      await context.close();
    }
  });
});
