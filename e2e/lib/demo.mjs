// Starts `stepgate demo` on a free port with a throw-away data directory, and stops it.
import { execFile, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = resolve(E2E_DIR, '..');
export const ARTIFACTS_DIR = process.env.STEPGATE_E2E_ARTIFACTS || join(E2E_DIR, 'artifacts');

/** The stepgate binary: $STEPGATE_BIN, else the debug build in $CARGO_TARGET_DIR or target/. */
export function stepgateBinary() {
  if (process.env.STEPGATE_BIN) return process.env.STEPGATE_BIN;
  const target = process.env.CARGO_TARGET_DIR
    ? resolve(REPO_DIR, process.env.CARGO_TARGET_DIR)
    : join(REPO_DIR, 'target');
  return join(target, 'debug', 'stepgate');
}

/** A free TCP port on loopback. */
export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `stepgate <args>` (its console in artifacts/<logName>) and waits until GET
 * http://127.0.0.1:<port>/readyz answers 200. Returns stop(), which ends it (SIGTERM, then
 * SIGKILL after 5 s) and then runs `cleanup`; on failure it stops it and throws.
 */
export async function startStepgate(what, args, port, logName, { env = {}, cleanup = () => {}, timeoutMs = 30_000 } = {}) {
  const bin = stepgateBinary();
  if (!existsSync(bin)) {
    cleanup();
    throw new Error(`${bin} does not exist: run \`cargo build --bin stepgate\` first (or set STEPGATE_BIN)`);
  }
  const log = createWriteStream(join(ARTIFACTS_DIR, logName));
  const child = spawn(bin, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  // Never leave it running if the test process dies.
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);

  const stop = async () => {
    process.off('exit', killOnExit);
    if (exited === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await gone;
      clearTimeout(timer);
    }
    log.end();
    cleanup();
  };

  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited !== null) {
      await stop();
      throw new Error(`${what} exited early (${JSON.stringify(exited)}); see ${join(ARTIFACTS_DIR, logName)}`);
    }
    try {
      const r = await fetch(`http://127.0.0.1:${port}/readyz`);
      if (r.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${what} was not ready on port ${port} within ${timeoutMs} ms`);
    }
    await sleep(100);
  }
  return stop;
}

/**
 * Starts the demo and waits for GET /readyz == 200. Returns { baseUrl, port, dataDir, stop() }.
 * The demo's console output goes to artifacts/stepgate-demo.log. `args` are more of
 * `stepgate demo`'s flags (`--upstream-oidc …`), `env` more of its environment.
 */
export async function startDemo({ timeoutMs = 30_000, args = [], env = {} } = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-e2e-'));
  const port = await freePort();
  const stop = await startStepgate('stepgate demo', ['demo', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...args], port, 'stepgate-demo.log', {
    env: { RUST_LOG: process.env.RUST_LOG || 'info', ...env },
    cleanup: () => rmSync(dataDir, { recursive: true, force: true }),
    timeoutMs,
  });
  return { baseUrl: `http://localhost:${port}`, port, dataDir, stop };
}

/**
 * Runs the `stepgate` CLI against the running demo's store, with the configuration the demo
 * writes beside it for that (`<data-dir>/cli.yaml`: the same SQLite file and key, the demo's
 * public URL and e-mail outbox). Resolves to { code, stdout, stderr }.
 */
export function stepgateCli(demo, args) {
  const config = join(demo.dataDir, 'cli.yaml');
  if (!existsSync(config)) throw new Error(`the demo did not write ${config}`);
  return new Promise((ok) => {
    execFile(stepgateBinary(), [...args, '--config', config], (err, stdout, stderr) => {
      ok({ code: err ? err.code ?? 1 : 0, stdout, stderr });
    });
  });
}
