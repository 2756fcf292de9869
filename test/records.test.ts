/**
 * Syncs that deliver data: every mapped record lands in the records store page by page, and
 * GET /records reads what changed, in change order. Against a real paginated HTTP server on
 * 127.0.0.1 with faults injected, on the embedded store and on PostgreSQL.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { openSql } from '../core/store/sql.ts';
import { fakeApi, freshDatabase, json, pgSkip, providersDir, startTerapi, type Running } from './support.ts';

interface Item {
  id: number;
  name: string;
  updated_at: string;
  kind?: string;
}

type Fault = { status: number; headers?: Record<string, string> } | { truncate: true } | { hangMs: number };

/** A paginated API over a list the test changes between runs; faults are served before the next pages. */
async function itemsApi() {
  const state = { items: [] as Item[], faults: [] as Fault[], delayMs: 0, pageRequests: 0 };
  const api = await fakeApi(async (req, res) => {
    const url = new URL(req.url!, 'http://x');
    const fault = state.faults.shift();
    if (fault && 'status' in fault) return json(res, fault.status, { error: 'fault' }, fault.headers);
    if (fault && 'hangMs' in fault) await new Promise((r) => setTimeout(r, fault.hangMs));
    if (state.delayMs) await new Promise((r) => setTimeout(r, state.delayMs));
    state.pageRequests++;
    if (url.pathname !== '/items') return otherStyles(url, state.items, res);
    const since = url.searchParams.get('since');
    const from = Number(url.searchParams.get('cursor') ?? 0);
    const limit = Number(url.searchParams.get('limit') ?? 10);
    const list = state.items.filter((i) => !since || i.updated_at > since).sort((a, b) => a.updated_at.localeCompare(b.updated_at) || a.id - b.id);
    const page = list.slice(from, from + limit);
    const body = JSON.stringify({ items: page, next: from + limit < list.length ? from + limit : null });
    res.writeHead(200, { 'content-type': 'application/json' });
    // A cut body: the status and headers say all is well, the JSON stops halfway.
    res.end(fault && 'truncate' in fault ? body.slice(0, Math.floor(body.length / 2)) : body);
  });
  return { ...api, state };
}

/** The same list under every other pagination style of the format, 10 a page. */
function otherStyles(url: URL, items: Item[], res: Parameters<typeof json>[0]) {
  const q = url.searchParams;
  const from = Number(q.get('from') ?? q.get('offset') ?? (Number(q.get('page') ?? 1) - 1) * 10);
  const page = items.slice(from, from + 10);
  const more = from + 10 < items.length;
  if (url.pathname === '/link') return json(res, 200, page, more ? { link: `</link?from=${from + 10}>; rel="next", </link>; rel="first"` } : {});
  if (url.pathname === '/bodynext') return json(res, 200, { results: page, next: more ? `/bodynext?from=${from + 10}` : null });
  if (url.pathname === '/offset') return json(res, 200, { rows: page });
  if (url.pathname === '/page') return json(res, 200, { list: page, last: !more });
  json(res, 404, {});
}

/** This process's nice value before any engine started (the test runner's own). */
const NICE_AT_START = existsSync('/proc/self/stat') ? Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ')[16]) : 0;

const day = (n: number) => `2026-01-${String(n).padStart(2, '0')}T00:00:00.000Z`;
const makeItems = (n: number): Item[] => Array.from({ length: n }, (_, i) => ({ id: i + 1, name: `item ${i + 1}`, updated_at: day(1) }));

