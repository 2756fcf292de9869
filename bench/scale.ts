/**
 * Scheduled syncs at scale (issue 8): 3 API processes and 2 worker processes on one PostgreSQL
 * database, 1,000 connections with 2 syncs each on a 1-minute schedule, against a local HTTP API
 * standing in for the provider.
 *
 *   node --import tsx bench/scale.ts [--minutes 3] [--connections 1000] [--records 30] [--page 10] [--delay 5]
 *
 * - The database is made for the run and dropped at its end, on the server of TERAPI_BENCH_DATABASE_URL,
 *   TERAPI_TEST_DATABASE_URL, or postgresql://postgres@127.0.0.1:5432/postgres.
 * - The connections are made through the API, 25 requests at a time spread over the 3 API servers;
 *   each connection's syncs are due at once, then every minute.
 * - The stand-in API serves --records records a run in pages of --page, --delay ms a page, and
 *   changes every record at each run (so each run writes all of them). It sees each run begin (its
 *   first page) and end (its last page): a run of a connection and sync that begins while another
 *   one of the same is open is an overlap, and any overlap fails the bench (exit 1).
 * - Schedule lag = when a worker took the run's job (pg-boss's started_on) minus the time the run was
 *   due (the sync's next_run_ms, carried in the job): p50 and p99, for the first runs (all due at
 *   creation, a burst) and for the runs after them (steady state).
 * - Runs per second and records per second count the runs the stand-in saw end, over the whole
 *   bench and over its steady state (after the first minute).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { fakeApi, freshDatabase, json, spawnTerapi, type ServerProcess } from '../test/support.ts';

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i > 0 ? Number(process.argv[i + 1]) : fallback;
  if (!(v >= 0)) throw new Error(`--${name} must be a number`);
  return v;
}
const MINUTES = option('minutes', 3);
const CONNECTIONS = option('connections', 1000);
const RECORDS = option('records', 30);
const PAGE = option('page', 10);
const DELAY_MS = option('delay', 5);
const SYNCS = ['contacts', 'deals'];
const ADMIN_URL = process.env.TERAPI_BENCH_DATABASE_URL ?? process.env.TERAPI_TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const SECRET = 'sk_bench_scale';
const root = new URL('..', import.meta.url).pathname;

const processes: ServerProcess[] = [];
let dropDatabase: (() => Promise<void>) | undefined;
const temp = mkdtempSync(join(tmpdir(), 'terapi-bench-scale-'));
process.on('exit', () => rmSync(temp, { recursive: true, force: true }));
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => void shutdown().finally(() => process.exit(130)));
}
// Bounded in time whatever happens: the setup, the minutes asked for, and the stop.
setTimeout(() => {
  console.error('bench/scale: still running well past its duration: stopped');
  void shutdown().finally(() => process.exit(1));
}, (MINUTES + 10) * 60_000).unref();

async function shutdown() {
  // A clean stop (within TERAPI_SHUTDOWN_TIMEOUT_SECONDS, 5 s here), then nothing left running.
  const killer = setTimeout(() => processes.forEach((p) => p.child.kill('SIGKILL')), 10_000);
  await Promise.all(processes.map((p) => p.stop('SIGTERM').catch(() => {})));
  clearTimeout(killer);
  await dropDatabase?.().catch((e) => console.error(`bench/scale: the database could not be dropped: ${(e as Error).message}`));
  dropDatabase = undefined;
}

/** The stand-in provider API: pages of records, and each run's begin and end seen per connection and sync. */
async function standIn() {
  const open = new Map<string, number>();
  const runCount = new Map<string, number>();
  const ended: { at: number; records: number }[] = [];
  const stats = { overlaps: 0, examples: [] as string[] };
  const pages = Math.ceil(RECORDS / PAGE);
  const api = await fakeApi(async (req, res) => {
    const url = new URL(req.url!, 'http://x');
    const key = `${req.headers['x-key']}/${url.pathname}`;
    const from = Number(url.searchParams.get('cursor') ?? 0);
    if (from === 0) {
      if (open.has(key)) {
        stats.overlaps++;
        if (stats.examples.length < 5) stats.examples.push(`${key}: a run began ${Date.now() - open.get(key)!} ms after another one that had not ended`);
      }
      open.set(key, Date.now());
      runCount.set(key, (runCount.get(key) ?? 0) + 1);
    }
    if (DELAY_MS) await new Promise((r) => setTimeout(r, DELAY_MS));
    // Every record changes at each run: each run writes all of them.
    const version = runCount.get(key) ?? 0;
    const items = Array.from({ length: Math.min(PAGE, RECORDS - from) }, (_, i) => ({ id: from + i + 1, name: `record ${from + i + 1} v${version}` }));
    const next = from + PAGE < RECORDS ? from + PAGE : null;
    if (next === null) {
      open.delete(key);
      ended.push({ at: Date.now(), records: RECORDS });
    }
    json(res, 200, { items, next });
  });
  return { ...api, open, ended, stats, pages };
}

