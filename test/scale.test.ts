/**
 * Syncs at scale on PostgreSQL, with real processes: runs on schedule, pause and resume, one run at
 * a time under triggers from two servers, a worker SIGKILLed midway whose run another worker
 * finishes, and webhooks signed, retried while the app is down, and delivered after a restart.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { rmSync } from 'node:fs';
import { fakeApi, freshDatabase, json, pgSkip, providersDir, spawnTerapi, tempDir, type Spawned } from './support.ts';

const SECRET = 'sk_scale_test';
const TOTAL = 40;
const PAGE = 5;

/** A paginated API that records when each run's first page was asked for and how many requests overlap. */
async function itemsApi() {
  const state = { delayMs: 0, inFlight: 0, maxInFlight: 0, firstPages: [] as { connection: string; at: number }[] };
  const api = await fakeApi(async (req, res) => {
    const url = new URL(req.url!, 'http://x');
    const connection = String(req.headers['x-key']);
    const sync = url.searchParams.get('kind') ?? 'items';
    // Overlap is counted for the manual sync, the one the tests trigger.
    const counted = sync === 'manual';
    if (counted) state.maxInFlight = Math.max(state.maxInFlight, ++state.inFlight);
    if (!url.searchParams.get('cursor')) state.firstPages.push({ connection: `${connection}/${sync}`, at: Date.now() });
    await new Promise((r) => setTimeout(r, state.delayMs));
    if (counted) state.inFlight--;
    const from = Number(url.searchParams.get('cursor') ?? 0);
    const items = Array.from({ length: TOTAL }, (_, i) => ({ id: i + 1, name: `item ${i + 1}` }));
    json(res, 200, { items: items.slice(from, from + PAGE), next: from + PAGE < TOTAL ? from + PAGE : null });
  });
  return { ...api, state };
}

const file = (url: string, frequency: string) => `
display_name: Tick
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
api:
  base_url: ${url}
  credentials: { in: header, name: X-Key, value: "\${api_key}" }
syncs:
  items:
    mode: full
    frequency: ${frequency}
    request: { path: /items }
    pagination: { type: cursor, cursor: next, param: cursor, page_size: { param: limit, value: ${PAGE} } }
    records: items
    mapping: "{ 'id': id, 'name': name }"
    model: { name: Item }
  manual:
    mode: full
    auto_start: false
    request: { path: /items, params: { kind: manual } }
    pagination: { type: cursor, cursor: next, param: cursor, page_size: { param: limit, value: ${PAGE} } }
    records: items
    mapping: "{ 'id': id, 'name': name }"
    model: { name: Manual }
`;

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, ms = 30_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function records(s: Spawned, connection: string, model = 'Item') {
  const r = await s.call('GET', `/records?provider_config_key=tick&connection_id=${connection}&model=${model}&limit=1000`);
  assert.equal(r.status, 200);
  return r.body.records as any[];
}