function shopFile(baseUrl: string) {
  return `
display_name: Shop
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
api:
  base_url: ${baseUrl}
  credentials: { in: header, name: X-Key, value: "\${api_key}" }
  retry: { max_attempts: 3 }
  timeout_seconds: 1
syncs:
  items:
    mode: full
    auto_start: false
    request: { path: /items }
    pagination: { type: cursor, cursor: next, param: cursor, page_size: { param: limit, value: 10 } }
    records: items
    filter: "$not(kind = 'hidden')"
    mapping: "{ 'id': id, 'name': name, 'updated_at': updated_at }"
    model:
      name: Item
      schema:
        type: object
        required: [id, name]
        properties: { name: { type: string, maxLength: 20 } }
  changes:
    mode: incremental
    auto_start: false
    request: { path: /items }
    pagination: { type: cursor, cursor: next, param: cursor, page_size: { param: limit, value: 10 } }
    records: items
    mapping: "{ 'id': $string(id), 'name': name, 'updated_at': updated_at }"
    model: { name: Change }
    checkpoint: { value: "$max($.updated_at.$toMillis($)) ~> $fromMillis()", param: since }
  strict:
    mode: full
    auto_start: false
    request: { path: /items }
    pagination: { type: cursor, cursor: next, param: cursor, page_size: { param: limit, value: 10 } }
    records: items
    mapping: "{ 'id': id, 'name': name }"
    model: { name: Strict, schema: { type: object, properties: { name: { type: string, maxLength: 7 } } } }
    invalid_records: fail
  noid:
    mode: full
    auto_start: false
    request: { path: /items }
    records: items
    mapping: "{ 'name': name }"
    model: { name: NoId }
  by_link:
    mode: full
    auto_start: false
    request: { path: /link }
    pagination: { type: next_url, from: link_header }
    records: $
    mapping: "{ 'id': id, 'name': name }"
    model: { name: ByLink }
  by_body_url:
    mode: full
    auto_start: false
    request: { path: /bodynext }
    pagination: { type: next_url, from: body, path: next }
    records: results
    mapping: "{ 'id': id, 'name': name }"
    model: { name: ByBodyUrl }
  by_offset:
    mode: full
    auto_start: false
    request: { path: /offset }
    pagination: { type: offset, param: offset, page_size: { param: limit, value: 10 } }
    records: rows
    mapping: "{ 'id': id, 'name': name }"
    model: { name: ByOffset }
  by_page:
    mode: full
    auto_start: false
    request: { path: /page }
    pagination: { type: page, param: page, stop: last }
    records: list
    mapping: "{ 'id': id, 'name': name }"
    model: { name: ByPage }
  slow:
    mode: full
    auto_start: false
    request: { path: /items }
    records: items
    # The issue's case: 0.4 s a record on the interpreter, one builtin call; a page's limit stops it.
    mapping: "{ 'id': id, 'sum': $sum([1..10000000]) }"
    model: { name: Slow }
`;
}

/** Runs a sync to its end through the API and answers its status. */
async function runToEnd(t: Running, sync: string, connection = 'c1') {
  const r = await t.call('POST', '/sync/trigger', { provider_config_key: 'shop', connection_id: connection, syncs: [sync] });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  await t.engine.idle();
  return (await t.call('GET', `/sync/${connection}/${sync}?provider_config_key=shop`)).body;
}

