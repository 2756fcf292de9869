/**
 * `npm start` and `terapi start` as an operator meets them, in real child processes: the first
 * start makes and prints the secret key once; every configuration problem stops the start with one
 * line saying what to change (no stack trace, exit 1); and a stop signal, sent the way a process
 * manager sends it, lets the requests in flight finish, within a bound, before the process exits 0.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fakeApi, json, PG_URL, pgSkip, providersDir, tempDir, TEST_ENCRYPTION_KEY } from './support.ts';

const root = new URL('..', import.meta.url).pathname;

/** How the server is started: `npm start` (in a process group of its own, as a service manager does), or node directly. */
type How = 'npm start' | 'node server/main.ts';

interface Server {
  child: ChildProcess;
  /** Resolves with the exit code once the process (npm itself, with `npm start`) has exited. */
  exited: Promise<number | null>;
  /** Resolves with the `terapi listening` log line, or with undefined if the process exits first. */
  listening: Promise<{ pid: number; port: number; address: string } | undefined>;
  output: () => { stdout: string; stderr: string };
}

function launch(env: Record<string, string>, how: How = 'node server/main.ts'): Server {
  const fullEnv = { PATH: process.env.PATH!, PORT: '0', ...env };
  const child =
    how === 'npm start'
      ? spawn('npm', ['start', '--silent'], { cwd: root, env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
      : spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], { cwd: root, env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let onLine: (line: string) => void = () => {};
  child.stdout!.on('data', (d) => {
    stdout += d;
    for (const line of String(d).split('\n')) onLine(line);
  });
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const listening = new Promise<{ pid: number; port: number; address: string } | undefined>((resolve) => {
    onLine = (line) => {
      if (line.includes('"terapi listening"')) resolve(JSON.parse(line));
    };
    void exited.then(() => resolve(undefined));
  });
  return { child, exited, listening, output: () => ({ stdout, stderr }) };
}

/** Runs the server until it listens (then stops it) or exits, as the first tests need. */
async function start(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string; listened: boolean }> {
  const s = launch(env);
  const listened = (await s.listening) !== undefined;
  if (listened) s.child.kill('SIGTERM');
  const code = await s.exited;
  return { code, ...s.output(), listened };
}

/** A start that must be refused: exit 1, every stderr line `terapi: cannot start: ...`, no stack trace. */
async function refused(env: Record<string, string>): Promise<string[]> {
  const r = await start(env);
  assert.equal(r.listened, false, `it started: ${r.stdout}`);
  assert.equal(r.code, 1, r.stderr);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  const lines = r.stderr.trimEnd().split('\n');
  for (const line of lines) assert.match(line, /^terapi: cannot start: /);
  return lines.map((l) => l.replace('terapi: cannot start: ', ''));
}

const isRunning = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('the first start generates the keys, prints the secret key once, and keeps both with mode 0600', async () => {
  const dataDir = tempDir('terapi-first-');
  try {
    const first = await start({ TERAPI_DATA_DIR: dataDir });
    assert.ok(first.listened, first.stderr);
    const keys = JSON.parse(readFileSync(join(dataDir, 'keys.json'), 'utf8'));
    assert.match(keys.secret_key, /^sk_[0-9a-f]{48}$/);
    assert.match(keys.encryption_key, /^[0-9a-f]{64}$/);
    assert.equal(statSync(join(dataDir, 'keys.json')).mode & 0o777, 0o600);
    assert.ok(first.stdout.includes(`your secret key is ${keys.secret_key}`));
    assert.equal(first.stdout.split(keys.secret_key).length, 2, 'printed exactly once');
    assert.ok(!first.stdout.includes(keys.encryption_key), 'the encryption key is never printed');
    const second = await start({ TERAPI_DATA_DIR: dataDir });
    assert.ok(second.listened);
    assert.ok(!second.stdout.includes(keys.secret_key), 'not printed again');
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('an invalid provider file stops the start with every error, each as file:line:col', async () => {
  const dir = providersDir({ broken: 'display_name: Broken\ncategories: [x]\ndocs: not a url\nauth: { mode: magic }\napi: { base_url: https://x.example.com }\n' });
  const dataDir = tempDir('terapi-bad-');
  try {
    const r = await start({ TERAPI_DATA_DIR: dataDir, TERAPI_PROVIDERS_DIR: dir });
    assert.equal(r.code, 1);
    assert.equal(r.listened, false);
    assert.match(r.stderr, /^terapi: cannot start: 2 errors in provider files/);
    assert.ok(r.stderr.includes(`${join(dir, 'broken.yaml')}:3:7: "docs" must be a valid uri; got "not a url"`), r.stderr);
    assert.ok(r.stderr.includes(`${join(dir, 'broken.yaml')}:4:15: "auth.mode" must be one of oauth2, oauth1, oauth2_client_credentials, api_key, basic, jwt_bearer, none; got "magic"`), r.stderr);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

describe('configuration is checked at start: one line per problem, exit 1', () => {
  const dataDir = tempDir('terapi-config-');
  const keys = { TERAPI_DATA_DIR: dataDir, TERAPI_SECRET_KEY: 'sk_config_test', TERAPI_ENCRYPTION_KEY: TEST_ENCRYPTION_KEY };
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  test('every problem of the environment at once', async () => {
    const lines = await refused({ ...keys, PORT: 'eighty', TERAPI_LOG_LEVEL: 'verbose', TERAPI_SHUTDOWN_TIMEOUT_SECONDS: 'soon', TERAPI_ENCRYPTION_KEY: 'short', TERAPI_PUBLIC_URL: 'ftp://x' });
    assert.deepEqual(lines, [
      'PORT must be a whole number from 0 to 65535, not "eighty"',
      'TERAPI_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, not "verbose"',
      'TERAPI_SHUTDOWN_TIMEOUT_SECONDS must be a number of seconds from 0 to 3600, not "soon"',
      'TERAPI_PUBLIC_URL must be an http:// or https:// URL, not "ftp://x"',
      'TERAPI_ENCRYPTION_KEY must be 32 bytes, as 64 hex characters or base64 (openssl rand -hex 32)',
    ]);
  });

  test('a malformed TERAPI_DATABASE_URL, never echoed (it may hold a password)', async () => {
    assert.deepEqual(await refused({ ...keys, TERAPI_DATABASE_URL: 'mysql://root:hunter2@db/terapi' }), ['TERAPI_DATABASE_URL must be a PostgreSQL URL such as postgresql://user:password@host:5432/database; its scheme is "mysql:"']);
    assert.deepEqual(await refused({ ...keys, TERAPI_DATABASE_URL: 'hunter2@db' }), ['TERAPI_DATABASE_URL must be a PostgreSQL URL such as postgresql://user:password@host:5432/database; it is not a URL']);
  });

  test('an unreachable database', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    assert.deepEqual(await refused({ ...keys, TERAPI_DATABASE_URL: `postgresql://postgres:hunter2@127.0.0.1:${port}/test` }), [`TERAPI_DATABASE_URL: the database cannot be reached: connect ECONNREFUSED 127.0.0.1:${port}`]);
  });

  test('a database that does not exist', { skip: pgSkip }, async () => {
    const url = new URL(PG_URL!);
    url.pathname = '/terapi_no_such_database';
    assert.deepEqual(await refused({ ...keys, TERAPI_DATABASE_URL: url.toString() }), ['TERAPI_DATABASE_URL: the database cannot be reached: database "terapi_no_such_database" does not exist']);
  });

  test('a corrupt keys.json', async () => {
    const dir = tempDir('terapi-keys-');
    try {
      writeFileSync(join(dir, 'keys.json'), '{"secret_key": "sk_1", "encryption_key": ');
      const [line] = await refused({ TERAPI_DATA_DIR: dir });
      assert.match(line, new RegExp(`^${join(dir, 'keys.json')} cannot be read \\(.*JSON.*\\): restore it from a backup, or set TERAPI_SECRET_KEY and TERAPI_ENCRYPTION_KEY`));
      writeFileSync(join(dir, 'keys.json'), '{"secret_key": "sk_1"}');
      assert.deepEqual(await refused({ TERAPI_DATA_DIR: dir }), [`${join(dir, 'keys.json')} must be a JSON object with the strings "secret_key" and "encryption_key": restore it from a backup, or set TERAPI_SECRET_KEY and TERAPI_ENCRYPTION_KEY (a new encryption key cannot open the credentials already stored)`]);
      writeFileSync(join(dir, 'keys.json'), '{"secret_key": "sk_1", "encryption_key": "abc"}');
      assert.deepEqual(await refused({ TERAPI_DATA_DIR: dir }), [`encryption_key in ${join(dir, 'keys.json')} must be 32 bytes, as 64 hex characters or base64 (openssl rand -hex 32)`]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a port in use, and a HOST that is not an address of this machine', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, r));
    const port = (taken.address() as AddressInfo).port;
    try {
      assert.deepEqual(await refused({ ...keys, PORT: String(port) }), [`PORT ${port} is already in use: stop what listens there, or set PORT to a free port`]);
    } finally {
      taken.close();
    }
    // 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine.
    assert.deepEqual(await refused({ ...keys, HOST: '192.0.2.1' }), ['HOST 192.0.2.1 is not an address of this machine: set HOST to one of its addresses, or unset it to listen on every address']);
  });

  test('HOST sets the listen address', async () => {
    const s = launch({ ...keys, HOST: '127.0.0.1' });
    const listening = await s.listening;
    assert.equal(listening?.address, '127.0.0.1');
    s.child.kill('SIGTERM');
    assert.equal(await s.exited, 0);
  });

  test('an encryption key that does not open the stored credentials (a lost keys.json made anew)', async () => {
    const dir = tempDir('terapi-lost-keys-');
    const api = await fakeApi((_req, res) => json(res, 200, {}));
    try {
      const s = launch({ TERAPI_DATA_DIR: dir });
      const { port } = (await s.listening)!;
      const { secret_key } = JSON.parse(readFileSync(join(dir, 'keys.json'), 'utf8'));
      const call = (path: string, body: unknown) => fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', headers: { authorization: `Bearer ${secret_key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      assert.equal((await call('/integration', { provider_config_key: 'stripe', provider: 'stripe' })).status, 200);
      assert.equal((await call('/connection', { connection_id: 'u1', provider_config_key: 'stripe', credentials: { type: 'api_key', api_key: 'sk_live_x' } })).status, 200);
      s.child.kill('SIGTERM');
      assert.equal(await s.exited, 0);
      rmSync(join(dir, 'keys.json'));
      const [line] = await refused({ TERAPI_DATA_DIR: dir });
      assert.match(line, /^the credentials of connection "u1" \(integration "stripe"\) cannot be opened: these credentials were sealed with an encryption key this server does not have \([0-9a-f]{8}\): add it to TERAPI_PREVIOUS_ENCRYPTION_KEYS$/);
    } finally {
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a stop signal lets the requests in flight finish', () => {
  // A provider whose API answers /slow after a while: a proxied call to it is a request in flight.
  let api: Awaited<ReturnType<typeof fakeApi>>;
  let arrived: () => void = () => {};
  let slowMs = 1500;
  let providers: string;
  before(async () => {
    api = await fakeApi(async (req, res) => {
      if (req.url === '/slow') {
        arrived();
        await new Promise((r) => setTimeout(r, slowMs));
      }
      json(res, 200, { done: req.url });
    });
    providers = providersDir({ slowapi: `display_name: Slow API\ncategories: [testing]\ndocs: https://example.com/docs\nauth: { mode: none }\napi: { base_url: "${api.url}" }\n` });
  });
  after(async () => {
    await api.close();
    rmSync(providers, { recursive: true, force: true });
  });

  /**
   * Starts the server, makes a connection, starts a slow proxied request and, once it reached the
   * provider, sends `signal` to `target`. Returns the slow request's outcome and the process's exit.
   */
  async function stopDuringRequest(how: How, signal: NodeJS.Signals, target: 'group' | 'pid', env: Record<string, string> = {}) {
    const dataDir = tempDir('terapi-stop-');
    const secret = 'sk_stop_test';
    const s = launch({ TERAPI_DATA_DIR: dataDir, TERAPI_SECRET_KEY: secret, TERAPI_ENCRYPTION_KEY: TEST_ENCRYPTION_KEY, TERAPI_PROVIDERS_DIR: providers, ...env }, how);
    try {
      const listening = await s.listening;
      assert.ok(listening, s.output().stderr);
      const base = `http://127.0.0.1:${listening.port}`;
      const headers = { authorization: `Bearer ${secret}`, 'content-type': 'application/json' };
      assert.equal((await fetch(`${base}/integration`, { method: 'POST', headers, body: JSON.stringify({ provider_config_key: 'slow', provider: 'slowapi' }) })).status, 200);
      assert.equal((await fetch(`${base}/connection`, { method: 'POST', headers, body: JSON.stringify({ connection_id: 'c1', provider_config_key: 'slow' }) })).status, 200);
      const reached = new Promise<void>((r) => (arrived = r));
      const started = Date.now();
      const slow = fetch(`${base}/proxy/slow`, { headers: { authorization: `Bearer ${secret}`, 'provider-config-key': 'slow', 'connection-id': 'c1' } }).then(
        async (res) => ({ status: res.status, connection: res.headers.get('connection'), body: await res.json() }),
        (e: Error) => ({ error: e }),
      );
      await reached;
      process.kill(target === 'group' ? -s.child.pid! : s.child.pid!, signal);
      // Once the server has the signal, it takes no new connection.
      await new Promise((r) => setTimeout(r, 300));
      const late = await fetch(`${base}/health`).then(() => 'answered', (e: Error) => (e.cause as NodeJS.ErrnoException)?.code);
      const outcome = await slow;
      const code = await s.exited;
      await new Promise((r) => setTimeout(r, 100));
      return { outcome, code, late, ms: Date.now() - started, serverPid: listening.pid, stdout: s.output().stdout };
    } finally {
      // Whatever went wrong, nothing is left running: npm's group, and the server if it outlived npm.
      const server = (await s.listening)?.pid;
      for (const pid of [how === 'npm start' ? -s.child.pid! : s.child.pid!, ...(server ? [server] : [])]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
      }
      rmSync(dataDir, { recursive: true, force: true });
    }
  }

  const finished = async (how: How, signal: NodeJS.Signals, target: 'group' | 'pid') => {
    const r = await stopDuringRequest(how, signal, target);
    assert.deepEqual(r.outcome, { status: 200, connection: 'close', body: { done: '/slow' } }, 'the request in flight finished, and its connection closed');
    assert.equal(r.late, 'ECONNREFUSED', 'no new connection after the signal');
    assert.equal(r.code, 0);
    assert.equal(isRunning(r.serverPid), false, 'no server left running');
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    assert.ok(lines.some((l) => l.msg.startsWith('stopping') && l.signal === signal));
    assert.equal(lines.at(-1).msg, 'stopped', 'the last line is written before the exit');
  };

  test('npm start, SIGTERM to its process group', () => finished('npm start', 'SIGTERM', 'group'));
  test('npm start, SIGTERM to the npm process alone', () => finished('npm start', 'SIGTERM', 'pid'));
  test('npm start, SIGINT to its process group (Ctrl-C)', () => finished('npm start', 'SIGINT', 'group'));
  test('terapi start, SIGTERM to the server process', () => finished('node server/main.ts', 'SIGTERM', 'pid'));

  test('past TERAPI_SHUTDOWN_TIMEOUT_SECONDS the requests still in flight are cut, and the process exits', async () => {
    slowMs = 8000;
    try {
      const r = await stopDuringRequest('node server/main.ts', 'SIGTERM', 'pid', { TERAPI_SHUTDOWN_TIMEOUT_SECONDS: '0.5' });
      assert.ok('error' in r.outcome, 'the slow request was cut');
      assert.equal(r.code, 0);
      assert.ok(r.ms < 5000, `stopped after ${r.ms} ms`);
      assert.ok(r.stdout.includes('requests still in flight after 500 ms: their connections are cut'));
    } finally {
      slowMs = 1500;
    }
  });
});

test('an engine embedded in a program lets the program end as soon as it is stopped (no grace timer left behind)', async () => {
  // Before: the stop's grace period (the shutdown timeout less 2 s) kept the process alive to its end.
  const dataDir = tempDir('terapi-data-');
  const script = join(dataDir, 'embed.mts');
  writeFileSync(script, `
    import { loadConfig } from '${root}core/config.ts';
    import { Engine } from '${root}core/engine.ts';
    import { createLogger } from '${root}core/logger.ts';
    const { config } = loadConfig({ embeddedKeys: true }, { TERAPI_DATA_DIR: ${JSON.stringify(dataDir)}, TERAPI_SECRET_KEY: 'sk_x', TERAPI_ENCRYPTION_KEY: '${TEST_ENCRYPTION_KEY}', TERAPI_SHUTDOWN_TIMEOUT_SECONDS: '30' });
    const engine = await Engine.start(config, createLogger('silent'));
    await engine.stop();
    console.log('stopped');`);
  const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let stoppedAt = 0;
  let stderr = '';
  child.stdout!.on('data', (d) => String(d).includes('stopped') && (stoppedAt = Date.now()));
  child.stderr!.on('data', (d) => (stderr += d));
  const code = await new Promise((r) => child.once('exit', r));
  rmSync(dataDir, { recursive: true, force: true });
  assert.equal(code, 0, stderr);
  assert.ok(stoppedAt > 0, 'the engine stopped');
  assert.ok(Date.now() - stoppedAt < 5000, `the process ended ${Date.now() - stoppedAt} ms after the engine stopped (the grace period is 28 s)`);
});
