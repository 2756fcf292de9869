/**
 * The operations log (GET /operations), GET /syncs and the operator dashboard: what connects,
 * refreshes, sync runs, actions and proxy calls leave in the log, with their outcome, on the
 * embedded store and on PostgreSQL; the dashboard's sign-in and its cookie; and the dashboard in
 * headless Chromium.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import { fakeApi, freshDatabase, json, pgSkip, PG_URL, providersDir, startTerapi, tcpHop, type Running } from './support.ts';
import { createLogger } from '../core/logger.ts';
import { OperationLog, type Operation } from '../core/operations.ts';
import { openSql } from '../core/store/sql.ts';
import { launchChromium, screenshot, watchConsole } from './browser.ts';

/** Every secret the fixtures hand Terapi: none may reach the log. */
const SECRETS = ['key-good-0123', 'key-broken-4567', 'client-secret-89ab', 'at-stale-cdef', 'rt-stale-0246', 'at-fresh-1357', 'rt-fresh-9bdf', 'at-new-8642'];

/**
 * A provider's API: items for the key of "good", a 500 for the key of "broken", a token URL that
 * refreshes "fresh" and refuses "stale" with invalid_grant.
 */
async function providerApi() {
  return fakeApi((req, res) => {
    const url = new URL(req.url!, 'http://x');
    if (url.pathname === '/token') {
      const form = new URLSearchParams(String(req.body));
      if (form.get('refresh_token') === 'rt-fresh-9bdf') return json(res, 200, { access_token: 'at-new-8642', expires_in: 3600 });
      return json(res, 400, { error: 'invalid_grant', error_description: `refresh token ${form.get('refresh_token')} was revoked` });
    }
    const key = req.headers['x-key'];
    if (key === 'key-broken-4567') return json(res, 500, { message: 'the items service is down' });
    if (url.pathname === '/items' && req.method === 'GET') return json(res, 200, { items: [{ id: 1, name: 'one' }, { id: 2, name: 'two' }] });
    if (url.pathname === '/items' && req.method === 'POST') return req.body?.name === 'boom' ? json(res, 500, { message: 'cannot make it' }) : json(res, 201, { id: 3 });
    json(res, 404, { message: 'no such thing' });
  });
}

const files = (url: string) => ({
  shop: `
display_name: Shop
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
api:
  base_url: ${url}
  credentials: { in: header, name: X-Key, value: "\${api_key}" }
  retry: { max_attempts: 1 }
syncs:
  items:
    mode: full
    auto_start: false
    request: { path: /items }
    records: items
    mapping: "{ 'id': id, 'name': name }"
    model: { name: Item }
actions:
  create_item:
    input: { type: object, required: [name], properties: { name: { type: string } } }
    request: { method: POST, path: /items, body: "{ 'name': name }" }
`,
  expiring: `
display_name: Expiring
categories: [testing]
docs: https://example.com/docs
auth:
  mode: oauth2
  authorization_url: ${url}/authorize
  token_url: ${url}/token
api: { base_url: "${url}" }
`,
});