/** Every record of a model, following next_cursor from `cursor`. */
async function readAll(t: Running, model: string, query = '', connection = 'c1') {
  const out: any[] = [];
  let cursor: string | null | undefined;
  let pages = 0;
  do {
    const r = await t.call('GET', `/records?provider_config_key=shop&connection_id=${connection}&model=${model}${query}${cursor ? `&cursor=${cursor}` : ''}`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    out.push(...r.body.records);
    cursor = r.body.next_cursor;
    assert.ok(++pages < 1000);
  } while (cursor);
  return out;
}

async function waitRunning(t: Running, connection: string, sync: string) {
  for (let i = 0; i < 200; i++) {
    if ((await t.call('GET', `/sync/${connection}/${sync}?provider_config_key=shop`)).body.status === 'running') return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`sync ${sync} of ${connection} never ran`);
}

const summary = (records: any[]) => records.map((r) => `${r.id}:${r._terapi_metadata.last_action}`).join(' ');

function suite(name: string, databaseUrl: () => string | undefined, skip: string | false = false) {
  describe(`records (${name})`, { skip }, () => {
    let api: Awaited<ReturnType<typeof itemsApi>>;
    let t: Running;

    before(async () => {
      api = await itemsApi();
      t = await startTerapi({ databaseUrl: databaseUrl(), providersDirs: [providersDir({ shop: shopFile(api.url) })], env: { TERAPI_SYNC_WAIT_BUDGET_SECONDS: '30' } });
      assert.equal((await t.call('POST', '/integration', { provider_config_key: 'shop', provider: 'shop' })).status, 200);
      for (const c of ['c1', 'c2']) {
        const r = await t.call('POST', '/connection', { connection_id: c, provider_config_key: 'shop', credentials: { type: 'api_key', api_key: `key-${c}` } });
        assert.equal(r.status, 200);
      }
    });
    after(async () => {
      await t?.close();
      await api?.close();
    });

    test('a full sync stores every record; a second run reports exactly what changed, in change order', async () => {
      api.state.items = makeItems(25);
      let status = await runToEnd(t, 'items');
      assert.equal(status.status, 'success', status.error);
      assert.equal(status.records_count, 25);
      assert.equal(status.last_run.pages, 3);
      assert.equal(status.last_run.added, 25);
      let all = await readAll(t, 'Item');
      assert.deepEqual(all.map((r) => r.id), Array.from({ length: 25 }, (_, i) => i + 1));
      assert.ok(all.every((r) => r._terapi_metadata.last_action === 'added' && r._terapi_metadata.deleted_at === null));
      assert.deepEqual(Object.keys(all[0]).sort(), ['_terapi_metadata', 'id', 'name', 'updated_at']);
      const last = all[all.length - 1]._terapi_metadata.cursor;
      const unchangedBefore = all[10]._terapi_metadata;

      // Two updated, three deleted at the provider, one new.
      api.state.items[0].name = 'renamed 1';
      api.state.items[4].name = 'renamed 5';
      api.state.items = api.state.items.filter((i) => ![7, 8, 9].includes(i.id));
      api.state.items.push({ id: 26, name: 'item 26', updated_at: day(2) });
      status = await runToEnd(t, 'items');
      assert.equal(status.status, 'success');
      assert.equal(status.records_count, 23);
      assert.deepEqual([status.last_run.added, status.last_run.updated, status.last_run.deleted, status.last_run.unchanged], [1, 2, 3, 20]);

      const changes = await readAll(t, 'Item', `&cursor=${last}`);
      assert.equal(summary(changes), '1:updated 5:updated 26:added 7:deleted 8:deleted 9:deleted');
      assert.equal(changes[0].name, 'renamed 1');
      assert.ok(changes.find((r) => r.id === 7)._terapi_metadata.deleted_at);
      // An unchanged record keeps its data, time and cursor.
      all = await readAll(t, 'Item');
      assert.deepEqual(all.find((r) => r.id === 11)._terapi_metadata, unchangedBefore);
      assert.equal(all.length, 26);
      // A third run with no change changes nothing.
      status = await runToEnd(t, 'items');
      assert.deepEqual([status.last_run.added, status.last_run.updated, status.last_run.deleted, status.records_count], [0, 0, 0, 23]);
      assert.deepEqual(await readAll(t, 'Item', `&cursor=${changes[changes.length - 1]._terapi_metadata.cursor}`), []);
    });

    test('runs lower their own thread\'s priority, never the API thread\'s (Linux)', { skip: existsSync('/proc/thread-self') ? false : 'no /proc/thread-self' }, async () => {
      assert.equal((await runToEnd(t, 'items')).status, 'success');
      // Field 19 of a thread's stat line is its nice value; the command name (field 2) may hold spaces.
      const nice = (tid: string) => Number(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ')[16]);
      const threads = readdirSync('/proc/self/task').map(nice);
      assert.equal(nice(String(process.pid)), NICE_AT_START, 'the API thread kept its priority');
      assert.ok(threads.includes(NICE_AT_START + 10), `a run thread lowered its own priority (threads: ${threads.join(',')})`);
      // Threads started by the API thread after the runs (libuv's pool, where SQLite works) inherit its priority.
      assert.ok(threads.filter((n) => n === NICE_AT_START).length > 1);
    });

    test('records come back exactly as mapped: quotes, backslashes, NUL, emoji, a lone surrogate', async () => {
      const names = ['a "quoted" \\ b', 'nul \u0000 here', 'emoji 😀 é ü', 'lone \ud800 x', 'low \udc00', 'text \\ud800 not one', '\u2028 \t \n'];
      const before = api.state.items;
      api.state.items = names.map((name, i) => ({ id: i + 1, name, updated_at: day(3) }));
      try {
        await t.call('POST', '/connection', { connection_id: 'c3', provider_config_key: 'shop', credentials: { type: 'api_key', api_key: 'key-c3' } });
        let status = await runToEnd(t, 'items', 'c3');
        assert.equal(status.status, 'success', status.error);
        assert.deepEqual((await readAll(t, 'Item', '', 'c3')).map((r) => r.name), names);
        // Read back as stored, the same text hashes the same: a second run finds nothing changed.
        status = await runToEnd(t, 'items', 'c3');
        assert.deepEqual([status.last_run.added, status.last_run.updated, status.last_run.unchanged], [0, 0, names.length]);
      } finally {
        api.state.items = before;
        await t.call('DELETE', '/connection/c3?provider_config_key=shop');
      }
    });

    test('GET /records: limit and next_cursor, filter, modified_after, and clear errors', async () => {
      const r = await t.call('GET', '/records?provider_config_key=shop&connection_id=c1&model=Item&limit=4');
      assert.equal(r.body.records.length, 4);
      assert.equal(typeof r.body.next_cursor, 'string');
      const next = await t.call('GET', `/records?provider_config_key=shop&connection_id=c1&model=Item&limit=4&cursor=${r.body.next_cursor}`);
      const all = await readAll(t, 'Item');
      assert.deepEqual([...r.body.records, ...next.body.records].map((x: any) => x.id), all.slice(0, 8).map((x) => x.id));
      assert.equal(summary(await readAll(t, 'Item', '&filter=deleted')), '7:deleted 8:deleted 9:deleted');
      assert.equal((await readAll(t, 'Item', '&filter=updated,deleted')).length, 5);
      assert.equal((await readAll(t, 'Item', `&modified_after=${new Date(Date.now() + 60_000).toISOString()}`)).length, 0);
      const expect = async (query: string, status: number, error: string) => {
        const res = await t.call('GET', `/records?${query}`);
        assert.equal(res.status, status, `${query}: ${res.text}`);
        assert.equal(res.body.error, error);
      };
      await expect('provider_config_key=shop&connection_id=c1&model=Item&cursor=nonsense!', 400, 'invalid_cursor');
      await expect('provider_config_key=shop&connection_id=c1&model=Item&cursor=bm9wZQ', 400, 'invalid_cursor');
      await expect('provider_config_key=shop&connection_id=c1&model=Item&limit=1001', 400, 'invalid_request');
      await expect('provider_config_key=shop&connection_id=c1&model=Item&filter=created', 400, 'invalid_request');
      await expect('provider_config_key=shop&connection_id=c1', 400, 'invalid_request');
      await expect('provider_config_key=shop&connection_id=c1&model=Nope', 404, 'unknown_model');
      await expect('provider_config_key=shop&connection_id=zz&model=Item', 404, 'unknown_connection');
      await expect('provider_config_key=nope&connection_id=c1&model=Item', 404, 'unknown_integration');
      // Another connection's records are its own.
      assert.deepEqual(await readAll(t, 'Item', '', 'c2'), []);
    });

    test('every pagination style, with a 500 and a 429 on the way: the exact records, then the exact changes', async () => {
      for (const [sync, model] of [['by_link', 'ByLink'], ['by_body_url', 'ByBodyUrl'], ['by_offset', 'ByOffset'], ['by_page', 'ByPage']]) {
        api.state.items = makeItems(23);
        api.state.faults.push({ hangMs: 0 }, { status: 500 }, { status: 429, headers: { 'retry-after': '0' } });
        let status = await runToEnd(t, sync);
        assert.equal(status.status, 'success', `${sync}: ${status.error}`);
        const all = await readAll(t, model);
        assert.deepEqual(all.map((r) => r.id), Array.from({ length: 23 }, (_, i) => i + 1), sync);
        api.state.items = api.state.items.filter((i) => i.id !== 12);
        api.state.items[0].name = 'first';
        status = await runToEnd(t, sync);
        assert.equal(summary(await readAll(t, model, `&cursor=${all.at(-1)._terapi_metadata.cursor}`)), '1:updated 12:deleted', sync);
        assert.equal(status.records_count, 22);
      }
    });

    test('a Retry-After longer than the run may wait ends the run as rate-limited; the next run resumes where it stopped', async () => {
      api.state.items = makeItems(30);
      const stored = (await readAll(t, 'Item')).length;
      api.state.faults.push({ hangMs: 0 }, { status: 429, headers: { 'retry-after': '120' } });
      let status = await runToEnd(t, 'items');
      assert.equal(status.status, 'error');
      assert.equal(status.last_run.outcome, 'rate_limited');
      assert.match(status.error, /asked to wait 120 s/);
      const resumeAt = Date.parse(status.next_sync_date);
      assert.ok(resumeAt > Date.now() + 100_000 && resumeAt < Date.now() + 130_000, status.next_sync_date);
      const before = api.state.pageRequests;
      status = await runToEnd(t, 'items');
      assert.equal(status.status, 'success');
      // Pages 2 and 3 only: page 1 was stored before the limit.
      assert.equal(api.state.pageRequests - before, 2);
      assert.equal(status.records_count, 30);
      assert.ok((await readAll(t, 'Item')).length >= stored);
    });

    test('a page whose records are all filtered out does not end the sync', async () => {
      api.state.items = makeItems(30);
      for (const i of api.state.items.slice(10, 20)) i.kind = 'hidden';
      const status = await runToEnd(t, 'items', 'c2');
      assert.equal(status.status, 'success');
      assert.equal(status.last_run.pages, 3);
      assert.equal(status.records_count, 20);
      assert.deepEqual((await readAll(t, 'Item', '', 'c2')).map((r) => r.id), [...Array.from({ length: 10 }, (_, i) => i + 1), ...Array.from({ length: 10 }, (_, i) => i + 21)]);
    });

    test('incremental: resumes from the checkpoint of the last stored page', async () => {
      api.state.items = makeItems(12).map((i) => ({ ...i, updated_at: day(i.id) }));
      let status = await runToEnd(t, 'changes');
      assert.equal(status.records_count, 12);
      const asked = () => new URL(api.requests[api.requests.length - 1].url, 'http://x').searchParams.get('since');
      api.state.items[2].updated_at = day(20);
      api.state.items[2].name = 'changed';
      api.state.items.push({ id: 13, name: 'item 13', updated_at: day(21) });
      const first = (await readAll(t, 'Change')).at(-1)._terapi_metadata.cursor;
      status = await runToEnd(t, 'changes');
      assert.equal(asked(), day(12));
      assert.deepEqual([status.last_run.pages, status.last_run.added, status.last_run.updated], [1, 1, 1]);
      assert.equal(summary(await readAll(t, 'Change', `&cursor=${first}`)), '3:updated 13:added');
      assert.equal(status.records_count, 13);
    });

    test('429 with Retry-After, 500, a timeout and a cut body are retried; the run still gets everything', async () => {
      api.state.items = makeItems(25);
      // Page 1: a 429 then fine; page 2: a 500, a timeout, then fine; page 3: a cut body, then fine.
      api.state.faults.push({ status: 429, headers: { 'retry-after': '1' } }, { hangMs: 0 }, { status: 500 }, { hangMs: 1500 }, { hangMs: 0 }, { truncate: true });
      const status = await runToEnd(t, 'items');
      assert.equal(status.status, 'success', JSON.stringify(status));
      assert.equal(status.records_count, 25);
      assert.equal(api.state.faults.length, 0);
    });

    test('a body cut off on every attempt fails the run: no junk record, nothing lost, the error on the status', async () => {
      api.state.items = makeItems(25);
      // Page 1 as usual, then page 2 cut on all three attempts.
      api.state.faults.push({ hangMs: 0 }, { truncate: true }, { truncate: true }, { truncate: true });
      const status = await runToEnd(t, 'items');
      assert.equal(status.status, 'error');
      assert.match(status.error, /not valid JSON/);
      assert.equal(status.last_run.outcome, 'error');
      assert.equal(status.last_run.pages, 1);
      const all = await readAll(t, 'Item');
      assert.ok(all.every((r) => typeof r.id === 'number' && r.name.startsWith('item ')), 'no junk record');
      // A failed full run deletes nothing: everything of the last good run is still live.
      assert.equal(all.filter((r) => r._terapi_metadata.last_action !== 'deleted').length, 25);
      assert.equal(status.records_count, 25);
    });

    test('records that do not fit the model: skipped and reported, or the run fails, as the sync says', async () => {
      api.state.items = makeItems(5);
      api.state.items[1].name = 'a name that is far too long for the schema';
      let status = await runToEnd(t, 'items');
      assert.equal(status.status, 'success');
      assert.equal(status.last_run.invalid.count, 1, JSON.stringify(status));
      assert.equal(status.last_run.invalid.examples[0].id, '2');
      assert.match(status.last_run.invalid.examples[0].problem, /name must NOT have more than 20 characters/);
      assert.ok(t.logs.some((l) => l.includes('"invalid":1')));
      status = await runToEnd(t, 'strict');
      assert.equal(status.status, 'error');
      assert.match(status.error, /sync "strict", page 1: record "2" does not fit model Strict: name must NOT have more than 7 characters/);
    });

    test('a mapping without an id, and an expression past its time limit, fail the run naming the place', async () => {
      api.state.items = makeItems(3);
      let status = await runToEnd(t, 'noid');
      assert.equal(status.status, 'error', JSON.stringify(status));
      assert.match(status.error, /sync "noid", page 1: mapped record 1 has no "id"/);
      api.state.items = makeItems(30);
      const started = Date.now();
      const run = t.call('POST', '/sync/trigger', { provider_config_key: 'shop', connection_id: 'c1', syncs: ['slow'] });
      // The API answers while the mapping runs in its worker thread.
      await run;
      const ping = Date.now();
      assert.equal((await t.call('GET', '/connection/c1?provider_config_key=shop')).status, 200);
      assert.ok(Date.now() - ping < 1000, `the API answered in ${Date.now() - ping} ms during the sync`);
      await t.engine.idle();
      status = (await t.call('GET', '/sync/c1/slow?provider_config_key=shop')).body;
      assert.equal(status.status, 'error');
      assert.match(status.error, /shop\.yaml:\d+:\d+: "syncs\.slow\.mapping".*took longer than its time limit of 2100 ms/);
      assert.ok(Date.now() - started < 15_000);
    });

    test('a page the database refuses ends the run: no later page is stored, and the next run gets everything', async () => {
      // The database itself refuses the page holding record 25 (a trigger), as a failing disk or a
      // cut link would; the page after it was already on its way to the store when that happened.
      const sql = openSql({ databaseUrl: databaseUrl(), dataDir: t.engine.config.dataDir });
      const blip =
        sql.dialect === 'postgres'
          ? [`CREATE FUNCTION terapi_test_blip() RETURNS trigger AS $$ BEGIN IF NEW.id = '25' THEN RAISE EXCEPTION 'the disk blinked'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql`,
             `CREATE TRIGGER terapi_test_blip BEFORE INSERT ON terapi_records FOR EACH ROW EXECUTE FUNCTION terapi_test_blip()`]
          : [`CREATE TRIGGER terapi_test_blip BEFORE INSERT ON terapi_records WHEN NEW.id = '25' BEGIN SELECT RAISE(ABORT, 'the disk blinked'); END`];
      try {
        await t.call('POST', '/connection', { connection_id: 'c3', provider_config_key: 'shop', credentials: { type: 'api_key', api_key: 'key-c3' } });
        api.state.items = makeItems(60);
        for (const statement of blip) await sql.query(statement);
        const failed = await runToEnd(t, 'items', 'c3');
        assert.equal(failed.status, 'error');
        assert.match(failed.last_run.error, /the disk blinked/);
        assert.equal(failed.last_run.added, 20);
        assert.equal(failed.records_count, 20);
        const kept = await readAll(t, 'Item', '', 'c3');
        assert.deepEqual(kept.map((r) => r.id), Array.from({ length: 20 }, (_, i) => i + 1), 'pages 1 and 2 only: none of page 4, sent before page 3 failed');
        await sql.query('DROP TRIGGER terapi_test_blip' + (sql.dialect === 'postgres' ? ' ON terapi_records' : ''));
        const done = await runToEnd(t, 'items', 'c3');
        assert.equal(done.status, 'success');
        assert.equal(done.records_count, 60);
        assert.deepEqual({ added: done.last_run.added, updated: done.last_run.updated, deleted: done.last_run.deleted, unchanged: done.last_run.unchanged }, { added: 40, updated: 0, deleted: 0, unchanged: 20 });
        assert.deepEqual((await readAll(t, 'Item', '', 'c3')).map((r) => r.id), Array.from({ length: 60 }, (_, i) => i + 1));
      } finally {
        await sql.query('DROP TRIGGER IF EXISTS terapi_test_blip' + (sql.dialect === 'postgres' ? ' ON terapi_records' : '')).catch(() => {});
        await sql.close();
      }
    });

    test('a trigger during a run starts nothing; deleting the connection deletes its records and stops the run', async () => {
      api.state.items = makeItems(60);
      api.state.delayMs = 150;
      const r1 = await t.call('POST', '/sync/trigger', { provider_config_key: 'shop', connection_id: 'c2', syncs: ['items'] });
      const requestsBefore = api.state.pageRequests;
      assert.equal(r1.body.syncs[0].status, 'queued');
      await waitRunning(t, 'c2', 'items');
      const r2 = await t.call('POST', '/sync/trigger', { provider_config_key: 'shop', connection_id: 'c2', syncs: ['items'] });
      assert.equal(r2.body.syncs[0].status, 'running');
      assert.equal((await t.call('GET', '/sync/c2/items?provider_config_key=shop')).body.status, 'running');
      await new Promise((r) => setTimeout(r, 400));
      assert.equal((await t.call('DELETE', '/connection/c2?provider_config_key=shop')).status, 204);
      await t.engine.idle();
      api.state.delayMs = 0;
      assert.ok(api.state.pageRequests - requestsBefore < 6, 'one run only, stopped early');
      // A connection made again under the same id starts empty.
      await t.call('POST', '/connection', { connection_id: 'c2', provider_config_key: 'shop', credentials: { type: 'api_key', api_key: 'key-c2' } });
      assert.deepEqual(await readAll(t, 'Item', '', 'c2'), []);
      assert.equal((await t.call('GET', '/sync/c2/items?provider_config_key=shop')).status, 404);
    });
  });
}

suite('embedded', () => undefined);

let db: Awaited<ReturnType<typeof freshDatabase>> | undefined;
describe('on PostgreSQL', { skip: pgSkip }, () => {
  before(async () => {
    db = await freshDatabase();
  });
  after(async () => db?.drop());
  suite('postgres', () => db!.url);
});
