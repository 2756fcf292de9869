/**
 * Throughput of the Terapi API against a bare Koa route, and where the time per request goes.
 *
 *   node --import tsx bench/api.ts [--connections 50] [--duration 3] [--rounds 3] [--warmup 1.5]
 *                                  [--cpu-prof <dir>]
 *
 * - A child process (bench/api-server.ts) runs the real app (createApp over Engine.start) on the
 *   embedded SQLite store in a temporary data directory, with the production logger: pino's
 *   default destination (stdout, asynchronous), the child's stdout being a file in that
 *   directory, so each request pays for its log line and its write. It also runs a bare Koa app
 *   (koa + @koa/router, no middleware) whose route answers the same JSON body as
 *   GET /connection/{id}.
 * - This process creates the integrations and connections through the API, then loads the three
 *   targets with autocannon: a warm-up each, then `rounds` rounds of `duration` seconds each,
 *   the order rotating every round, so that a noisy neighbour weighs on every target alike.
 *   The servers are in a child and the load generator here, not in one process: autocannon's
 *   own work (writing requests, parsing responses, histograms) would otherwise run on the
 *   server's event loop and be counted as the server's time, and the two could not use the
 *   machine's two cores. The child reports its CPU time and event-loop utilisation per run.
 * - Then the child times each stage of a request in-process (µs per call), on the live objects,
 *   and this process prints them as a share of the measured time per request (1e6 / req/s).
 *
 * The target: each Terapi endpoint at >= 0.5 of the bare route's req/s on the embedded store.
 * Ratios matter more than absolute numbers on a shared 2-core machine; the CPU ratio (server CPU
 * time per request, bare over Terapi) is printed too, as the bare route tends to be held back by
 * the load generator rather than by its server.
 *
 * Diagnosis only (the figures are then not the benchmark's):
 * - --cpu-prof <dir>: a V8 CPU profile of the server child for each measured run,
 *   <target>-<run>.cpuprofile (taken through node:inspector rather than node's --cpu-prof flag,
 *   so that each file holds one target only; open them in Chrome DevTools or VS Code).
 */
import autocannon from 'autocannon';
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Micro, Request, Usage } from './api-server.ts';

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const CONNECTIONS = option('connections', 50);
const DURATION = option('duration', 3);
const ROUNDS = option('rounds', 3);
const WARMUP = option('warmup', 1.5);
const PROF_DIR = process.argv.includes('--cpu-prof') ? resolve(process.argv[process.argv.indexOf('--cpu-prof') + 1] ?? '.') : undefined;
if (PROF_DIR) mkdirSync(PROF_DIR, { recursive: true });
const TARGET_RATIO = 0.5;
/** The whole run is stopped, child included, past this. */
const WATCHDOG_MS = 60_000 + (WARMUP * 3 + DURATION * 3 * ROUNDS) * 1000;

const started = performance.now();
const dataDir = mkdtempSync(join(tmpdir(), 'terapi-bench-api-'));
const logFile = join(dataDir, 'server.log');
const secret = `sk_bench_${randomBytes(12).toString('hex')}`;
let child: ChildProcess | undefined;

const cleanup = () => {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
};
const watchdog = setTimeout(() => {
  console.error(`bench/api: still running after ${WATCHDOG_MS / 1000} s: stopped`);
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
// The child and its messages.

let nextId = 1;
const pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();

function startChild(): Promise<void> {
  const logFd = openSync(logFile, 'a');
  child = fork(new URL('./api-server.ts', import.meta.url), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', logFd, 'inherit', 'ipc'],
    env: { ...process.env, ...(PROF_DIR ? { BENCH_PROFILE_DIR: PROF_DIR } : {}) },
  });
  closeSync(logFd);
  child.on('exit', (code, signal) => {
    for (const p of pending.values()) p.reject(new Error(`the server child exited (${signal ?? code})`));
    pending.clear();
  });
  return new Promise((resolveReady, rejectReady) => {
    child!.once('exit', (code) => rejectReady(new Error(`the server child exited with ${code} before it was ready`)));
    child!.on('message', (m: { ready?: true; id?: number; ok?: boolean; result?: unknown; error?: string }) => {
      if (m.ready) return resolveReady();
      const p = pending.get(m.id!);
      if (!p) return;
      pending.delete(m.id!);
      m.ok ? p.resolve(m.result) : p.reject(new Error(`server child: ${m.error}`));
    });
  });
}

type Cmd = Request extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;
function ask<T = void>(msg: Cmd): Promise<T> {
  const id = nextId++;
  return new Promise<T>((res, rej) => {
    pending.set(id, { resolve: res, reject: rej });
    child!.send({ ...msg, id });
  });
}

async function stopChild() {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child!.once('exit', () => r()));
  child.send({ id: nextId++, cmd: 'stop' });
  const timer = setTimeout(() => child!.kill('SIGKILL'), 10_000);
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
  if (res.status !== 200) throw new Error(`${method} ${path}: HTTP ${res.status} ${text}`);
  return { text, json: JSON.parse(text) };
}

