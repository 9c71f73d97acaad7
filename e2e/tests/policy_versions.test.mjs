// Policy versions in the admin console (issue 21, item 5), in Chromium against `stepgate
// serve` with `admin.policy_edits: store` (the demo runs without a configuration file, so
// it cannot keep versions): Jane, an administrator, checks a draft policy set (validated
// with the files and replayed against the day's decisions), is asked for her security key
// when she saves it, saves it as version 1 — her next request to the reports is refused —,
// saves the files' set as version 2, reads a version and a diff, and rolls back to version
// 1 with one click. Every page is checked with axe in light, dark and at 390×844
// (lib/axe.mjs). Screenshots: e2e/artifacts/policy-versions-NN-*.png.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { addVirtualAuthenticator, launchChromium } from '../lib/browser.mjs';
import { REPO_DIR } from '../lib/demo.mjs';
import { PORTAL, newContext, pathOf, screenshots, webauthnClick } from '../lib/portal.mjs';
import { otpauthSecret, startEchoApp, startServe } from '../lib/serve.mjs';
import { TotpClock } from '../lib/totp.mjs';

const TEST_TIMEOUT = 180_000;
const PASSWORD = 'blue-harbour-lantern';
const shot = screenshots('policy-versions-');
let app;
let server;
let browser;
let totp;

const OPEN = `policies:
  - name: sign-in
    priority: 100
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: team-app
    priority: 200
    targets: { apps: [team] }
    outcome: { step_up: { min_aal: 2 } }
`;
const CLOSED = `${OPEN}  - name: reports-closed
    priority: 10
    targets: { routes: [{ tags: [reports] }] }
    outcome: { deny: { message: closed for audit } }
`;

before(async () => {
  app = await startEchoApp('Team App');
  server = await startServe('policy-versions-stepgate', ({ port, baseUrl, dataDir }) => `
server: { listen: "127.0.0.1:${port}", public_url: "${baseUrl}", data_dir: "${dataDir}" }
sessions:
  cookie: { secure: false }
admin:
  group: admins
  policy_edits: store
log:
  decisions: { allowed_one_in: 1 }
factors:
  webauthn:
    rp_id: localhost
    rp_origin: "${baseUrl}"
    rp_name: stepgate e2e
    # Chromium's virtual authenticator as a hardware key: test only (examples/demo.yaml says why).
    attestation_cas:
      - pem_file: "${join(REPO_DIR, 'examples', 'demo-attestation', 'chromium-virtual-authenticator.pem')}"
        aaguids: ["01020304-0506-0708-0102-030405060708"]
apps:
  - id: team
    name: Team App
    hosts: [localhost]
    upstream: "http://127.0.0.1:${app.port}"
    routes:
      - { name: reports, path: /reports, tags: [reports] }
default_outcome: deny
${OPEN}`, async (cli) => {
    await cli(['user', 'add', 'jane', '--group', 'admins', '--password-stdin'], `${PASSWORD}\n`);
    totp = new TotpClock(otpauthSecret(await cli(['user', 'enroll-totp', 'jane', '--no-qr'])));
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await app?.close();
});

const url = (path) => `${server.baseUrl}${path}`;
const versions = (query = '') => url(`${PORTAL}/admin/policies/versions${query}`);

/** Opens `path`, signs Jane in with password + TOTP; ends where `path` leads. */
async function signIn(page, path) {
  await page.goto(url(path));
  assert.equal(pathOf(page), `${PORTAL}/login`);
  await page.fill('#username', 'jane');
  await page.fill('#password', PASSWORD);
  await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('form[action$="/login"] button[type=submit]')]);
  await page.fill('#totp-code', await totp.nextCode());
  await Promise.all([page.waitForURL((u) => u.pathname !== `${PORTAL}/step-up`), page.click('form[action$="/step-up/totp"] button[type=submit]')]);
}

