// Launches Debian's Chromium through playwright-core (no browser downloads).
import { chromium } from 'playwright-core';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export function launchChromium(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...extraArgs,
    ],
  });
}

/**
 * Gives `page` a virtual WebAuthn authenticator (DevTools Protocol WebAuthn domain) with
 * user verification that answers every prompt at once. Returns its id and the CDP session
 * (keep the page: the authenticator lives as long as it does).
 *
 * The default is a synced passkey: a CTAP2 platform authenticator with resident keys whose
 * credentials are eligible for backup (as a phone's or password manager's are), so it never
 * counts as hardware-bound. `{ securityKey: true }` gives a USB security key instead: its
 * credentials are bound to it, and its attestation is the one the demo's configuration
 * trusts (demo only), so it reaches AAL3.
 */
export async function addVirtualAuthenticator(context, page, { securityKey = false } = {}) {
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: securityKey ? 'usb' : 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
      defaultBackupEligibility: !securityKey,
      defaultBackupState: !securityKey,
    },
  });
  return { cdp, authenticatorId };
}