/** The fixtures' history: connects, a sync that works and one that fails, actions, proxy calls, a refresh and a refused one. */
async function makeHistory(t: Running) {
  const ok = (r: { status: number; body: unknown }, status = 200) => assert.equal(r.status, status, JSON.stringify(r.body));
  ok(await t.call('POST', '/integration', { provider_config_key: 'shop', provider: 'shop' }));
  ok(await t.call('POST', '/integration', { provider_config_key: 'expiring', provider: 'expiring', oauth_client_id: 'client-1', oauth_client_secret: 'client-secret-89ab' }));
  for (const [id, key] of [['good', 'key-good-0123'], ['broken', 'key-broken-4567']]) {
    ok(await t.call('POST', '/connection', { connection_id: id, provider_config_key: 'shop', credentials: { type: 'api_key', api_key: key } }));
  }
  const past = new Date(Date.now() - 60_000).toISOString();
  for (const id of ['stale', 'fresh']) {
    ok(await t.call('POST', '/connection', { connection_id: id, provider_config_key: 'expiring', credentials: { type: 'oauth2', access_token: `at-${id}-${id === 'stale' ? 'cdef' : '1357'}`, refresh_token: id === 'stale' ? 'rt-stale-0246' : 'rt-fresh-9bdf', expires_at: past } }));
  }
  assert.equal((await t.call('POST', '/connection', { connection_id: 'good', provider_config_key: 'shop', credentials: { type: 'api_key', api_key: 'key-good-0123' } })).status, 409);
  for (const id of ['good', 'broken']) ok(await t.call('POST', '/sync/trigger', { provider_config_key: 'shop', connection_id: id, syncs: ['items'] }));
  await t.engine.idle();
  ok(await t.call('POST', '/action/trigger', { provider_config_key: 'shop', connection_id: 'good', action_name: 'create_item', input: { name: 'new' } }));
  ok(await t.call('POST', '/action/trigger', { provider_config_key: 'shop', connection_id: 'good', action_name: 'create_item', input: { name: 'boom' } }), 502);
  const proxy = (path: string) => t.call('GET', `/proxy/${path}?api_key=key-good-0123`, undefined, { 'provider-config-key': 'shop', 'connection-id': 'good' });
  ok(await proxy('items'));
  ok(await proxy('items/key-good-0123'), 404);
  ok(await t.call('GET', '/auth/token/expiring/fresh'));
  ok(await t.call('GET', '/auth/token/expiring/stale'), 424);
}

