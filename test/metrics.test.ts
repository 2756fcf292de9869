/**
 * GET /metrics as Prometheus scrapes it: behind the secret key, requests counted by route pattern
 * (never a raw path with ids) and status, token refreshes by provider, sync runs and the records
 * they wrote, webhook deliveries by outcome; on PostgreSQL the queue depth and schedule lag read
 * from the database (the same on every server), and a worker process's own counters.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { OAuth2Server } from 'oauth2-mock-server';
import { fakeApi, freshDatabase, json, pgSkip, providersDir, spawnTerapi, startTerapi, tempDir, waitFor, type Running, type Spawned } from './support.ts';

const TOTAL = 12;
const PAGE = 5;

/** Every sample of the exposition text: name, labels, value. */
function samples(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of one sample whose labels include `labels`; undefined when there is none. */
function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  return samples(text).find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

async function scrape(call: Running['call']): Promise<string> {
  const r = await call('GET', '/metrics');
  assert.equal(r.status, 200, r.text);
  assert.match(String(r.headers.get('content-type')), /^text\/plain; version=0\.0\.4/);
  return r.text;
}


const itemsProvider = (url: string, auth = 'auth: { mode: api_key }\napi:\n  base_url: URL\n  credentials: { in: header, name: X-Key, value: "${api_key}" }') => `
display_name: Items
categories: [testing]
docs: https://example.com/docs
${auth.replace('URL', url)}
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

/** A paginated API of TOTAL items; `count` of them while it is lowered (a full run then deletes the rest). */
async function itemsApi() {
  const state = { count: TOTAL };
  const api = await fakeApi((req, res) => {
    const url = new URL(req.url!, 'http://x');
    const from = Number(url.searchParams.get('cursor') ?? 0);
    const items = Array.from({ length: state.count }, (_, i) => ({ id: i + 1, name: `item ${i + 1}` }));
    json(res, 200, { items: items.slice(from, from + PAGE), next: from + PAGE < state.count ? from + PAGE : null });
  });
  return { ...api, state };
}

describe('GET /metrics (embedded)', () => {
  let t: Running;
  let api: Awaited<ReturnType<typeof itemsApi>>;
  let oauth: OAuth2Server;
  let hooks: Awaited<ReturnType<typeof fakeApi>>;
  const app = { refuse: 2 };
  let providers: string;

  before(async () => {
    api = await itemsApi();
    oauth = new OAuth2Server();
    await oauth.issuer.keys.generate('RS256');
    await oauth.start(0, '127.0.0.1');
    const oauthUrl = oauth.issuer.url!.replace(/\/$/, '');
    oauth.service.on('beforeResponse', (res: any) => {
      if (res.body.access_token) res.body.access_token = `at-${randomUUID()}`;
    });
    // The app's webhook receiver: refuses the first deliveries, then takes them.
    hooks = await fakeApi((_req, res) => {
      if (app.refuse-- > 0) res.writeHead(503).end();
      else res.writeHead(204).end();
    });
    providers = providersDir({
      items: itemsProvider(api.url),
      mockoauth: `display_name: Mock OAuth\ncategories: [testing]\ndocs: https://example.com/docs\nauth:\n  mode: oauth2\n  authorization_url: ${oauthUrl}/authorize\n  token_url: ${oauthUrl}/token\napi: { base_url: "${oauthUrl}" }\n`,
    });
    t = await startTerapi({ providersDirs: [providers], env: { TERAPI_WEBHOOK_URL: `${hooks.url}/hooks`, TERAPI_WEBHOOK_RETRY_SECONDS: '0.2' } });
  });
  after(async () => {
    await t?.close();
    await api?.close();
    await hooks?.close();
    await oauth?.stop();
    rmSync(providers, { recursive: true, force: true });
  });

  test('behind the secret key', async () => {
    const r = await fetch(`${t.url}/metrics`);
    assert.equal(r.status, 401);
    assert.equal((await r.json()).error, 'unauthorized');
    const wrong = await fetch(`${t.url}/metrics`, { headers: { authorization: 'Bearer sk_wrong' } });
    assert.equal(wrong.status, 401);
  });

  test('requests by route pattern and status, with durations; never a raw path', async () => {
    await t.call('POST', '/integration', { provider_config_key: 'items', provider: 'items' });
    for (let i = 0; i < 3; i++) assert.equal((await t.call('GET', `/connection/secret-id-${i}?provider_config_key=items`)).status, 404);
    assert.equal((await t.call('GET', '/no/such/path/id-7')).status, 404);
    const text = await scrape(t.call);
    const route = { method: 'GET', route: '/connection/:connection_id', status: '404' };
    assert.equal(metric(text, 'terapi_http_request_duration_seconds_count', route), 3);
    assert.ok(metric(text, 'terapi_http_request_duration_seconds_sum', route)! > 0);
    assert.equal(metric(text, 'terapi_http_request_duration_seconds_bucket', { ...route, le: '+Inf' }), 3);
    assert.equal(metric(text, 'terapi_http_request_duration_seconds_count', { method: 'POST', route: '/integration', status: '200' }), 1);
    assert.equal(metric(text, 'terapi_http_request_duration_seconds_count', { method: 'GET', route: 'unmatched', status: '404' }), 1);
    assert.doesNotMatch(text, /secret-id|id-7/, 'no raw path reaches a label');
    // The scrape before counts too, under its own route.
    assert.ok(text.includes('process_cpu_user_seconds_total'), 'process metrics');
  });

  test('sync runs by outcome, records written by action, webhook deliveries by outcome', async () => {
    assert.equal((await t.call('POST', '/connection', { connection_id: 'c1', provider_config_key: 'items', credentials: { type: 'api_key', api_key: 'k' } })).status, 200);
    const trigger = () => t.call('POST', '/sync/trigger', { provider_config_key: 'items', connection_id: 'c1', syncs: ['items'] });
    const runs = async (n: number) => waitFor(`${n} runs`, async () => ((metric(await scrape(t.call), 'terapi_sync_runs_total', { outcome: 'success' }) ?? 0) >= n ? true : undefined));
    await trigger();
    await runs(1);
    api.state.count = TOTAL - 3;
    await trigger();
    await runs(2);
    const text = await waitFor('the deliveries', async () => {
      const s = await scrape(t.call);
      return (metric(s, 'terapi_webhook_deliveries_total', { outcome: 'delivered' }) ?? 0) >= 3 ? s : undefined;
    });
    assert.equal(metric(text, 'terapi_sync_runs_total', { outcome: 'success' }), 2);
    assert.equal(metric(text, 'terapi_sync_runs_total', { outcome: 'error' }), 0);
    assert.equal(metric(text, 'terapi_sync_records_total', { action: 'added' }), TOTAL);
    assert.equal(metric(text, 'terapi_sync_records_total', { action: 'updated' }), 0);
    assert.equal(metric(text, 'terapi_sync_records_total', { action: 'deleted' }), 3);
    assert.equal(metric(text, 'terapi_sync_run_duration_seconds_count'), 2);
    // connection.created and two sync.changed: the first two attempts were refused with a 503.
    assert.equal(metric(text, 'terapi_webhook_deliveries_total', { outcome: 'refused' }), 2);
    assert.equal(metric(text, 'terapi_webhook_deliveries_total', { outcome: 'delivered' }), 3);
    assert.equal(metric(text, 'terapi_job_queue_depth', { queue: 'terapi-sync-run' }), 0);
  });

  test('token refreshes and failures by provider', async () => {
    await t.call('POST', '/integration', { provider_config_key: 'oa', provider: 'mockoauth', oauth_client_id: 'id', oauth_client_secret: 'secret' });
    const expired = (id: string) => t.call('POST', '/connection', { connection_id: id, provider_config_key: 'oa', credentials: { type: 'oauth2', access_token: 'old', refresh_token: `rt-${id}`, expires_at: new Date(Date.now() - 1000).toISOString() } });
    await expired('fine');
    await expired('revoked');
    assert.equal((await t.call('GET', '/auth/token/oa/fine')).status, 200);
    oauth.service.once('beforeResponse', (res: any) => {
      res.statusCode = 400;
      res.body = { error: 'invalid_grant' };
    });
    assert.equal((await t.call('GET', '/auth/token/oa/revoked')).status, 424);
    const text = await scrape(t.call);
    assert.equal(metric(text, 'terapi_token_refreshes_total', { provider: 'mockoauth', outcome: 'success' }), 1);
    assert.equal(metric(text, 'terapi_token_refreshes_total', { provider: 'mockoauth', outcome: 'needs_reauth' }), 1);
    assert.equal(metric(text, 'terapi_http_request_duration_seconds_count', { method: 'GET', route: '/auth/token/:provider_config_key/:connection_id', status: '424' }), 1);
  });
});

