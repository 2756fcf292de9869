/**
 * Throughput of Terapi's hottest reads against a bare Koa route, each server a process of its own.
 *
 *   npm run bench:api -- [--connections 50] [--duration 5] [--rounds 4] [--warmup 2] [--cpu-prof <dir>]
 *
 * Three kinds of process, so that no server pays for another's heap, timers or load generation:
 * - Terapi as `npm start` runs it: `node server/bin.mjs start`, embedded store in a temporary data
 *   directory, production logging (level info, one line per request, stdout being a file there).
 * - The baseline, bench/api-bare.ts: Koa 3 + @koa/router with no middleware, started the same way
 *   (node, tsx's loader, the same environment) on the same kind of listener (node:http over
 *   app.callback(), PORT on every address), answering the same bytes as each Terapi endpoint.
 * - This process: it sets the data up through Terapi's API, then is the load generator
 *   (autocannon, -c 50), and reads each server's CPU time from /proc between runs.
 *
 * Targets: `GET /connection/{id}` and `GET /auth/token/{pck}/{id}` (an OAuth token, valid, not due
 * for a refresh), each beside the bare route answering its bytes. With TERAPI_BENCH_DATABASE_URL
 * (else TERAPI_TEST_DATABASE_URL) set, the same two endpoints again on a second Terapi process on
 * that PostgreSQL database, where every request reads through the database, beside a bare route
 * doing one `SELECT` of a row by primary key through pg.
 *
 * After a warm-up of each target, `rounds` rounds of `duration` seconds each, the order rotating by
 * one every round, so that a noisy neighbour weighs on every target alike. Printed per round and in
 * total: req/s, p50, p99, and the ratio to the bare route (total: requests over seconds of all
 * rounds; p50 and p99 the median of the rounds'). Also the server's CPU time per request, and its
 * ratio: on a 2-core machine the load generator can hold the bare route back, which the req/s ratio
 * then flatters and the CPU ratio does not.
 *
 * --cpu-prof <dir>: runs the embedded Terapi under `node --cpu-prof` (one profile of the whole run,
 * written when it stops), for diagnosis; its figures are then not the benchmark's.
 */
import autocannon from 'autocannon';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { cpuMs } from './cpu.ts';

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const CONNECTIONS = option('connections', 50);
const DURATION = option('duration', 5);
const ROUNDS = option('rounds', 4);
const WARMUP = option('warmup', 2);
const PROF_DIR = process.argv.includes('--cpu-prof') ? resolve(process.argv[process.argv.indexOf('--cpu-prof') + 1] ?? '.') : undefined;
if (PROF_DIR) mkdirSync(PROF_DIR, { recursive: true });
const DATABASE_URL = process.env.TERAPI_BENCH_DATABASE_URL || process.env.TERAPI_TEST_DATABASE_URL || undefined;
/** Issue 13: the bar, and the project's goal. */
const TARGET_RATIO = 0.6;
const GOAL_RATIO = 0.9;
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TARGETS_PER_ROUND = DATABASE_URL ? 7 : 4;
/** The whole run is stopped, servers included, past this. */
const WATCHDOG_MS = 90_000 + (WARMUP + DURATION * ROUNDS) * TARGETS_PER_ROUND * 1000 * 1.5;

const started = performance.now();
const dataDir = mkdtempSync(join(tmpdir(), 'terapi-bench-api-'));
const secret = `sk_bench_${randomBytes(12).toString('hex')}`;
const encryptionKey = randomBytes(32).toString('hex');
/** Names of this run on a shared database: nothing of an earlier or concurrent run is touched. */
const suffix = randomBytes(4).toString('hex');
const children: ChildProcess[] = [];