// ---------------------------------------------------------------------------------------------
// Load.

interface Target {
  name: string;
  slug: string;
  url: string;
  terapi: boolean;
}
interface Run {
  requests: number;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  usage: Usage;
}

async function load(target: Target, seconds: number, label: string): Promise<Run> {
  await ask({ cmd: 'mark', label: `${target.slug}-${label}` });
  const r = await autocannon({
    url: target.url,
    connections: CONNECTIONS,
    duration: seconds,
    headers: { authorization: `Bearer ${secret}` },
  });
  const usage = await ask<Usage>({ cmd: 'measure' });
  if (r.errors || r.timeouts || r.non2xx) throw new Error(`${target.name}: ${r.errors} errors, ${r.timeouts} timeouts, ${r.non2xx} non-2xx answers`);
  return { requests: r.requests.total, seconds: r.duration, rps: r.requests.total / r.duration, p50: r.latency.p50, p99: r.latency.p99, usage };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const pad = (s: string | number, n: number) => String(s).padStart(n);
const padEnd = (s: string, n: number) => s.padEnd(n);
const f0 = (n: number) => Math.round(n).toString();
const f1 = (n: number) => n.toFixed(1);
const f2 = (n: number) => n.toFixed(2);

async function main() {
  await startChild();
  const env = {
    TERAPI_DATA_DIR: dataDir,
    TERAPI_SECRET_KEY: secret,
    TERAPI_ENCRYPTION_KEY: randomBytes(32).toString('hex'),
    TERAPI_LOG_LEVEL: 'info',
    PORT: '0',
  };
  const urls = await ask<{ terapi: string; bare: string; store: string; logLevel: string }>({ cmd: 'start', env });

  const conn = { pck: 'bench-stripe', id: 'bench-conn-1' };
  const tok = { pck: 'bench-github', id: 'bench-conn-1' };
  await api(urls.terapi, 'POST', '/integration', { provider_config_key: conn.pck, provider: 'stripe' });
  await api(urls.terapi, 'POST', '/connection', { connection_id: conn.id, provider_config_key: conn.pck, credentials: { type: 'api_key', api_key: `sk_test_${randomBytes(12).toString('hex')}` } });
  await api(urls.terapi, 'POST', '/integration', { provider_config_key: tok.pck, provider: 'github', oauth_client_id: 'Iv1.benchclient', oauth_client_secret: randomBytes(16).toString('hex') });
  await api(urls.terapi, 'POST', '/connection', {
    connection_id: tok.id,
    provider_config_key: tok.pck,
    credentials: { type: 'oauth2', access_token: `gho_${randomBytes(16).toString('hex')}`, expires_at: '2099-01-01T00:00:00.000Z' },
  });

  const connectionPath = `/connection/${conn.id}?provider_config_key=${conn.pck}`;
  const tokenPath = `/auth/token/${tok.pck}/${tok.id}`;
  const view = await api(urls.terapi, 'GET', connectionPath);
  const token = await api(urls.terapi, 'GET', tokenPath);
  await ask({ cmd: 'bareBody', body: view.json });
  const bareAnswer = await api(urls.bare, 'GET', connectionPath);
  if (bareAnswer.text !== view.text) throw new Error(`the bare route does not answer the same body:\n${bareAnswer.text}\n${view.text}`);
  if (token.json.type !== 'Bearer' || !token.json.expires_at) throw new Error(`unexpected token answer ${token.text}`);

  const targets: Target[] = [
    { name: 'bare Koa route', slug: 'bare', url: `${urls.bare}${connectionPath}`, terapi: false },
    { name: 'GET /connection/{id}', slug: 'connection', url: `${urls.terapi}${connectionPath}`, terapi: true },
    { name: 'GET /auth/token/{pck}/{id}', slug: 'token', url: `${urls.terapi}${tokenPath}`, terapi: true },
  ];

  const load1 = () => loadavg()[0].toFixed(2);
  console.log(`bench/api: ${availableParallelism()} CPUs (load average ${load1()} at the start), Node ${process.version}; autocannon -c ${CONNECTIONS} in this process, servers in a child process (pid ${child!.pid})`);
  console.log(`store: embedded ${urls.store} in ${dataDir}; logging: pino default destination (stdout, async) of the child, at level ${urls.logLevel}, stdout being the file ${logFile}`);
  console.log(`body: ${view.text.length} bytes (GET /connection, and the bare route), ${token.text.length} bytes (token)`);
  console.log(`warm-up ${WARMUP} s per target, then ${ROUNDS} round(s) of ${DURATION} s per target, order rotating\n`);

  for (const t of targets) await load(t, WARMUP, 'warmup');
  const runs = new Map<Target, Run[]>(targets.map((t) => [t, []]));
  for (let round = 0; round < ROUNDS; round++) {
    const order = targets.map((_, i) => targets[(i + round) % targets.length]);
    for (const t of order) runs.get(t)!.push(await load(t, DURATION, `round${round + 1}`));
    const b = runs.get(targets[0])![round].rps;
    console.log(
      `round ${round + 1}: ` +
        targets.map((t) => `${t.name} ${f0(runs.get(t)![round].rps)} req/s${t.terapi ? ` (${f2(runs.get(t)![round].rps / b)})` : ''}`).join(' | '),
    );
  }

  // Aggregates: req/s over every round; p99 the median of the rounds'; the ratio over the sums
  // and, for the spread, per round.
  const agg = targets.map((t) => {
    const rs = runs.get(t)!;
    const requests = rs.reduce((s, r) => s + r.requests, 0);
    const seconds = rs.reduce((s, r) => s + r.seconds, 0);
    const cpuMs = rs.reduce((s, r) => s + r.usage.cpuMs, 0);
    const wallMs = rs.reduce((s, r) => s + r.usage.wallMs, 0);
    const elu = rs.reduce((s, r) => s + r.usage.elu * r.usage.wallMs, 0) / wallMs;
    return { t, rps: requests / seconds, p50: median(rs.map((r) => r.p50)), p99: median(rs.map((r) => r.p99)), cpuUsPerReq: (cpuMs * 1000) / requests, cpuCores: cpuMs / wallMs, elu, usPerReq: 1e6 / (requests / seconds) };
  });
  const bare = agg[0];
  console.log(`\n${padEnd('target', 28)}${pad('req/s', 8)}${pad('p50 ms', 8)}${pad('p99 ms', 8)}${pad('ratio', 7)}${pad('rounds', 12)}${pad('µs/req', 8)}${pad('CPU µs/req', 12)}${pad('CPU ratio', 11)}${pad('cores', 7)}${pad('ELU', 6)}`);
  for (const a of agg) {
    const ratios = runs.get(a.t)!.map((r, i) => r.rps / runs.get(bare.t)![i].rps);
    const spread = a.t.terapi ? `${f2(Math.min(...ratios))}-${f2(Math.max(...ratios))}` : '';
    console.log(
      `${padEnd(a.t.name, 28)}${pad(f0(a.rps), 8)}${pad(a.p50, 8)}${pad(a.p99, 8)}${pad(a.t.terapi ? f2(a.rps / bare.rps) : '1', 7)}${pad(spread, 12)}${pad(f1(a.usPerReq), 8)}${pad(f1(a.cpuUsPerReq), 12)}${pad(a.t.terapi ? f2(bare.cpuUsPerReq / a.cpuUsPerReq) : '1', 11)}${pad(f2(a.cpuCores), 7)}${pad(f2(a.elu), 6)}`,
    );
  }
  console.log('(µs/req = 1e6 / req/s; CPU µs/req = server child CPU time, every thread, per request; CPU ratio = bare CPU µs/req / this one;');
  console.log(' cores = child CPU time / wall time; ELU = event-loop utilisation of its main thread. A bare-route ELU below ~0.95 means the load');
  console.log(' generator, not the server, set its pace (2 cores): the req/s ratio then flatters Terapi and the CPU ratio is the fairer one)');
  console.log(`\ntarget: each Terapi endpoint >= ${TARGET_RATIO} of the bare route's req/s on the embedded store`);
  for (const a of agg.slice(1)) console.log(`  ${padEnd(a.t.name, 28)} ${f2(a.rps / bare.rps)} ${a.rps / bare.rps >= TARGET_RATIO ? 'MET' : 'NOT MET'}`);

  // Read before the microbenchmarks, which write more lines.
  const logLines = readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"msg":"request"')).length;

  // ---- Where the time goes.
  const micro = await ask<Micro[]>({ cmd: 'micro', secret, connection: conn, token: tok });
  const us = (name: string) => micro.find((m) => m.name === name)!.us;
  const [c, t] = [agg[1], agg[2]];
  // Stages of each request, and how many times each runs per request (one store read: the
  // connection; the integration record comes from the engine's short-lived cache).
  const stages: { name: string; per: [number, number]; us: [number, number] }[] = [
    { name: 'secret key check', per: [1, 1], us: [us('secret key check'), us('secret key check')] },
    { name: 'request check (openapi check)', per: [1, 1], us: [us('request check getConnection'), us('request check getAuthToken')] },
    { name: 'store read (cached, 50 in flight)', per: [1, 1], us: [us('store read, 50 in flight'), us('store read, 50 in flight')] },
    { name: 'decryption (Sealer.open, cached)', per: [0, 1], us: [us('decryption (Sealer.open)'), us('decryption (Sealer.open)')] },
    { name: 'view building', per: [1, 1], us: [us('view building (connections.view)'), us('view building (token, as Engine.token)')] },
    { name: 'logging (one pino line)', per: [1, 1], us: [us('logging (one pino line)'), us('logging (one pino line)')] },
  ];
  console.log(`\nstages, timed in the server child after the load (µs per call, median of batches):`);
  for (const m of micro) console.log(`  ${padEnd(m.name, 40)}${pad(f2(m.us), 9)} µs${m.note ? `   (${m.note})` : ''}`);
  console.log(`\nshare of the measured time per request (${f1(c.usPerReq)} µs for GET /connection, ${f1(t.usPerReq)} µs for the token):`);
  console.log(`  ${padEnd('stage', 38)}${pad('connection µs', 14)}${pad('share', 7)}${pad('token µs', 10)}${pad('share', 7)}`);
  const pct = (x: number, of: number) => `${f0((100 * x) / of)}%`;
  let sumC = 0;
  let sumT = 0;
  for (const s of stages) {
    const xc = s.us[0] * s.per[0];
    const xt = s.us[1] * s.per[1];
    sumC += xc;
    sumT += xt;
    console.log(`  ${padEnd(s.name, 38)}${pad(f1(xc), 14)}${pad(pct(xc, c.usPerReq), 7)}${pad(f1(xt), 10)}${pad(pct(xt, t.usPerReq), 7)}`);
  }
  console.log(`  ${padEnd('HTTP + Koa + router (the bare route)', 38)}${pad(f1(bare.usPerReq), 14)}${pad(pct(bare.usPerReq, c.usPerReq), 7)}${pad(f1(bare.usPerReq), 10)}${pad(pct(bare.usPerReq, t.usPerReq), 7)}`);
  const restC = c.usPerReq - sumC - bare.usPerReq;
  const restT = t.usPerReq - sumT - bare.usPerReq;
  console.log(`  ${padEnd('rest (see below)', 38)}${pad(f1(restC), 14)}${pad(pct(restC, c.usPerReq), 7)}${pad(f1(restT), 10)}${pad(pct(restT, t.usPerReq), 7)}`);

  console.log('  rest: the other middleware (error and log wrapper, bodyparser, operation check wrapper), a router of ~20 routes, query');
  console.log('  parsing, GC, and whatever the stages cost under load beyond their cost alone. Store reads and decryption are');
  console.log("  the embedded store's read cache and the sealer's opened values here, as in the running server after a first request");
  await stopChild();
  console.log(`\n${logLines} request log lines written; whole run ${f1((performance.now() - started) / 1000)} s, load average ${load1()} at the end${PROF_DIR ? `; CPU profiles of the server child in ${PROF_DIR}` : ''}`);
}

try {
  await main();
} catch (e) {
  console.error(`bench/api: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
} finally {
  await stopChild().catch(() => {});
  cleanup();
  clearTimeout(watchdog);
}
