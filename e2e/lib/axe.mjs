// Accessibility checks with axe-core (npm, vendored through package-lock.json): every page
// the suite saves is checked against the WCAG 2.0/2.1/2.2 A and AA rules in light mode, in
// dark mode and on a 390×844 phone viewport, and saved as a screenshot in each.
//
// axe is evaluated through the DevTools protocol (page.evaluate), which the portal's CSP
// (no inline script) does not apply to: the page under test is the page users get.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { ARTIFACTS_DIR } from './demo.mjs';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

/** The rule sets the suite fails on. */
export const WCAG_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22a', 'wcag22aa'];

export const PHONE = { width: 390, height: 844 };

/** Runs axe on the page as it is; resolves to the violations (empty when clean). */
export async function axeViolations(page) {
  const loaded = await page.evaluate(() => typeof window.axe !== 'undefined');
  if (!loaded) await page.evaluate(AXE_SOURCE);
  return page.evaluate(async (tags) => {
    const r = await window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')} — ${n.failureSummary.replace(/\s+/g, ' ')}`),
    }));
  }, WCAG_TAGS);
}

function describe(violations) {
  return violations
    .map((v) => `  [${v.impact}] ${v.id}: ${v.help}\n${v.nodes.map((n) => `      ${n}`).join('\n')}`)
    .join('\n');
}

/**
 * Saves `page` as `<prefix>NN-<name>.png` (light), `…-dark.png` and `…-phone.png`, runs axe
 * in each, and checks that the phone view does not scroll sideways. Throws, listing every
 * violation, when any is found. Leaves the page as it found it (light, same viewport).
 */
export async function checkPage(page, file) {
  const problems = [];
  const viewport = page.viewportSize();
  const variants = [
    ['light', async () => {}],
    ['dark', async () => page.emulateMedia({ colorScheme: 'dark' })],
    ['phone', async () => {
      await page.emulateMedia({ colorScheme: 'light' });
      await page.setViewportSize(PHONE);
    }],
  ];
  try {
    for (const [variant, apply] of variants) {
      await apply();
      const path = join(ARTIFACTS_DIR, variant === 'light' ? `${file}.png` : `${file}-${variant}.png`);
      await page.screenshot({ path, fullPage: true });
      const v = await axeViolations(page);
      if (v.length) problems.push(`${variant}:\n${describe(v)}`);
      if (variant === 'phone') {
        const wide = await page.evaluate(() => document.documentElement.scrollWidth);
        if (wide > PHONE.width) problems.push(`phone: the page is ${wide} px wide at ${PHONE.width} px (scrolls sideways)`);
      }
    }
  } finally {
    await page.emulateMedia({ colorScheme: 'light' });
    if (viewport) await page.setViewportSize(viewport);
  }
  if (problems.length) {
    throw new Error(`accessibility check of ${file} (${page.url()}) failed:\n${problems.join('\n')}`);
  }
}