const providerFile = (url: string) => `
display_name: Bench scale
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
api:
  base_url: ${url}
  credentials: { in: header, name: X-Key, value: "\${api_key}" }
syncs:
${SYNCS.map(
  (name) => `  ${name}:
    mode: full
    frequency: 1m
    request: { path: /${name} }
    pagination: { type: cursor, cursor: next, param: cursor, page_size: { param: limit, value: ${PAGE} } }
    records: items
    mapping: "{ 'id': id, 'name': name }"
    model: { name: ${name[0].toUpperCase()}${name.slice(1)} }`,
).join('\n')}
`;

/** CPU time (user + system, ms) a process has used so far, from /proc; 0 where there is none. */
function cpuMs(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}

const percentile = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN);
const seconds = (ms: number) => (Number.isNaN(ms) ? 'none' : `${(ms / 1000).toFixed(2)} s`);

async function main() {
  console.log(`bench/scale: ${CONNECTIONS} connections x ${SYNCS.length} syncs every minute, ${RECORDS} records a run in pages of ${PAGE} (${DELAY_MS} ms a page), ${MINUTES} min; 3 API processes, 2 workers; load average before: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  const db = await freshDatabase(ADMIN_URL, 'terapi_bench');
  dropDatabase = db.drop;
  const api = await standIn();
  const providers = join(temp, 'providers');
  mkdirSync(providers);
  writeFileSync(join(providers, 'bench.yaml'), providerFile(api.url));
  const env = { TERAPI_DATABASE_URL: db.url, TERAPI_SECRET_KEY: SECRET, TERAPI_DATA_DIR: temp, TERAPI_PROVIDERS_DIR: providers, TERAPI_SHUTDOWN_TIMEOUT_SECONDS: '5' };

  // Each kept as it starts: a start that fails later still stops those before it.
  const apis: ServerProcess[] = [];
  for (let i = 0; i < 3; i++) {
    apis.push(await spawnTerapi({ ...env, TERAPI_ROLE: 'api' }));
    processes.push(apis[i]);
  }
  // TERAPI_BENCH_WORKER_NODE_ARGS, such as "--cpu-prof --cpu-prof-dir=/tmp/prof", are given to the workers' node.
  const nodeArgs = (process.env.TERAPI_BENCH_WORKER_NODE_ARGS ?? '').split(' ').filter(Boolean);
  for (let i = 0; i < 2; i++) processes.push(await spawnTerapi(env, { command: [process.execPath, ...nodeArgs, join(root, 'server/bin.mjs'), 'worker'] }));

  const workers = processes.filter((p) => !apis.includes(p));
  const cpuNow = () => ({ api: apis.reduce((n, p) => n + cpuMs(p.child.pid), 0), workers: workers.reduce((n, p) => n + cpuMs(p.child.pid), 0) });
  // Started and idle: what comes after this is the bench's own.
  const cpuBefore = cpuNow();
  const created = await apis[0].call('POST', '/integration', { provider_config_key: 'bench', provider: 'bench' });
  if (created.status !== 200) throw new Error(`the integration was not created: ${created.text}`);
  const started = Date.now();
  let next = 0;
  let failed = 0;
  let firstFailure = '';
  await Promise.all(
    Array.from({ length: 25 }, async (_, lane) => {
      for (let i = next++; i < CONNECTIONS; i = next++) {
        const r = await apis[(lane + i) % apis.length].call('POST', '/connection', { connection_id: `c${i}`, provider_config_key: 'bench', credentials: { type: 'api_key', api_key: `c${i}` } });
        if (r.status !== 200 && !failed++) firstFailure = `HTTP ${r.status}: ${r.text}`;
      }
    }),
  );
  const createdMs = Date.now() - started;
  console.log(`connections made through the API: ${CONNECTIONS - failed} in ${seconds(createdMs)} (${((CONNECTIONS - failed) / (createdMs / 1000)).toFixed(0)}/s)${failed ? `, ${failed} failed` : ''}`);
  if (failed) throw new Error(`connections were refused; the first: ${firstFailure}`);

  const end = started + MINUTES * 60_000;
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, Math.min(15_000, end - Date.now())));
    const done = api.ended.length;
    console.log(`  ${seconds(Date.now() - started)}: ${done} runs ended, ${api.open.size} open, overlaps ${api.stats.overlaps}`);
  }
  const finished = Date.now();

  // What the queue holds: when each scheduled run was due, and when a worker took it.
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  const { rows } = await client.query<{ due: string; started: string }>(
    `SELECT (data ->> 'due_ms')::bigint AS due, (extract(epoch FROM started_on) * 1000)::bigint AS started FROM pgboss.job
     WHERE name = 'terapi-sync-run' AND data ->> 'reason' = 'schedule' AND started_on IS NOT NULL AND started_on <= to_timestamp($1 / 1000.0)`,
    [finished],
  );
  const waiting = (await client.query(`SELECT count(*) AS n FROM pgboss.job WHERE name = 'terapi-sync-run' AND state < 'active'`)).rows[0].n;
  await client.end();
  const openAtEnd = api.open.size;
  const cpuAfter = cpuNow();
  const cpu = { api: cpuAfter.api - cpuBefore.api, workers: cpuAfter.workers - cpuBefore.workers };
  await shutdown();

  const jobs = rows.map((r) => ({ due: Number(r.due), lag: Number(r.started) - Number(r.due) }));
  // The first runs were all due as their connection was made; the later ones a minute apart each.
  const first = jobs.filter((j) => j.due < started + createdMs + 1000).map((j) => j.lag).sort((a, b) => a - b);
  const steady = jobs.filter((j) => j.due >= started + createdMs + 1000).map((j) => j.lag).sort((a, b) => a - b);
  const window = (from: number) => {
    const runs = api.ended.filter((e) => e.at >= from && e.at <= finished);
    const s = (finished - from) / 1000;
    return { runs: runs.length, runsPerSecond: runs.length / s, recordsPerSecond: runs.reduce((n, e) => n + e.records, 0) / s };
  };
  const all = window(started);
  const late = window(started + 60_000);
  // The busiest 10 seconds: what the workers did when more was due than they could start at once.
  const ends = api.ended.map((e) => e.at).sort((a, b) => a - b);
  let peak = 0;
  for (let i = 0, j = 0; i < ends.length; i++) {
    while (ends[i] - ends[j] > 10_000) j++;
    peak = Math.max(peak, i - j + 1);
  }
  const expected = (CONNECTIONS * SYNCS.length * (finished - started)) / 60_000;

  console.log(`\nresults (${MINUTES} min, ${CONNECTIONS} connections, ${SYNCS.length} syncs each, 1-minute schedule):`);
  console.log(`  schedule lag, first runs (${first.length}, all due at creation):  p50 ${seconds(percentile(first, 50))}  p99 ${seconds(percentile(first, 99))}`);
  console.log(`  schedule lag, later runs (${steady.length}, each a minute after the last): p50 ${seconds(percentile(steady, 50))}  p99 ${seconds(percentile(steady, 99))}  max ${seconds(steady.at(-1) ?? NaN)}`);
  console.log(`  runs: ${all.runs} ended (a perfect schedule: about ${expected.toFixed(0)}), ${all.runsPerSecond.toFixed(1)} runs/s, ${all.recordsPerSecond.toFixed(0)} records/s written`);
  console.log(`  busiest 10 seconds: ${(peak / 10).toFixed(1)} runs/s`);
  if (MINUTES > 1) console.log(`  after the first minute: ${late.runs} runs, ${late.runsPerSecond.toFixed(1)} runs/s, ${late.recordsPerSecond.toFixed(0)} records/s written`);
  console.log(`  runs queued and not started at the end: ${waiting}; runs open at the end: ${openAtEnd}`);
  console.log(`  overlaps (two runs of one connection and sync at once): ${api.stats.overlaps}`);
  console.log(`  CPU time after start: workers ${(cpu.workers / 1000).toFixed(1)} s (${(cpu.workers / Math.max(1, all.runs)).toFixed(1)} ms a run), API processes ${(cpu.api / 1000).toFixed(1)} s`);
  console.log(`  load average after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  if (api.stats.overlaps > 0) {
    for (const e of api.stats.examples) console.error(`  overlap: ${e}`);
    throw new Error(`${api.stats.overlaps} runs overlapped another of the same connection and sync`);
  }
  await api.close();
}

main().then(
  () => process.exit(0),
  async (e) => {
    console.error(`bench/scale failed: ${(e as Error).message}`);
    await shutdown();
    process.exit(1);
  },
);
