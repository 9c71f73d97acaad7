// The gateway's own error pages in Chromium (issue 24, item 7): an app that refuses
// connections (502), one that hangs past its 1 s timeout (504) and a store that breaks under
// the running server (503) each get a page in the portal's layout — its title, a way on
// ("Try again" to the same address, or the account page) and the request id the response
// carries — checked with axe in light, dark and at 390×844. Against `stepgate serve` with
// these apps (the demo has none down); the Team App is a small node server on loopback, the
// hanging one a socket that never answers. Screenshots: e2e/artifacts/gateway-NN-*.png.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { launchChromium } from '../lib/browser.mjs';
import { PORTAL, newContext, pathOf, screenshots } from '../lib/portal.mjs';
import { otpauthSecret, sqlite, startEchoApp, startHangingApp, startServe } from '../lib/serve.mjs';
import { TotpClock } from '../lib/totp.mjs';

const TEST_TIMEOUT = 90_000;
const shot = screenshots('gateway-');
let app;
let hanging;
let server;
let browser;
let totp;

before(async () => {
  app = await startEchoApp('Team App');
  hanging = await startHangingApp();
  server = await startServe('gateway-stepgate', ({ port, baseUrl, dataDir }) => `
server: { listen: "127.0.0.1:${port}", public_url: "${baseUrl}", data_dir: "${dataDir}" }
sessions:
  cookie: { secure: false }
  hand_off: true     # the session reaches down.localhost and slow.localhost by the hand-off
  cache_ttl: 0s      # no per-node cache: a broken store is seen at once
portal:
  help: { text: the e2e help desk, email: help@example.com }
apps:
  - { id: team, name: Team App, hosts: [localhost], upstream: "http://127.0.0.1:${app.port}" }
  - { id: reports, name: Reports, hosts: [down.localhost], upstream: "http://127.0.0.1:1" }
  - { id: slow, name: Slow App, hosts: [slow.localhost], upstream: "http://127.0.0.1:${hanging.port}" }
gateway:
  apps:
    slow: { timeout: 1s }
default_outcome: deny
policies:
  - name: sign-in
    priority: 100
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: the-apps
    priority: 200
    targets: { apps: [team, reports, slow] }
    outcome: { step_up: { min_aal: 2 } }
`, async (cli) => {
    await cli(['user', 'add', 'jane', '--password-stdin'], 'blue-harbour-lantern\n');
    totp = new TotpClock(otpauthSecret(await cli(['user', 'enroll-totp', 'jane', '--no-qr'])));
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await hanging?.close();
  await app?.close();
});

const at = (host, path) => `http://${host}:${server.port}${path}`;

/** Runs SQL on the server's SQLite store from another process, as in an outage. */
const sql = (statement) => sqlite(server.dataDir, statement);

/** The page's title, message, way on, second link and reference, and the response's request id. */
async function errorPage(page, response, status, title) {
  assert.equal(response.status(), status, `${page.url()} answered ${response.status()}`);
  assert.equal(await page.locator('h1').textContent(), title);
  assert.match(await page.title(), new RegExp(title));
  const requestId = (await response.allHeaders())['x-request-id'];
  assert.ok(requestId, 'the response carries a request id');
  assert.equal(await page.locator('#request-id').textContent(), requestId, 'the page shows the same request id');
  // The portal's layout: its stylesheet, its header and its foot, no leak of internals.
  assert.equal(await page.locator('link[rel=stylesheet][href$="/static/style.css"]').count(), 1);
  const text = await page.locator('body').textContent();
  for (const leak of ['127.0.0.1', 'refused', 'hyper', 'hot_sessions', 'sqlite']) {
    assert.ok(!text.toLowerCase().includes(leak), `${leak} on the page: ${text}`);
  }
  return {
    continueHref: await page.locator('#continue').getAttribute('href'),
    continueText: (await page.locator('#continue').textContent()).trim(),
    also: (await page.locator('#also').count()) ? await page.locator('#also').getAttribute('href') : null,
  };
}

describe("the gateway's own error pages", { timeout: TEST_TIMEOUT }, () => {
  it('502, 504 and 503 are portal pages with a way on and the request id', { timeout: TEST_TIMEOUT }, async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await page.goto(at('localhost', '/reports'));
      await page.fill('#username', 'jane');
      await page.fill('#password', 'blue-harbour-lantern');
      await Promise.all([page.waitForURL(`**${PORTAL}/step-up**`), page.click('form[action$="/login"] button[type=submit]')]);
      await page.fill('#totp-code', await totp.nextCode());
      await Promise.all([page.waitForURL((u) => u.pathname === '/reports'), page.click('form[action$="/step-up/totp"] button[type=submit]')]);
      assert.equal(await page.locator('#remote-user').textContent(), 'jane');

      // 502: the app refuses connections. "Try again" repeats the same address; the
      // account page is beside it.
      let r = await page.goto(at('down.localhost', '/reports?week=3'));
      assert.equal(new URL(page.url()).host, `down.localhost:${server.port}`);
      let ways = await errorPage(page, r, 502, 'The application is not answering');
      assert.deepEqual([ways.continueHref, ways.continueText], ['/reports?week=3', 'Try again']);
      assert.equal(ways.also, `${server.baseUrl}${PORTAL}/account`);
      await shot(page, 'bad-gateway');
      // The way back works without the browser's Back button.
      await Promise.all([page.waitForURL(`**${PORTAL}/account`), page.click('#also')]);
      assert.match(await page.locator('h1').textContent(), /Security settings/);

      // 504: the app takes longer than its 1 s timeout.
      const started = Date.now();
      r = await page.goto(at('slow.localhost', '/slow'));
      ways = await errorPage(page, r, 504, 'The application took too long');
      assert.ok(Date.now() - started < 10_000, 'the timeout, not the browser, ended the wait');
      assert.deepEqual([ways.continueHref, ways.continueText], ['/slow', 'Try again']);
      await shot(page, 'gateway-timeout');

      // 503: the store breaks under the running server (another process renames the
      // sessions' table): nothing is let through, and "Try again" works once it is back.
      r = await page.goto(at('localhost', '/reports'));
      assert.equal(r.status(), 200);
      sql('ALTER TABLE hot_sessions RENAME TO hot_sessions_gone');
      try {
        r = await page.goto(at('localhost', '/reports?after=outage'));
        ways = await errorPage(page, r, 503, 'Try again in a moment');
        assert.equal((await r.allHeaders())['retry-after'], '5');
        assert.equal(ways.continueHref, at('localhost', '/reports?after=outage'));
        await shot(page, 'unavailable');
      } finally {
        sql('ALTER TABLE hot_sessions_gone RENAME TO hot_sessions');
      }
      await Promise.all([page.waitForURL((u) => u.pathname === '/reports'), page.click('#continue')]);
      assert.equal(pathOf(page), '/reports');
      assert.equal(await page.locator('#remote-user').textContent(), 'jane', 'still signed in');
    } finally {
      await context.close();
    }
  });
});