describe('syncs at scale on PostgreSQL', { skip: pgSkip }, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let api: Awaited<ReturnType<typeof itemsApi>>;
  let providers: string;
  const dataDir = tempDir('terapi-scale-');
  const processes: Spawned[] = [];
  const env = (extra: Record<string, string> = {}) => ({ TERAPI_DATABASE_URL: db.url, TERAPI_SECRET_KEY: SECRET, TERAPI_DATA_DIR: dataDir, TERAPI_PROVIDERS_DIR: providers, TERAPI_SYNC_LEASE_SECONDS: '2', ...extra });
  const spawn = async (extra: Record<string, string> = {}) => {
    const s = await spawnTerapi(env(extra));
    processes.push(s);
    return s;
  };
  const connect = async (s: Spawned, id: string) => {
    const r = await s.call('POST', '/connection', { connection_id: id, provider_config_key: 'tick', credentials: { type: 'api_key', api_key: id } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  };

  before(async () => {
    db = await freshDatabase();
    api = await itemsApi();
    providers = providersDir({ tick: file(api.url, '2s') });
  });
  after(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    await api?.close();
    await db?.drop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('a new connection starts its sync, which then runs on its schedule; pause stops it, start resumes it', async () => {
    const server = await spawn({ TERAPI_ROLE: 'api' });
    await spawn({ TERAPI_ROLE: 'worker' });
    assert.equal((await server.call('POST', '/integration', { provider_config_key: 'tick', provider: 'tick' })).status, 200);
    const created = Date.now();
    await connect(server, 'sched');
    const runs = () => api.state.firstPages.filter((p) => p.connection === 'sched/items').map((p) => p.at);
    await waitFor('three scheduled runs', () => (runs().length >= 3 ? true : undefined), 20_000);
    const at = runs();
    // Due at once (the first run also starts the worker's thread), then every 2 s: each run starts
    // within a second and a half of when it was due.
    assert.ok(at[0] - created < 4000, `first run ${at[0] - created} ms after the connection`);
    for (let i = 1; i < at.length; i++) assert.ok(Math.abs(at[i] - at[i - 1] - 2000) < 1500, `run ${i + 1} came ${at[i] - at[i - 1]} ms after the one before`);
    let status = (await server.call('GET', '/sync/sched/items?provider_config_key=tick')).body;
    assert.equal(status.records_count, TOTAL);
    assert.ok(status.next_sync_date);

    assert.equal((await server.call('POST', '/sync/pause', { provider_config_key: 'tick', connection_id: 'sched', syncs: ['items'] })).body.syncs[0].status, 'paused');
    await waitFor('the run in progress to end', async () => ((await server.call('GET', '/sync/sched/items?provider_config_key=tick')).body.status === 'paused' ? true : undefined));
    const paused = runs().length;
    await new Promise((r) => setTimeout(r, 5000));
    assert.equal(runs().length, paused, 'no run while paused');
    status = (await server.call('GET', '/sync/sched/items?provider_config_key=tick')).body;
    assert.equal(status.status, 'paused');
    assert.equal(status.next_sync_date, undefined);

    assert.equal((await server.call('POST', '/sync/start', { provider_config_key: 'tick', connection_id: 'sched', syncs: ['items'] })).body.syncs[0].status, 'scheduled');
    await waitFor('a run after the start', () => (runs().length > paused ? true : undefined), 5000);
    await server.call('POST', '/sync/pause', { provider_config_key: 'tick', connection_id: 'sched', syncs: ['items'] });
  });

  test('concurrent triggers through two servers: one run at a time, never two at once', async () => {
    const [a] = processes;
    const b = await spawn({ TERAPI_ROLE: 'api' });
    await connect(a, 'busy');
    await a.call('POST', '/sync/pause', { provider_config_key: 'tick', connection_id: 'busy', syncs: ['items'] });
    api.state.delayMs = 60;
    api.state.maxInFlight = 0;
    const before = api.state.firstPages.filter((p) => p.connection === 'busy/manual').length;
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).call('POST', '/sync/trigger', { provider_config_key: 'tick', connection_id: 'busy', syncs: ['manual'] })));
    assert.ok(answers.every((r) => r.status === 200));
    await waitFor('the runs to end', async () => {
      const s = (await a.call('GET', '/sync/busy/manual?provider_config_key=tick')).body;
      return s.status !== 'running' && api.state.inFlight === 0 ? true : undefined;
    });
    await new Promise((r) => setTimeout(r, 1500));
    await waitFor('the runs to end', async () => ((await a.call('GET', '/sync/busy/manual?provider_config_key=tick')).body.status !== 'running' ? true : undefined));
    api.state.delayMs = 0;
    assert.equal(api.state.maxInFlight, 1, 'two runs of one sync never overlap');
    const started = api.state.firstPages.filter((p) => p.connection === 'busy/manual').length - before;
    // 20 triggers: one runs, at most one more waits in the queue behind it.
    assert.ok(started >= 1 && started <= 2, `${started} runs for 20 triggers`);
    assert.equal((await records(a, 'busy', 'Manual')).length, TOTAL);
  });

  test('a worker SIGKILLed midway: another worker finishes its run, with the exact records', async () => {
    const [server, first] = processes;
    await connect(server, 'killed');
    await server.call('POST', '/sync/pause', { provider_config_key: 'tick', connection_id: 'killed', syncs: ['items'] });
    api.state.delayMs = 300;
    assert.equal((await server.call('POST', '/sync/trigger', { provider_config_key: 'tick', connection_id: 'killed', syncs: ['manual'] })).status, 200);
    await waitFor('two pages stored', async () => ((await server.call('GET', '/sync/killed/manual?provider_config_key=tick')).body?.last_run?.pages >= 2 ? true : undefined));
    await first.stop('SIGKILL');
    api.state.delayMs = 0;
    await spawn({ TERAPI_ROLE: 'worker' });
    // Counted from when the new worker is up: starting a process is not picking up a job.
    const killedAt = Date.now();
    const done = await waitFor('another worker to finish the run', async () => {
      const s = (await server.call('GET', '/sync/killed/manual?provider_config_key=tick')).body;
      return s.last_run?.outcome === 'success' ? s : undefined;
    });
    assert.ok(Date.now() - killedAt < 15_000, 'picked up within the lease and a tick');
    assert.equal(done.last_run.resumes.outcome, 'interrupted');
    const all = await records(server, 'killed', 'Manual');
    assert.deepEqual(all.map((r) => r.id).sort((x, y) => x - y), Array.from({ length: TOTAL }, (_, i) => i + 1));
    assert.ok(all.every((r) => r._terapi_metadata.last_action === 'added'));
    assert.equal(done.records_count, TOTAL);
    assert.ok(done.last_run.added < TOTAL, 'resumed, not started over');
  });
});

