// RFC 6238 TOTP (HMAC-SHA1, 30-second steps, 6 digits) with node's crypto, computed
// independently of the server's implementation.
import { createHmac } from 'node:crypto';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** Decodes RFC 4648 base32 (padding and spaces ignored, case-insensitive). */
export function base32Decode(s) {
  const clean = s.toUpperCase().replace(/[\s=]/g, '');
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of clean) {
    const idx = ALPHABET.indexOf(ch);
    if (idx < 0) throw new Error(`not base32: ${JSON.stringify(ch)}`);
    value = (value << 5) | idx;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** The 30-second step number of a time in milliseconds since the epoch. */
export const stepAt = (ms = Date.now()) => Math.floor(ms / 1000 / 30);

/** The 6-digit code of `seedBase32` for TOTP step `step` (RFC 4226 dynamic truncation). */
export function totpForStep(seedBase32, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', base32Decode(seedBase32)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const bin = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(bin).padStart(6, '0');
}

/**
 * Hands out codes the server will accept: it accepts each step once, and only steps newer
 * than the last one used (window ±1 step). Uses the current step, else the next one, else
 * waits for the clock to move on.
 */
export class TotpClock {
  constructor(seedBase32) {
    this.seed = seedBase32;
    this.lastStep = -1;
  }

  async nextCode() {
    for (;;) {
      const now = stepAt();
      const step = [now, now + 1].find((s) => s > this.lastStep);
      if (step !== undefined) {
        this.lastStep = step;
        return totpForStep(this.seed, step);
      }
      const msToNextStep = (now + 1) * 30_000 - Date.now() + 50;
      await new Promise((r) => setTimeout(r, msToNextStep));
    }
  }
}
