/**
 * A worker stopped by its process manager midway through a long sync run, on PostgreSQL with real
 * processes: it takes no new job, hands its run back (marked interrupted, queued again) and exits 0
 * within TERAPI_SHUTDOWN_TIMEOUT_SECONDS (plus the second the stop keeps to close the store);
 * another worker resumes the run from its last stored page and ends with the exact record set.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { fakeApi, freshDatabase, json, pgSkip, providersDir, spawnTerapi, tempDir, waitFor, type Spawned } from './support.ts';

const SECRET = 'sk_worker_stop';
const TOTAL = 50;
const PAGE = 5;
const BOUND_SECONDS = 3;

const provider = (url: string) => `
display_name: Slow items
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
api:
  base_url: ${url}
  credentials: { in: header, name: X-Key, value: "\${api_key}" }
syncs:
  items:
    mode: full
    auto_start: false
    request: { path: /items }
    pagination: { type: cursor, cursor: next, param: cursor, page_size: { param: limit, value: ${PAGE} } }
    records: items
    mapping: "{ 'id': id, 'name': name }"
    model: { name: Item }
`;


describe('a worker stopped midway through a run, on PostgreSQL', { skip: pgSkip }, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let api: Awaited<ReturnType<typeof fakeApi>>;
  let providers: string;
  let server: Spawned;
  const state = { delayMs: 0 };
  const dataDir = tempDir('terapi-worker-stop-');
  const processes: Spawned[] = [];
  const env = (extra: Record<string, string>) => ({ TERAPI_DATABASE_URL: db.url, TERAPI_SECRET_KEY: SECRET, TERAPI_DATA_DIR: dataDir, TERAPI_PROVIDERS_DIR: providers, ...extra });
  const spawn = async (extra: Record<string, string>, how: Parameters<typeof spawnTerapi>[1] = {}) => {
    const s = await spawnTerapi(env(extra), how);
    processes.push(s);
    return s;
  };

  before(async () => {
    db = await freshDatabase();
    api = await fakeApi(async (req, res) => {
      const url = new URL(req.url!, 'http://x');
      await new Promise((r) => setTimeout(r, state.delayMs));
      const from = Number(url.searchParams.get('cursor') ?? 0);
      const items = Array.from({ length: TOTAL }, (_, i) => ({ id: i + 1, name: `item ${i + 1}` }));
      json(res, 200, { items: items.slice(from, from + PAGE), next: from + PAGE < TOTAL ? from + PAGE : null });
    });
    providers = providersDir({ slow: provider(api.url) });
    server = await spawn({ TERAPI_ROLE: 'api' });
    assert.equal((await server.call('POST', '/integration', { provider_config_key: 'slow', provider: 'slow' })).status, 200);
  });
  after(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    await api?.close();
    await db?.drop();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(providers, { recursive: true, force: true });
  });

  const ways = [
    { name: '`terapi worker`, SIGTERM to its process', how: { command: [process.execPath, 'server/bin.mjs', 'worker'] }, env: {} as Record<string, string> },
    { name: '`npm start` with TERAPI_ROLE=all, SIGTERM to its process group', how: { command: ['npm', 'start', '--silent'], group: true }, env: { TERAPI_ROLE: 'all' } },
  ];
  for (const [i, way] of ways.entries()) {
    test(`${way.name}: it exits within the bound, and another worker finishes the run with the exact records`, async () => {
      const connection = `c${i}`;
      const status = async () => (await server.call('GET', `/sync/${connection}/items?provider_config_key=slow`)).body;
      const first = await spawn({ ...way.env, TERAPI_SHUTDOWN_TIMEOUT_SECONDS: String(BOUND_SECONDS) }, way.how);
      assert.equal((await server.call('POST', '/connection', { connection_id: connection, provider_config_key: 'slow', credentials: { type: 'api_key', api_key: 'k' } })).status, 200);
      // 10 pages at 500 ms: about 5 s, longer than the 1 s the bound leaves a run to finish.
      state.delayMs = 500;
      assert.equal((await server.call('POST', '/sync/trigger', { provider_config_key: 'slow', connection_id: connection, syncs: ['items'] })).status, 200);
      await waitFor('two pages stored', async () => ((await status())?.last_run?.pages >= 2 ? true : undefined));

      const signalled = Date.now();
      await first.stop('SIGTERM');
      const ms = Date.now() - signalled;
      assert.equal(first.exitCode(), 0, first.output());
      assert.ok(ms < (BOUND_SECONDS + 1) * 1000 + 500, `exited ${ms} ms after the signal`);
      assert.match(first.output(), /sync run handed back/);
      const handedBack = await status();
      assert.equal(handedBack.last_run.outcome, 'interrupted');
      assert.ok(handedBack.last_run.pages < TOTAL / PAGE, 'the run was stopped, not finished');

      state.delayMs = 0;
      const second = await spawn({ TERAPI_ROLE: 'worker' });
      const done = await waitFor('another worker to finish the run', async () => {
        const s = await status();
        return s?.last_run?.outcome === 'success' ? s : undefined;
      });
      assert.equal(done.last_run.resumes.outcome, 'interrupted');
      assert.ok(done.last_run.added < TOTAL, 'resumed from the checkpoint, not started over');
      assert.equal(done.records_count, TOTAL);
      const r = await server.call('GET', `/records?provider_config_key=slow&connection_id=${connection}&model=Item&limit=1000`);
      assert.equal(r.status, 200);
      assert.deepEqual(r.body.records.map((x: any) => x.id).sort((a: number, b: number) => a - b), Array.from({ length: TOTAL }, (_, k) => k + 1));
      assert.ok(r.body.records.every((x: any) => x._terapi_metadata.last_action === 'added' && x._terapi_metadata.deleted_at === null));
      // The next case's run must go to its own first worker.
      await second.stop('SIGTERM');
      assert.equal(second.exitCode(), 0);
    });
  }
});

/** A stop during a webhook delivery: the delivery finishes within the bound and is not sent again after a restart. */
function deliveryInFlight(name: string, database: () => Promise<{ url?: string; drop: () => Promise<void> }>, skip: string | false = false) {
  test(`a webhook delivery in flight at SIGTERM finishes, and is not sent again after a restart (${name})`, { skip }, async () => {
    const db = await database();
    const got: { id: string; done: boolean }[] = [];
    let arrived: () => void = () => {};
    const app = await fakeApi(async (req, res) => {
      const delivery = { id: String(req.headers['x-terapi-delivery']), done: false };
      got.push(delivery);
      arrived();
      await new Promise((r) => setTimeout(r, 2000));
      delivery.done = true;
      res.writeHead(204).end();
    });
    const dataDir = tempDir('terapi-delivery-stop-');
    const providers = providersDir({ slow: provider('http://127.0.0.1:9') });
    const env = {
      ...(db.url ? { TERAPI_DATABASE_URL: db.url } : {}),
      TERAPI_SECRET_KEY: SECRET,
      TERAPI_DATA_DIR: dataDir,
      TERAPI_PROVIDERS_DIR: providers,
      TERAPI_WEBHOOK_URL: `${app.url}/hooks`,
      TERAPI_WEBHOOK_RETRY_SECONDS: '0.2',
      TERAPI_SHUTDOWN_TIMEOUT_SECONDS: String(BOUND_SECONDS + 2),
    };
    let s = await spawnTerapi(env);
    try {
      const reached = new Promise<void>((r) => (arrived = r));
      assert.equal((await s.call('POST', '/integration', { provider_config_key: 'slow', provider: 'slow' })).status, 200);
      assert.equal((await s.call('POST', '/connection', { connection_id: 'hooked', provider_config_key: 'slow', credentials: { type: 'api_key', api_key: 'k' } })).status, 200);
      await reached;
      const signalled = Date.now();
      await s.stop('SIGTERM');
      assert.equal(s.exitCode(), 0, s.output());
      assert.ok(Date.now() - signalled < (BOUND_SECONDS + 3) * 1000 + 500);
      assert.deepEqual(got.map((g) => g.done), [true], 'the delivery in flight was answered before the process ended');
      assert.match(s.output(), /webhook delivered/);
      s = await spawnTerapi(env);
      // Retries come every 0.2 s or so: a delivery left in hand would be sent again by now.
      await new Promise((r) => setTimeout(r, 3000));
      assert.equal(got.length, 1, `deliveries: ${got.map((g) => g.id).join(', ')}`);
    } finally {
      await s.stop('SIGKILL');
      await app.close();
      await db.drop();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(providers, { recursive: true, force: true });
    }
  });
}

deliveryInFlight('embedded', async () => ({ drop: async () => {} }));
deliveryInFlight('postgres', () => freshDatabase(), pgSkip);