/** Every operation the log answers for `query`, following next_cursor a `limit` at a time. */
async function allOperations(t: Running, query = '', limit = 3) {
  const out: any[] = [];
  let cursor: string | null = null;
  do {
    const r = await t.call('GET', `/operations?limit=${limit}${query}${cursor ? `&cursor=${cursor}` : ''}`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    out.push(...r.body.operations);
    cursor = r.body.next_cursor;
  } while (cursor);
  return out;
}

const brief = (op: any) => [op.type, op.provider_config_key, op.connection_id, op.name, op.outcome].join(' ');

function suite(store: 'sqlite' | 'postgres') {
  describe(`operations log and dashboard sign-in (${store})`, { skip: store === 'postgres' && pgSkip }, () => {
    let api: Awaited<ReturnType<typeof providerApi>>;
    let t: Running;
    let drop: (() => Promise<void>) | undefined;

    before(async () => {
      api = await providerApi();
      const db = store === 'postgres' ? await freshDatabase() : undefined;
      drop = db?.drop;
      t = await startTerapi({ databaseUrl: db?.url, providersDirs: [providersDir(files(api.url))], env: { TERAPI_OPERATIONS_LOG_SIZE: '100' } });
      await makeHistory(t);
    });
    after(async () => {
      await t?.close();
      await api?.close();
      await drop?.();
    });

    test('each connect, sync run, action, proxy call and refresh is in the log, newest first, with its outcome', async () => {
      const ops = await allOperations(t);
      const oldestFirst = ops.map(brief).reverse();
      // The two runs end in either order.
      assert.deepEqual(oldestFirst.slice(5, 7).sort(), ['sync_run shop broken items error', 'sync_run shop good items success']);
      assert.deepEqual([...oldestFirst.slice(0, 5), ...oldestFirst.slice(7)], [
        'connect shop good api success',
        'connect shop broken api success',
        'connect expiring stale api success',
        'connect expiring fresh api success',
        'connect shop good api error',
        'action shop good create_item success',
        'action shop good create_item error',
        'proxy shop good GET /items success',
        'proxy shop good GET /items/[redacted] error',
        'refresh expiring fresh  success',
        'refresh expiring stale  needs_reauth',
      ]);
      const byText = Object.fromEntries(ops.map((op) => [brief(op), op]));
      const good = byText['sync_run shop good items success'];
      assert.deepEqual(good.detail, { model: 'Item', pages: 1, added: 2, updated: 0, deleted: 0, unchanged: 0, invalid: 0, records_count: 2 });
      assert.match(byText['sync_run shop broken items error'].message, /HTTP 500/);
      assert.equal(byText['connect shop good api error'].error, 'connection_exists');
      assert.match(byText['action shop good create_item error'].message, /answered HTTP 500 to action "create_item": .*cannot make it/);
      assert.deepEqual(byText['proxy shop good GET /items/[redacted] error'].detail, { status: 404 });
      assert.equal(byText['proxy shop good GET /items/[redacted] error'].error, 'provider_status');
      const refused = byText['refresh expiring stale  needs_reauth'];
      assert.equal(refused.error, 'invalid_grant');
      assert.match(refused.message, /invalid_grant: refresh token \[redacted\] was revoked/);
      for (const op of ops) {
        assert.match(op.at, /^\d{4}-\d\d-\d\dT/);
        assert.equal(typeof op.duration_ms, 'number', brief(op));
        if (op.type !== 'sync_run') assert.match(op.request_id, /^[0-9a-f-]{36}$/, `${brief(op)} has its request's id`);
      }
    });

    test('no secret reaches the log: keys, tokens, the client secret, a key in a proxied path or query', async () => {
      const text = JSON.stringify(await allOperations(t, '', 500));
      for (const secret of SECRETS) assert.ok(!text.includes(secret), `the log holds ${secret}`);
    });

    test('filters by integration, connection and type; unknown keys are empty pages; bad cursors and types are 400', async () => {
      const good = await allOperations(t, '&provider_config_key=shop&connection_id=good');
      assert.ok(good.length === 7 && good.every((op) => op.connection_id === 'good' && op.provider_config_key === 'shop'), JSON.stringify(good.map(brief)));
      assert.deepEqual((await allOperations(t, '&connection_id=stale')).map(brief), ['refresh expiring stale  needs_reauth', 'connect expiring stale api success']);
      assert.deepEqual((await allOperations(t, '&provider_config_key=expiring&type=refresh')).map((op) => op.connection_id), ['stale', 'fresh']);
      assert.deepEqual((await t.call('GET', '/operations?provider_config_key=nothing')).body, { operations: [], next_cursor: null });
      assert.equal((await t.call('GET', '/operations?type=delete')).status, 400);
      const r = await t.call('GET', '/operations?cursor=bm9wZQ');
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_cursor');
      assert.equal((await t.call('GET', '/operations?limit=501')).status, 400);
    });

    test('GET /syncs: each sync with its status, records count, last run and error', async () => {
      const r = await t.call('GET', '/syncs?provider_config_key=shop');
      assert.equal(r.status, 200);
      const [broken, good] = r.body.syncs;
      assert.deepEqual([broken.connection_id, broken.status, broken.records_count, broken.model], ['broken', 'error', 0, 'Item']);
      assert.match(broken.error, /HTTP 500/);
      assert.deepEqual([good.connection_id, good.status, good.records_count, good.last_run.added], ['good', 'success', 2, 2]);
      assert.deepEqual((await t.call('GET', '/syncs?connection_id=good')).body.syncs.map((s: any) => s.sync_name), ['items']);
      assert.deepEqual((await t.call('GET', '/syncs?provider_config_key=expiring')).body.syncs, []);
      // Scheduled, not run yet.
      assert.equal((await t.call('POST', '/connection', { connection_id: 'later', provider_config_key: 'shop', credentials: { type: 'api_key', api_key: 'key-later' } })).status, 200);
      await t.call('POST', '/sync/pause', { provider_config_key: 'shop', connection_id: 'later', syncs: ['items'] });
      assert.equal((await t.call('GET', '/syncs?connection_id=later')).body.syncs[0].status, 'paused');
      assert.equal((await t.call('GET', '/syncs', undefined, { authorization: '' })).status, 401);
    });

    test('the dashboard signs in from its own page only, with an HttpOnly SameSite=Strict cookie that reads, never writes, and signs out', async () => {
      const login = (body: unknown, headers: Record<string, string>) => t.call('POST', '/dashboard/login', body, { authorization: '', ...headers });
      const origin = { origin: t.url };
      assert.equal((await login({ secret_key: t.secret }, {})).body.error, 'cross_origin', 'no Origin');
      assert.equal((await login({ secret_key: t.secret }, { origin: 'https://evil.example' })).status, 403);
      assert.equal((await login({ secret_key: t.secret }, { ...origin, 'sec-fetch-site': 'cross-site' })).status, 403);
      assert.equal((await t.call('POST', '/dashboard/login', `secret_key=${t.secret}`, { authorization: '', ...origin, 'content-type': 'application/x-www-form-urlencoded' })).status, 415, 'a form post');
      assert.equal((await login({ secret_key: 'sk_wrong' }, origin)).status, 401);
      const signed = await login({ secret_key: t.secret }, origin);
      assert.equal(signed.status, 204);
      const setCookie = signed.headers.get('set-cookie')!;
      assert.match(setCookie, /^terapi_dashboard=[A-Za-z0-9_-]{43}; Max-Age=28800; Path=\/; HttpOnly; SameSite=Strict$/);
      const cookie = { authorization: '', cookie: setCookie.split(';')[0] };
      assert.ok(!t.logs.join('\n').includes(t.secret), 'the secret key is in a log line');

      assert.equal((await t.call('GET', '/operations?limit=1', undefined, cookie)).status, 200);
      assert.equal((await t.call('GET', '/connection', undefined, cookie)).status, 200);
      assert.equal((await t.call('GET', '/integration', undefined, { ...cookie, 'sec-fetch-site': 'same-origin' })).status, 200);
      assert.equal((await t.call('GET', '/operations', undefined, { ...cookie, 'sec-fetch-site': 'cross-site' })).status, 401, 'read from another site');
      // Only the reads the document marks DashboardSession: never a write, a token or a record.
      assert.equal((await t.call('POST', '/sync/trigger', { provider_config_key: 'shop', connection_id: 'good', syncs: ['items'] }, cookie)).status, 401);
      assert.equal((await t.call('GET', '/auth/token/shop/good', undefined, cookie)).status, 401);
      assert.equal((await t.call('GET', '/records?provider_config_key=shop&connection_id=good&model=Item', undefined, cookie)).status, 401);
      assert.equal((await t.call('DELETE', '/connection/good?provider_config_key=shop', undefined, cookie)).status, 401);

      assert.equal((await t.call('POST', '/dashboard/logout', undefined, { ...cookie, origin: 'https://evil.example' })).status, 403);
      const out = await t.call('POST', '/dashboard/logout', undefined, { ...cookie, ...origin });
      assert.equal(out.status, 204);
      assert.match(out.headers.get('set-cookie')!, /^terapi_dashboard=; Max-Age=0;/);
      assert.equal((await t.call('GET', '/operations', undefined, cookie)).status, 401, 'the session outlived its sign-out');
    });

    test('the log keeps the last TERAPI_OPERATIONS_LOG_SIZE operations', async () => {
      for (let i = 0; i < 120; i++) await t.call('GET', `/proxy/items`, undefined, { 'provider-config-key': 'shop', 'connection-id': 'good' });
      const ops = await allOperations(t, '', 500);
      assert.equal(ops.length, 100);
      assert.ok(ops.every((op) => brief(op) === 'proxy shop good GET /items success'));
    });
  });
}

suite('sqlite');
suite('postgres');

test('while the database is cut off, the log keeps its newest operations in memory, and writes them when it is back', { skip: pgSkip }, async () => {
  const db = await freshDatabase();
  const hop = await tcpHop({ host: new URL(PG_URL!).hostname, port: Number(new URL(PG_URL!).port || 5432) });
  const lines: string[] = [];
  const sql = openSql({ databaseUrl: hop.via(db.url), dataDir: '/nonexistent' });
  const log = new OperationLog(sql, 100, createLogger('info', { write: (line: string) => void lines.push(line) }));
  try {
    await log.migrate();
    const op = (i: number): Operation => ({ type: 'action', provider_config_key: 'shop', connection_id: 'good', name: `a${i}`, outcome: 'success' });
    for (let i = 0; i < 10; i++) log.record(op(i));
    await log.flush();
    await hop.cut();
    for (let i = 10; i < 400; i++) log.record(op(i));
    await log.flush(); // fails: kept
    assert.ok(lines.some((l) => l.includes('operations log: could not write')), lines.join('\n'));
    await hop.restore();
    const { operations } = await log.list({ limit: 500 });
    assert.ok(operations.length >= 100 && operations.length <= 110, `${operations.length} kept`);
    assert.equal(operations[0].name, 'a399', 'the newest is kept');
    assert.deepEqual(operations.map((o) => Number(o.name!.slice(1))), [...operations.map((o) => Number(o.name!.slice(1)))].sort((a, b) => b - a), 'in order');
    assert.ok(lines.some((l) => /"dropped":\d+.*operations were dropped/.test(l)), 'the drop is logged');
  } finally {
    await log.close();
    await sql.close();
    await hop.cut().catch(() => {});
    await db.drop();
  }
});

describe('the dashboard in headless Chromium', () => {
  let api: Awaited<ReturnType<typeof providerApi>>;
  let t: Running;
  let browser: Browser;
  let page: Page;
  let problems: string[];

  before(async () => {
    api = await providerApi();
    t = await startTerapi({ providersDirs: [providersDir(files(api.url))] });
    await makeHistory(t);
    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
    problems = watchConsole(page);
  });
  after(async () => {
    await browser?.close();
    await t?.close();
    await api?.close();
  });

  test('sign in by keyboard, see the connection that needs reauth and the failed sync, filter the operations, sign out', async () => {
    await page.goto(`${t.url}/dashboard`);
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'secret-key');
    await page.keyboard.type('sk_not_it');
    await page.keyboard.press('Enter');
    await page.getByText("That is not this server's secret key.").waitFor();
    await screenshot(page, 'dashboard-1-sign-in');
    await page.fill('#secret-key', t.secret);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Integrations (2)' }).waitFor();
    assert.equal(page.url(), `${t.url}/dashboard`, 'the key went into the URL');
    const cookie = (await page.context().cookies()).find((c) => c.name === 'terapi_dashboard')!;
    assert.deepEqual([cookie.httpOnly, cookie.sameSite], [true, 'Strict']);
    assert.deepEqual(await page.evaluate(() => [localStorage.length, sessionStorage.length]), [0, 0], 'the key or the session is in the browser storage');

    // The connection the provider refused to refresh, with the reason.
    const stale = page.locator('tr[data-connection="stale"]');
    assert.match(await stale.innerText(), /needs reauth\s+the provider answered invalid_grant to a token refresh/);
    assert.match(await page.locator('tr[data-connection="good"]').innerText(), /\bok\b/);
    // Each sync: its status, last run, records and error.
    const broken = page.locator('tr[data-sync="shop/broken/items"]');
    assert.match(await broken.innerText(), /error[\s\S]*HTTP 500/);
    assert.match(await page.locator('tr[data-sync="shop/good/items"]').innerText(), /success[\s\S]*\+2 ~0 −0\s+2\b/);
    await page.locator('#operations tbody tr').first().waitFor();
    assert.equal(await page.locator('#operations tbody tr').count(), 13);
    await screenshot(page, 'dashboard-2-overview');

    // Filter the operations log: one connection, then one type.
    await page.selectOption('#filter-connection', 'broken');
    await page.getByRole('status').filter({ hasText: '2 operations shown' }).waitFor();
    assert.deepEqual(await page.locator('#operations tbody tr td:nth-child(4)').allInnerTexts(), ['broken', 'broken']);
    assert.match(await page.locator('#operations tbody').innerText(), /sync run[\s\S]*items[\s\S]*error[\s\S]*HTTP 500/);
    await page.selectOption('#filter-connection', '');
    await page.selectOption('#filter-type', 'refresh');
    await page.getByRole('status').filter({ hasText: '2 operations shown' }).waitFor();
    assert.deepEqual(await page.locator('#operations tbody tr td:nth-child(6)').allInnerTexts(), ['needs reauth', 'success']);
    await page.selectOption('#filter-type', '');
    // A connection's own operations, from its row.
    await stale.getByRole('button', { name: 'Operations' }).click();
    await page.getByRole('status').filter({ hasText: '2 operations shown' }).waitFor();
    assert.equal(await page.locator('#filter-connection').inputValue(), 'stale');
    assert.match(await page.locator('#operations tbody').innerText(), /refresh[\s\S]*needs reauth[\s\S]*invalid_grant/);
    await screenshot(page, 'dashboard-3-filtered');

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    await page.reload();
    await page.getByRole('heading', { name: 'Sign in' }).waitFor();
    assert.deepEqual(problems, [], 'the page reported errors (a script error, a CSP refusal)');
  });
});
