// What the browser tests share: the portal path, screenshots with accessibility checks, the
// WebAuthn button helper.
import { mkdirSync } from 'node:fs';

import { checkPage } from './axe.mjs';
import { ARTIFACTS_DIR } from './demo.mjs';

export const PORTAL = '/_stepgate';
export const pathOf = (page) => new URL(page.url()).pathname;

/**
 * A screenshot taker for one test file: `shot(page, name)` saves
 * `<prefix>NN-name.png` (and its dark and phone variants) in the order taken, and fails
 * on any WCAG 2.2 A/AA violation axe finds in any of them (see lib/axe.mjs).
 */
export function screenshots(prefix = '') {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  let n = 0;
  return async (page, name) => {
    n += 1;
    await checkPage(page, `${prefix}${String(n).padStart(2, '0')}-${name}`);
  };
}

/**
 * Clicks a WebAuthn button (the portal's webauthn.js runs the ceremony) and waits for the
 * page it redirects to; fails at once with the page's message if the ceremony fails.
 */
export async function webauthnClick(page, selector, arrived) {
  // A message left from an earlier attempt is not this attempt's failure.
  await page.evaluate(() => {
    const el = document.getElementById('webauthn-status');
    if (el) {
      el.className = 'muted';
      el.textContent = '';
    }
  });
  const navigated = page.waitForURL(arrived).then(() => null);
  const failed = page
    .locator('#webauthn-status.error')
    .waitFor()
    .then(async () => page.locator('#webauthn-status').textContent());
  await page.click(selector);
  const error = await Promise.race([navigated, failed]);
  navigated.catch(() => {});
  failed.catch(() => {});
  if (error !== null) throw new Error(`the WebAuthn ceremony of ${selector} failed: ${error}`);
}

/** A browser context at a desktop size with the suite's timeouts. */
export async function newContext(browser, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 }, ...options });
  context.setDefaultTimeout(20_000);
  context.setDefaultNavigationTimeout(20_000);
  return context;
}