/** A receiver for webhooks that refuses while `down`, and checks every signature. */
async function receiver() {
  const state = { down: true, refused: 0, got: [] as { id: string; body: any; valid: boolean }[] };
  const app = await fakeApi((req, res) => {
    if (state.down) {
      state.refused++;
      res.writeHead(503).end();
      return;
    }
    const timestamp = String(req.headers['x-terapi-timestamp']);
    const raw = JSON.stringify(req.body);
    const expected = `sha256=${createHmac('sha256', SECRET).update(`${timestamp}.${raw}`).digest('hex')}`;
    state.got.push({ id: String(req.headers['x-terapi-delivery']), body: req.body, valid: req.headers['x-terapi-signature'] === expected && Math.abs(Date.now() / 1000 - Number(timestamp)) < 300 });
    res.writeHead(204).end();
  });
  return { ...app, state };
}

function webhookSuite(name: string, database: () => Promise<{ url?: string; drop: () => Promise<void> }>, skip: string | false = false) {
  describe(`webhooks (${name})`, { skip }, () => {
    test('signed, retried while the app is down, delivered once it is up even after a restart', async () => {
      const db = await database();
      const api = await itemsApi();
      const app = await receiver();
      const dataDir = tempDir('terapi-webhooks-');
      const env = {
        ...(db.url ? { TERAPI_DATABASE_URL: db.url } : {}),
        TERAPI_SECRET_KEY: SECRET,
        TERAPI_DATA_DIR: dataDir,
        TERAPI_PROVIDERS_DIR: providersDir({ tick: file(api.url, '1h') }),
        TERAPI_WEBHOOK_URL: `${app.url}/hooks`,
        TERAPI_WEBHOOK_RETRY_SECONDS: '0.3',
      };
      let server = await spawnTerapi(env);
      try {
        await server.call('POST', '/integration', { provider_config_key: 'tick', provider: 'tick' });
        await server.call('POST', '/connection', { connection_id: 'w1', provider_config_key: 'tick', credentials: { type: 'api_key', api_key: 'w1' } });
        await waitFor('the first run', async () => ((await server.call('GET', '/sync/w1/items?provider_config_key=tick')).body?.status === 'success' ? true : undefined));
        await waitFor('attempts refused while the app is down', () => (app.state.refused >= 3 ? true : undefined));
        await server.stop('SIGTERM');
        app.state.down = false;
        server = await spawnTerapi(env);
        const events = await waitFor('both events after the restart', () => {
          const types = new Set(app.state.got.map((g) => g.body.type));
          return types.has('connection.created') && types.has('sync.changed') ? app.state.got : undefined;
        });
        assert.ok(events.every((e) => e.valid), 'every delivery carries a valid signature');
        const changed = events.find((e) => e.body.type === 'sync.changed')!.body;
        assert.equal(changed.provider_config_key, 'tick');
        assert.equal(changed.connection_id, 'w1');
        assert.equal(changed.model, 'Item');
        assert.equal(changed.added, TOTAL);
        // The changes are read from modified_after.
        const page = await server.call('GET', `/records?provider_config_key=tick&connection_id=w1&model=Item&limit=1000&modified_after=${encodeURIComponent(changed.modified_after)}`);
        assert.equal(page.body.records.length, TOTAL);
        // At least once, and each delivery id once at the receiver here (it answered 2xx the first time it was up).
        assert.equal(new Set(events.map((e) => e.id)).size, events.length);
      } finally {
        await server.stop('SIGKILL');
        await api.close();
        await app.close();
        await db.drop();
        rmSync(dataDir, { recursive: true, force: true });
      }
    });
  });
}

webhookSuite('embedded', async () => ({ drop: async () => {} }));
webhookSuite('postgres', async () => freshDatabase(), pgSkip);
