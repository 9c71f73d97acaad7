// For the journeys `stepgate demo` does not set up (an SMTP server, a first-sign-in network,
// an app that is down or slow): `stepgate serve` with a test's own configuration, on a free
// port with a throw-away data directory, plus the small real parts around it — the test's
// upstream apps (node HTTP servers on loopback) and a recording SMTP server (Python aiosmtpd,
// the same crates/authn/tests/interop/smtp_sink.py the Rust tests use).
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { REPO_DIR, freePort, startStepgate, stepgateBinary } from './demo.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs `stepgate <args>` with `input` on standard input; resolves to { code, stdout, stderr }. */
function run(args, input) {
  return new Promise((ok) => {
    const child = execFile(stepgateBinary(), args, (err, stdout, stderr) => {
      ok({ code: err ? err.code ?? 1 : 0, stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

/**
 * Starts `stepgate serve` with the configuration `yaml({ port, baseUrl, dataDir })` returns
 * (the test writes `server.listen`/`public_url` from them; a key is made here and
 * `secrets.key_file` names it). `setup(cli)` runs
 * before the server starts, e.g. to add users. Waits for GET /readyz == 200.
 * Returns { baseUrl, port, dataDir, cli(args, input), stop() }; the console goes to
 * artifacts/<name>.log.
 */
export async function startServe(name, yaml, setup = async () => {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-e2e-serve-'));
  const cleanup = () => rmSync(dataDir, { recursive: true, force: true });
  const port = await freePort();
  const baseUrl = `http://localhost:${port}`;
  const config = join(dataDir, 'stepgate.yaml');
  const cli = async (args, input) => {
    const r = await run([...args, '--config', config], input);
    if (r.code !== 0) throw new Error(`stepgate ${args.join(' ')} failed (${r.code}):\n${r.stderr}`);
    return r.stdout;
  };
  try {
    const key = await run(['secrets', 'generate-key']);
    if (key.code !== 0) throw new Error(`stepgate secrets generate-key failed: ${key.stderr}`);
    writeFileSync(join(dataDir, 'secret.key'), key.stdout.trim(), { mode: 0o600 });
    writeFileSync(config, `${yaml({ port, baseUrl, dataDir })}\nsecrets: { key_file: ${join(dataDir, 'secret.key')} }\n`);
    await setup(cli);
  } catch (e) {
    cleanup();
    throw e;
  }
  const stop = await startStepgate('stepgate serve', ['serve', '--config', config], port, `${name}.log`, {
    env: { STEPGATE_LOG: 'info' },
    cleanup,
  });
  return { baseUrl, port, dataDir, config, cli, stop };
}

/**
 * The configuration's `apps`, `default_outcome` and `policies` for one app, "Team App" on
 * the portal's own host (localhost) in front of `upstreamPort`, whose sign-in and use both
 * need MFA (AAL2).
 */
export const teamAppWithMfa = (upstreamPort) => `
apps:
  - { id: team, name: Team App, hosts: [localhost], upstream: "http://127.0.0.1:${upstreamPort}" }
default_outcome: deny
policies:
  - name: sign-in
    priority: 100
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: team-app
    priority: 200
    targets: { apps: [team] }
    outcome: { step_up: { min_aal: 2 } }
`;

/** The secret of an otpauth:// URI in `text` (what `stepgate user enroll-totp --no-qr` prints). */
export function otpauthSecret(text) {
  const m = text.match(/otpauth:\/\/\S+/);
  if (!m) throw new Error(`no otpauth URI in:\n${text}`);
  return new URL(m[0]).searchParams.get('secret');
}

const esc = (s) => String(s ?? '').replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * An upstream app on a free loopback port: a page saying who stepgate says is there
 * (`#remote-user`, `#remote-aal`). Resolves to { port, close() }.
 */
export async function startEchoApp(title = 'Team App') {
  const server = createHttpServer((req, res) => {
    const h = (n) => esc(req.headers[n]);
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><html lang="en"><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>${esc(title)}</title><main><h1>${esc(title)}</h1>
<p>Signed in as <strong id="remote-user">${h('remote-user')}</strong>, AAL <span id="remote-aal">${h('remote-aal')}</span>,
methods <span id="remote-amr">${h('remote-amr')}</span>; path <code id="path">${esc(req.url)}</code></p></main></html>`);
  });
  return listen(server);
}

/** An upstream that accepts connections and never answers (for the gateway's timeout). */
export async function startHangingApp() {
  const sockets = new Set();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
  });
  const app = await listen(server);
  return {
    port: app.port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await app.close();
    },
  };
}

async function listen(server) {
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: server.address().port,
    close: () => new Promise((r) => {
      server.closeAllConnections?.();
      server.close(() => r());
    }),
  };
}

/** Whether python3 has aiosmtpd (CI installs it; `pip install aiosmtpd`). */
export function hasAiosmtpd() {
  return spawnSync('python3', ['-c', 'import aiosmtpd'], { stdio: 'ignore' }).status === 0;
}

/**
 * A real SMTP server on loopback that records each message it receives (aiosmtpd, through
 * crates/authn/tests/interop/smtp_sink.py). Resolves to { port, message(n), count(), stop() };
 * `message(n)` waits for the n-th message (1-based) and returns { to, text, code } with the
 * last 6-digit number in it.
 */
export async function startSmtpSink() {
  const dir = mkdtempSync(join(tmpdir(), 'stepgate-e2e-smtp-'));
  const script = join(REPO_DIR, 'crates', 'authn', 'tests', 'interop', 'smtp_sink.py');
  const child = spawn('python3', [script, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise((ok, fail) => {
    let out = '';
    child.once('exit', (code) => fail(new Error(`the SMTP sink exited (${code})`)));
    child.stdout.on('data', (d) => {
      out += d;
      const line = out.split('\n')[0];
      if (out.includes('\n')) ok(Number(line.trim()));
    });
  });
  const files = () => readdirSync(dir).filter((n) => n.endsWith('.eml')).sort();
  return {
    port,
    count: () => files().length,
    async message(n, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (files().length < n) {
        if (Date.now() > deadline) throw new Error(`message ${n} never reached the SMTP server`);
        await sleep(50);
      }
      // Quoted-printable soft breaks joined, `=3D` read as `=`.
      const text = readFileSync(join(dir, files()[n - 1]), 'utf8').replace(/=\r?\n/g, '').replace(/=3D/g, '=');
      const to = text.split(/\r?\n/)[0].replace(/^X-Envelope-To: /, '');
      const codes = text.match(/\b\d{6}\b/g) ?? [];
      return { to, text, code: codes[codes.length - 1] };
    },
    async stop() {
      child.stdin.end();
      if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs `statement` (with `params`) on the SQLite store in `dataDir`, from another process
 * (python3's sqlite3), as an operator's tool or an outage would.
 */
export function sqlite(dataDir, statement, params = []) {
  const r = spawnSync('python3', ['-c', 'import json,sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2], json.loads(sys.argv[3])); c.commit()', join(dataDir, 'stepgate.db'), statement, JSON.stringify(params)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sqlite: ${statement}: ${r.stderr}`);
}

/**
 * Moves every time in `username`'s live sessions (the factors passed, the start, the last
 * request) `seconds` into the past, as if they had been signed in that much longer: how a
 * browser test reaches "your sign-in is older than the fresh-factor window" without
 * waiting for it.
 */
export function ageSessions(dataDir, username, seconds) {
  const script = `
import datetime, json, re, sqlite3, sys
db, user, secs = sys.argv[1], sys.argv[2], int(sys.argv[3])
def back(s):
    m = re.match(r"(\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d)(\\.\\d+)?(Z|[+-]\\d\\d:\\d\\d)$", s)
    t = datetime.datetime.fromisoformat(m.group(1)) - datetime.timedelta(seconds=secs)
    return t.isoformat() + (m.group(2) or "") + m.group(3)
c = sqlite3.connect(db)
n = 0
for sid, data in c.execute("SELECT id, data_json FROM hot_sessions").fetchall():
    j = json.loads(data)
    if j.get("username") != user:
        continue
    for f in j["factors"]:
        f["at"] = back(f["at"])
    j["created_at"], j["last_seen"] = back(j["created_at"]), back(j["last_seen"])
    c.execute("UPDATE hot_sessions SET data_json = ? WHERE id = ?", (json.dumps(j), sid))
    n += 1
c.commit()
print(n)
`;
  const r = spawnSync('python3', ['-c', script, join(dataDir, 'stepgate.db'), username, String(seconds)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ageing ${username}'s sessions: ${r.stderr}`);
  const n = Number(r.stdout.trim());
  if (!n) throw new Error(`${username} has no live session to age`);
  return n;
}