describe('policy versions in the admin console', { timeout: TEST_TIMEOUT }, () => {
  it('checks, saves with a security key, diffs and rolls back a policy set', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await signIn(page, '/reports');
      assert.equal(await page.locator('#remote-user').textContent(), 'jane', 'the files\' policies let her in');

      // The page, reached from the console's navigation; AAL2 is told to step up first.
      await page.goto(url(`${PORTAL}/admin/policies`));
      await Promise.all([page.waitForURL('**/admin/policies/versions'), page.click('nav.admin >> text=Versions')]);
      assert.match(await page.locator('#versions').textContent(), /No version saved yet/);
      await page.locator('#step-up-needed').waitFor();
      await shot(page, 'empty');

      // A draft with an error: positioned, no save button.
      await page.fill('#draft', CLOSED.replace('tags: [reports]', 'tags: [reports]\n    bogus: 1'));
      await Promise.all([page.waitForURL('**/versions/check'), page.click('#version-draft button[type=submit]:not(#save-version)')]);
      assert.match(await page.locator('#draft-errors').textContent(), /line \d+, column \d+/);
      assert.equal(await page.locator('#save-version').count(), 0);
      await shot(page, 'draft-error');

      // The closing draft: loads, replayed against the day (Jane's visit would be refused).
      await page.fill('#draft', CLOSED);
      await page.fill('#note', 'close the reports for the audit');
      await Promise.all([page.waitForURL('**/versions/check'), page.click('#version-draft button[type=submit]:not(#save-version)')]);
      assert.match(await page.locator('#replay-summary').textContent(), /^[1-9]\d* of \d+ decisions/);
      assert.match(await page.locator('#replay').textContent(), /reports-closed/);
      await shot(page, 'draft-replayed');

      // Saving asks for a security key: registered, used, then saved.
      await Promise.all([page.waitForURL('**/versions/save'), page.click('#save-version')]);
      assert.match(await page.locator('#versions-error').textContent(), /security key/);
      assert.equal(await page.inputValue('#draft'), CLOSED, 'the draft is kept');
      await addVirtualAuthenticator(context, page, { securityKey: true });
      await page.goto(url(`${PORTAL}/account`));
      await page.fill('#passkey-label', 'E2E admin key');
      await webauthnClick(page, '#add-security-key-button', (u) => u.pathname === `${PORTAL}/account` && u.searchParams.get('done') === 'webauthn');
      await page.goto(versions());
      const stepUp = await page.locator('#step-up-needed a').getAttribute('href');
      await page.goto(stepUp);
      await webauthnClick(page, '#webauthn-step-up', (u) => u.pathname === `${PORTAL}/admin/policies/versions`);
      assert.equal(await page.locator('#step-up-needed').count(), 0, 'AAL3 now');
      await page.fill('#draft', CLOSED);
      await page.fill('#note', 'close the reports for the audit');
      await Promise.all([page.waitForURL('**/versions/check'), page.click('#version-draft button[type=submit]:not(#save-version)')]);
      await Promise.all([page.waitForURL(/done=/), page.click('#save-version')]);
      assert.match(await page.locator('p.notice[role=status]').textContent(), /Saved version 1/);
      assert.match(await page.locator('#versions tr[data-version="1"]').textContent(), /in force[\s\S]*jane[\s\S]*close the reports/);
      await shot(page, 'saved');
      const refused = await page.goto(url('/reports'));
      assert.equal(refused.status(), 403, 'version 1 decides her next request');

      // Version 2: the files' set again. Then version 1's text and the diff against 2.
      await page.goto(versions());
      await page.fill('#draft', OPEN);
      await Promise.all([page.waitForURL('**/versions/check'), page.click('#version-draft button[type=submit]:not(#save-version)')]);
      await Promise.all([page.waitForURL(/done=/), page.click('#save-version')]);
      assert.match(await page.locator('p.notice[role=status]').textContent(), /Saved version 2/);
      await page.click('a[aria-label="Show version 1"]');
      assert.match(await page.locator('#version-text pre').textContent(), /reports-closed/);
      await shot(page, 'version');
      await page.click('a[aria-label="Against in force: version 1"]');
      assert.match(await page.locator('#diff-heading').textContent(), /From version 1 to version 2: 0 line\(s\) added, 4 removed/);
      assert.equal(await page.locator('#diff del').count(), 4);
      await shot(page, 'diff');

      // One click back to version 1: saved as version 3, in force.
      await Promise.all([page.waitForURL(/done=/), page.click('button[aria-label="Roll back to version 1"]')]);
      assert.match(await page.locator('p.notice[role=status]').textContent(), /Rolled back to version 1: saved as version 3/);
      assert.match(await page.locator('#versions tr[data-version="3"]').textContent(), /in force[\s\S]*rollback of 1/);
      await shot(page, 'rolled-back');
      assert.equal((await page.goto(url('/reports'))).status(), 403);

      // Every change in the audit log under Jane's name.
      await page.goto(url(`${PORTAL}/admin/audit?kind=policy.saved`));
      assert.equal(await page.locator('#audit tbody tr', { hasText: 'admin:jane' }).count(), 3);
    } finally {
      await context.close();
    }
  });
});