const cleanup = () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
};
const watchdog = setTimeout(() => {
  console.error(`bench/api: still running after ${Math.round(WATCHDOG_MS / 1000)} s: stopped`);
  cleanup();
  process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    cleanup();
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------------------------
// Processes.

const freePort = () =>
  new Promise<number>((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });

interface Proc {
  child: ChildProcess;
  url: string;
  log: string;
}

/** Starts `node <args>` with its stdout and stderr in a file, and waits until `ready` answers 200. */
async function startProcess(name: string, args: string[], env: Record<string, string>, ready: string): Promise<Proc> {
  const port = await freePort();
  const log = join(dataDir, `${name}.log`);
  const fd = openSync(log, 'a');
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, ...env, PORT: String(port) },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  children.push(child);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode} before it answered:\n${readFileSync(log, 'utf8')}`);
    const ok = await fetch(`${url}${ready}`).then((r) => r.status === 200, () => false);
    if (ok) return { child, url, log };
    if (Date.now() > deadline) throw new Error(`${name} did not answer ${ready} within 30 s:\n${readFileSync(log, 'utf8')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Stops a process the way a process manager does (SIGTERM), and waits for its exit. */
async function stopProcess(child: ChildProcess) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------
// Setup through the API.

async function api(base: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${secret}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`${method} ${path}: HTTP ${res.status} ${text}`);
  return { text, json: text ? JSON.parse(text) : undefined };
}

/** An integration and connection for each endpoint; answers the paths and the bodies Terapi gives. */
async function setUp(base: string, tag: string) {
  const conn = { pck: `bench-stripe-${tag}`, id: 'bench-conn-1' };
  const tok = { pck: `bench-github-${tag}`, id: 'bench-conn-1' };
  await api(base, 'POST', '/integration', { provider_config_key: conn.pck, provider: 'stripe' });
  await api(base, 'POST', '/connection', { connection_id: conn.id, provider_config_key: conn.pck, credentials: { type: 'api_key', api_key: `sk_test_${randomBytes(12).toString('hex')}` } });
  await api(base, 'POST', '/integration', { provider_config_key: tok.pck, provider: 'github', oauth_client_id: 'Iv1.benchclient', oauth_client_secret: randomBytes(16).toString('hex') });
  await api(base, 'POST', '/connection', {
    connection_id: tok.id,
    provider_config_key: tok.pck,
    credentials: { type: 'oauth2', access_token: `gho_${randomBytes(16).toString('hex')}`, expires_at: '2099-01-01T00:00:00.000Z', raw: { scope: 'repo,user', token_type: 'bearer' } },
  });
  const connectionPath = `/connection/${conn.id}?provider_config_key=${conn.pck}`;
  const tokenPath = `/auth/token/${tok.pck}/${tok.id}`;
  const connection = await api(base, 'GET', connectionPath);
  const token = await api(base, 'GET', tokenPath);
  if (token.json.type !== 'Bearer' || !token.json.expires_at) throw new Error(`unexpected token answer ${token.text}`);
  return { connectionPath, tokenPath, connection, token, pcks: [conn.pck, tok.pck] };
}

// ---------------------------------------------------------------------------------------------
// Load.

interface Target {
  name: string;
  url: string;
  pid: number;
  /** The bare route this one is compared with; none for a bare route. */
  bare?: Target;
  /** Counted against the bar (the embedded store's endpoints). */
  bar?: boolean;
}
interface Run {
  requests: number;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  cpuMs: number;
}

async function load(target: Target, seconds: number): Promise<Run> {
  const cpu = cpuMs(target.pid);
  const r = await autocannon({ url: target.url, connections: CONNECTIONS, duration: seconds, headers: { authorization: `Bearer ${secret}` } });
  if (r.errors || r.timeouts || r.non2xx) throw new Error(`${target.name}: ${r.errors} errors, ${r.timeouts} timeouts, ${r.non2xx} non-2xx answers`);
  return { requests: r.requests.total, seconds: r.duration, rps: r.requests.total / r.duration, p50: r.latency.p50, p99: r.latency.p99, cpuMs: cpuMs(target.pid) - cpu };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const pad = (s: string | number, n: number) => String(s).padStart(n);
const f0 = (n: number) => Math.round(n).toString();
const f1 = (n: number) => n.toFixed(1);
const f2 = (n: number) => n.toFixed(2);

async function main() {
  const terapiEnv = { TERAPI_DATA_DIR: join(dataDir, 'embedded'), TERAPI_SECRET_KEY: secret, TERAPI_ENCRYPTION_KEY: encryptionKey, TERAPI_LOG_LEVEL: 'info' };
  const profArgs = PROF_DIR ? ['--cpu-prof', '--cpu-prof-dir', PROF_DIR] : [];
  const terapi = await startProcess('terapi', [...profArgs, 'server/bin.mjs', 'start'], terapiEnv, '/health');
  const embedded = await setUp(terapi.url, 'embedded');

  let pgTerapi: Proc | undefined;
  let pgSetUp: Awaited<ReturnType<typeof setUp>> | undefined;
  let db: pg.Client | undefined;
  if (DATABASE_URL) {
    pgTerapi = await startProcess('terapi-pg', ['server/bin.mjs', 'start'], { ...terapiEnv, TERAPI_DATA_DIR: join(dataDir, 'pg'), TERAPI_DATABASE_URL: DATABASE_URL }, '/health');
    pgSetUp = await setUp(pgTerapi.url, suffix);
    db = new pg.Client({ connectionString: DATABASE_URL });
    await db.connect();
    await db.query('CREATE TABLE IF NOT EXISTS bench_api_rows (id text PRIMARY KEY, body json NOT NULL)');
    for (const [id, body] of [['connection/bench-conn-1', pgSetUp.connection.text], ['token/bench-conn-1', pgSetUp.token.text]]) {
      await db.query('INSERT INTO bench_api_rows (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = excluded.body', [id, body]);
    }
  }

  const bodiesFile = join(dataDir, 'bodies.json');
  writeFileSync(bodiesFile, JSON.stringify({ connection: embedded.connection.json, token: embedded.token.json }));
  const bare = await startProcess('bare', ['--import', 'tsx', 'bench/api-bare.ts', bodiesFile], DATABASE_URL ? { BENCH_DATABASE_URL: DATABASE_URL } : {}, embedded.tokenPath);
  // The same bytes, or the comparison is not the same work.
  const same = async (path: string, expected: string) => {
    const got = await api(bare.url, 'GET', path);
    if (got.text !== expected) throw new Error(`the bare route ${path} does not answer the same body:\n${got.text}\n${expected}`);
  };
  await same(embedded.connectionPath, embedded.connection.text);
  await same(embedded.tokenPath, embedded.token.text);
  if (pgSetUp) {
    await same(`/pg${pgSetUp.connectionPath}`, pgSetUp.connection.text);
    await same(`/pg${pgSetUp.tokenPath}`, pgSetUp.token.text);
  }

  const barePid = bare.child.pid!;
  const bareConnection: Target = { name: 'bare Koa, connection bytes', url: `${bare.url}${embedded.connectionPath}`, pid: barePid };
  const bareToken: Target = { name: 'bare Koa, token bytes', url: `${bare.url}${embedded.tokenPath}`, pid: barePid };
  const targets: Target[] = [
    bareConnection,
    { name: 'GET /connection/{id}', url: `${terapi.url}${embedded.connectionPath}`, pid: terapi.child.pid!, bare: bareConnection, bar: true },
    bareToken,
    { name: 'GET /auth/token', url: `${terapi.url}${embedded.tokenPath}`, pid: terapi.child.pid!, bare: bareToken, bar: true },
  ];
  if (pgTerapi && pgSetUp) {
    const bareSelect: Target = { name: 'bare Koa + pg SELECT by key', url: `${bare.url}/pg${pgSetUp.connectionPath}`, pid: barePid };
    targets.push(
      bareSelect,
      { name: 'PG GET /connection/{id}', url: `${pgTerapi.url}${pgSetUp.connectionPath}`, pid: pgTerapi.child.pid!, bare: bareSelect },
      { name: 'PG GET /auth/token', url: `${pgTerapi.url}${pgSetUp.tokenPath}`, pid: pgTerapi.child.pid!, bare: bareSelect },
    );
  }

  const load1 = () => loadavg()[0].toFixed(2);
  console.log(`bench/api: ${availableParallelism()} CPUs (load average ${load1()} at the start), Node ${process.version}; autocannon -c ${CONNECTIONS} in this process (pid ${process.pid})`);
  console.log(`terapi: \`node ${profArgs.join(' ')}${profArgs.length ? ' ' : ''}server/bin.mjs start\` (pid ${terapi.child.pid}), embedded store in ${terapiEnv.TERAPI_DATA_DIR}, TERAPI_LOG_LEVEL=info, stdout to ${terapi.log}`);
  if (pgTerapi) console.log(`terapi on PostgreSQL: the same with TERAPI_DATABASE_URL=${DATABASE_URL!.replace(/\/\/[^@/]*@/, '//…@')} (pid ${pgTerapi.child.pid})`);
  console.log(`bare: \`node --import tsx bench/api-bare.ts\` (pid ${barePid}), Koa 3 + @koa/router, no middleware${DATABASE_URL ? ', pg.Pool of 20' : ''}`);
  console.log(`bodies: ${embedded.connection.text.length} bytes (connection), ${embedded.token.text.length} bytes (token)`);
  console.log(`warm-up ${WARMUP} s per target, then ${ROUNDS} round(s) of ${DURATION} s per target, the order rotating\n`);

  for (const t of targets) await load(t, WARMUP);
  const runs = new Map<Target, Run[]>(targets.map((t) => [t, []]));
  const ratioText = (t: Target, r: Run, b: Run | undefined) => (t.bare && b ? ` ${f2(r.rps / b.rps)}x` : '');
  for (let round = 0; round < ROUNDS; round++) {
    const order = targets.map((_, i) => targets[(i + round) % targets.length]);
    for (const t of order) runs.get(t)!.push(await load(t, DURATION));
    console.log(`round ${round + 1} (order: ${order.map((t) => targets.indexOf(t) + 1).join(' ')}):`);
    for (const t of targets) {
      const r = runs.get(t)![round];
      const b = t.bare && runs.get(t.bare)![round];
      console.log(`  ${t.name.padEnd(30)}${pad(f0(r.rps), 7)} req/s  p50 ${pad(r.p50, 3)} ms  p99 ${pad(r.p99, 3)} ms${ratioText(t, r, b)}`);
    }
  }

  const agg = new Map(
    targets.map((t) => {
      const rs = runs.get(t)!;
      const requests = rs.reduce((s, r) => s + r.requests, 0);
      const seconds = rs.reduce((s, r) => s + r.seconds, 0);
      const cpu = rs.reduce((s, r) => s + r.cpuMs, 0);
      return [t, { rps: requests / seconds, p50: median(rs.map((r) => r.p50)), p99: median(rs.map((r) => r.p99)), cpuUsPerReq: (cpu * 1000) / requests, cores: cpu / (seconds * 1000) }];
    }),
  );
  console.log(`\ntotal over ${ROUNDS} rounds:`);
  console.log(`  ${'target'.padEnd(30)}${pad('req/s', 7)}${pad('p50 ms', 8)}${pad('p99 ms', 8)}${pad('ratio', 7)}${pad('rounds', 12)}${pad('CPU µs/req', 12)}${pad('CPU ratio', 11)}${pad('cores', 7)}`);
  for (const t of targets) {
    const a = agg.get(t)!;
    const b = t.bare && agg.get(t.bare)!;
    const ratios = t.bare ? runs.get(t)!.map((r, i) => r.rps / runs.get(t.bare!)![i].rps) : [];
    console.log(
      `  ${t.name.padEnd(30)}${pad(f0(a.rps), 7)}${pad(a.p50, 8)}${pad(a.p99, 8)}${pad(b ? f2(a.rps / b.rps) : '1', 7)}${pad(b ? `${f2(Math.min(...ratios))}-${f2(Math.max(...ratios))}` : '', 12)}${pad(f1(a.cpuUsPerReq), 12)}${pad(b ? f2(b.cpuUsPerReq / a.cpuUsPerReq) : '1', 11)}${pad(f2(a.cores), 7)}`,
    );
  }
  console.log('  (ratio: req/s over the bare route\'s, per round in "rounds"; CPU µs/req: the server process\'s CPU time, every thread,');
  console.log('   per request; CPU ratio: the bare route\'s CPU µs/req over this one\'s; cores: server CPU time over wall time. With the');
  console.log('   load generator on the same cores, a bare route below ~1 core was held back by it: the req/s ratio then flatters Terapi)');
  console.log(`\nbar (issue 13): each endpoint on the embedded store >= ${TARGET_RATIO} of its bare route's req/s (goal ${GOAL_RATIO})`);
  for (const t of targets.filter((t) => t.bar)) {
    const ratio = agg.get(t)!.rps / agg.get(t.bare!)!.rps;
    console.log(`  ${t.name.padEnd(30)} ${f2(ratio)} ${ratio >= TARGET_RATIO ? 'MET' : 'NOT MET'}`);
  }

  // Clean up what this run made on the shared database, then stop everything (Terapi flushes its log).
  if (pgTerapi && pgSetUp && db) {
    for (const pck of pgSetUp.pcks) await api(pgTerapi.url, 'DELETE', `/integration/${pck}`);
    await db.query('DROP TABLE IF EXISTS bench_api_rows');
    await db.end();
  }
  await Promise.all(children.map(stopProcess));
  const lines = readFileSync(terapi.log, 'utf8').split('\n').filter((l) => l.includes('"msg":"request"')).length;
  console.log(`\n${lines} request log lines written by the embedded Terapi; whole run ${f1((performance.now() - started) / 1000)} s, load average ${load1()} at the end${PROF_DIR ? `; its CPU profile in ${PROF_DIR}` : ''}`);
}

try {
  await main();
} catch (e) {
  console.error(`bench/api: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
} finally {
  await Promise.all(children.map((c) => stopProcess(c).catch(() => {})));
  cleanup();
  clearTimeout(watchdog);
}
