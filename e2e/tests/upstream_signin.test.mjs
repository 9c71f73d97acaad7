// Signing in through an upstream identity provider in a real browser (issue 20): `stepgate
// demo --upstream-oidc` against a real OpenID Provider — the certified npm `oidc-provider`
// (e2e/oidc-op/op.js, as crates/server/tests/upstream_oidc/ starts it). Alice presses
// "Sign in with Corp SSO" on the demo's sign-in page, the provider signs her in (password
// and MFA, which the demo trusts for AAL2) and she lands in the Licence Console, created
// just in time. Then the demo's sensitive route — revoking a licence, which asks for a
// passkey or security key — steps her up: she adds a passkey in stepgate and confirms the
// revocation with it. axe checks every page saved (e2e/artifacts/upstream-signin-*.png).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { addVirtualAuthenticator, launchChromium } from '../lib/browser.mjs';
import { E2E_DIR, freePort, startDemo } from '../lib/demo.mjs';
import { PORTAL, newContext, pathOf, screenshots, webauthnClick } from '../lib/portal.mjs';

const TEST_TIMEOUT = 120_000;

let demo;
let op;
let issuer;
let browser;
const shot = screenshots('upstream-signin-');

/** Starts e2e/oidc-op/op.js on `port` for the demo's client; resolves when it listens. */
function startProvider(port, portalUrl) {
  const child = spawn('node', [join(E2E_DIR, 'oidc-op', 'op.js')], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: {
      ...process.env,
      OP_PORT: String(port),
      OP_REDIRECT_URI: `${portalUrl}/login/upstream/upstream/callback`,
      OP_POST_LOGOUT_URI: `${portalUrl}/login/upstream/upstream/signed-out`,
    },
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('the OpenID Provider did not start')), 30_000);
    child.on('exit', (code) => fail(new Error(`the OpenID Provider exited (${code})`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.startsWith('op listening on ')) {
        clearTimeout(timer);
        ok({
          stop: () => {
            process.off('exit', killOnExit);
            child.kill('SIGTERM');
          },
        });
      }
    });
  });
}

/** Who the provider signs in next, with what `amr`, how many seconds ago. */
async function nextAtProvider(sub, amr, authAge = 0) {
  const r = await fetch(`${issuer}/test/next`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sub, amr, auth_age: authAge }),
  });
  assert.equal(r.status, 204);
}

before(async () => {
  const port = await freePort();
  issuer = `http://127.0.0.1:${port}`;
  demo = await startDemo({
    args: ['--upstream-oidc', issuer, '--upstream-client-id', 'stepgate', '--upstream-name', 'Corp SSO'],
    env: { STEPGATE_DEMO_UPSTREAM_CLIENT_SECRET: 'stepgate-secret' },
  });
  op = await startProvider(port, `${demo.baseUrl}${PORTAL}`);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  op?.stop();
  await demo?.stop();
});

describe('Sign in with Corp SSO, then a step-up on the Licence Console', { timeout: TEST_TIMEOUT }, () => {
  it('signs in at the provider, lands in the app, and steps up with a passkey to revoke', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await addVirtualAuthenticator(context, page);
      const url = (path) => `${demo.baseUrl}${path}`;

      // The sign-in page offers the provider beside the password form.
      await page.goto(url('/licences'));
      await page.waitForURL(`**${PORTAL}/login**`);
      const button = page.getByRole('link', { name: 'Sign in with Corp SSO' });
      await button.waitFor();
      await shot(page, 'sign-in-page');

      // Password and MFA at the provider just now: the demo trusts both for AAL2, so its
      // sign-in policy asks for nothing more, and Alice is created from the provider's claims.
      await nextAtProvider('alice-sub', ['pwd', 'mfa']);
      await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), button.click()]);
      await page.locator('#remote-user', { hasText: 'alice' }).waitFor();
      await shot(page, 'licences-signed-in');

      // Revoking is the demo's sensitive route: a passkey or security key, which the provider
      // did not prove. The step-up page says so and leads to adding one in stepgate.
      await Promise.all([
        page.waitForURL(`**${PORTAL}/step-up**`),
        page.locator('#licence-2 form[action$="/revoke"] button').click(),
      ]);
      await page.locator('#step-up-reason').waitFor();
      assert.match(await page.locator('#step-up-reason').textContent(), /passkey|security key/i);
      await shot(page, 'step-up-no-passkey');
      await Promise.all([page.waitForURL(`**${PORTAL}/account**`), page.click('#add-factor')]);
      await page.fill('#passkey-label', 'Alice passkey');
      await webauthnClick(
        page,
        '#add-passkey-button',
        (u) => u.pathname === `${PORTAL}/account` && u.searchParams.get('done') === 'webauthn',
      );
      await page.locator('#factors tr[data-kind="webauthn"]', { hasText: 'Alice passkey' }).waitFor();
      await shot(page, 'account-passkey-added');

      // Back to the step-up: the passkey passes it, and the revocation goes through.
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('#continue-to-app')]);
      await page.locator('#webauthn-step-up').waitFor();
      await shot(page, 'step-up-passkey');
      await webauthnClick(page, '#webauthn-step-up', (u) => u.pathname === `${PORTAL}/confirmed`);
      await Promise.all([page.waitForURL((u) => u.pathname === '/licences'), page.click('#continue')]);
      await Promise.all([
        page.waitForURL((u) => u.pathname === '/licences'),
        page.locator('#licence-2 form[action$="/revoke"] button').click(),
      ]);
      assert.equal((await page.locator('#licence-2 .status').textContent()).trim(), 'revoked');
      assert.equal(pathOf(page), '/licences');
      await page.locator('#remote-user', { hasText: 'alice' }).waitFor();
      await shot(page, 'licences-revoked');
    } finally {
      await context.close();
    }
  });
});