describe('GET /metrics on PostgreSQL', { skip: pgSkip }, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let api: Awaited<ReturnType<typeof itemsApi>>;
  let providers: string;
  const dataDir = tempDir('terapi-metrics-');
  const processes: Spawned[] = [];
  const secret = 'sk_metrics_test';

  before(async () => {
    db = await freshDatabase();
    api = await itemsApi();
    providers = providersDir({ items: itemsProvider(api.url).replace('auto_start: false', 'frequency: 1h') });
  });
  after(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    await api?.close();
    await db?.drop();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(providers, { recursive: true, force: true });
  });

  const spawn = async (role: string) => {
    const s = await spawnTerapi({ TERAPI_DATABASE_URL: db.url, TERAPI_SECRET_KEY: secret, TERAPI_DATA_DIR: dataDir, TERAPI_PROVIDERS_DIR: providers, TERAPI_ROLE: role });
    processes.push(s);
    return s;
  };

  test('queue depth and schedule lag come from the database, the same on every server; a worker process exposes its own counters', async () => {
    const [a, b] = [await spawn('api'), await spawn('api')];
    assert.equal((await a.call('POST', '/integration', { provider_config_key: 'items', provider: 'items' })).status, 200);
    // No worker yet: the new connection's sync is due at once and waits; a trigger of another waits in the queue.
    const created = Date.now();
    for (const id of ['p1', 'p2']) assert.equal((await a.call('POST', '/connection', { connection_id: id, provider_config_key: 'items', credentials: { type: 'api_key', api_key: id } })).status, 200);
    await a.call('POST', '/sync/pause', { provider_config_key: 'items', connection_id: 'p2', syncs: ['items'] });
    assert.equal((await b.call('POST', '/sync/trigger', { provider_config_key: 'items', connection_id: 'p2', syncs: ['items'] })).status, 200);
    await new Promise((r) => setTimeout(r, 1500));
    const [ta, tb] = [await scrape(a.call), await scrape(b.call)];
    for (const text of [ta, tb]) {
      assert.equal(metric(text, 'terapi_job_queue_depth', { queue: 'terapi-sync-run' }), 1, 'the triggered run waits, seen from either server');
      const lag = metric(text, 'terapi_schedule_lag_seconds')!;
      assert.ok(lag >= 1.4 && lag <= (Date.now() - created) / 1000 + 0.1, `schedule lag ${lag} s`);
    }
    // The API servers ran nothing: their run counters stay at 0.
    assert.equal(metric(ta, 'terapi_sync_runs_total', { outcome: 'success' }), 0);

    const worker = await spawn('worker');
    await waitFor('both runs on the worker', async () => ((metric(await scrape(worker.call), 'terapi_sync_runs_total', { outcome: 'success' }) ?? 0) >= 2 ? true : undefined));
    const tw = await scrape(worker.call);
    assert.equal(metric(tw, 'terapi_sync_records_total', { action: 'added' }), 2 * TOTAL, "the run threads' pages counted in the worker process");
    assert.equal(metric(tw, 'terapi_sync_start_lag_seconds_count'), 1, 'the scheduled run (the triggered one has no due time)');
    assert.ok(metric(tw, 'terapi_sync_start_lag_seconds_sum')! >= 1.4);
    const after = await scrape(a.call);
    assert.equal(metric(after, 'terapi_job_queue_depth', { queue: 'terapi-sync-run' }), 0);
    assert.equal(metric(after, 'terapi_schedule_lag_seconds'), 0, 'nothing waits once the worker took both');
    assert.equal(metric(after, 'terapi_sync_runs_total', { outcome: 'success' }), 0, 'counters are per process');
  });
});
