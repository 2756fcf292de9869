/** Reading a sync's pages: every pagination style of the format, against a real HTTP server on 127.0.0.1. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Fresh } from '../core/auth/tokens.ts';
import { loadCatalog, providerFiles } from '../core/format/provider-loader.ts';
import { linkNext, readPages } from '../core/sync/pages.ts';
import { fakeApi, json, providersDir } from './support.ts';

const ITEMS = Array.from({ length: 7 }, (_, i) => ({ id: i + 1, updated: `2026-01-0${i + 1}` }));
let api: Awaited<ReturnType<typeof fakeApi>>;
let fresh: (sync: string) => Fresh;
let syncOf: (name: string) => NonNullable<Fresh['provider']['syncs']>[string];

before(async () => {
  api = await fakeApi((req, res) => {
    const url = new URL(req.url!, api.url);
    const q = url.searchParams;
    const size = Number(q.get('limit') ?? 3);
    if (url.pathname === '/cursor') {
      const start = Number(q.get('after') ?? 0);
      const page = ITEMS.slice(start, start + size);
      return json(res, 200, { items: page, next: start + size < ITEMS.length ? String(start + size) : null });
    }
    if (url.pathname === '/graphql') {
      const start = Number(req.body.after ?? 0);
      return json(res, 200, { data: { nodes: ITEMS.slice(start, start + 3), end: start + 3 < ITEMS.length ? String(start + 3) : null } });
    }
    if (url.pathname === '/linked') {
      const start = Number(q.get('from') ?? 0);
      const next = start + 3 < ITEMS.length ? `<${start === 0 ? '' : api.url}/linked?from=${start + 3}>; rel="next", </linked?from=0>; rel="first"` : '';
      return json(res, 200, ITEMS.slice(start, start + 3), next ? { link: next } : {});
    }
    if (url.pathname === '/stuck') return json(res, 200, { items: [ITEMS[0]], next: 'same' });
    if (url.pathname === '/elsewhere') return json(res, 200, [ITEMS[0]], { link: '<http://127.0.0.2:1/steal>; rel="next"' });
    if (url.pathname === '/bodynext') {
      const start = Number(q.get('from') ?? 0);
      return json(res, 200, { results: ITEMS.slice(start, start + 3), next: start + 3 < ITEMS.length ? `/bodynext?from=${start + 3}` : null });
    }
    if (url.pathname === '/offset') {
      const start = Number(q.get('offset'));
      return json(res, 200, { rows: ITEMS.slice(start, start + size) });
    }
    if (url.pathname === '/pages') {
      const page = Number(q.get('page'));
      return json(res, 200, { list: ITEMS.slice((page - 1) * 3, page * 3), last: page * 3 >= ITEMS.length });
    }
    if (url.pathname === '/since') {
      const since = q.get('since') ?? '';
      const start = Number(q.get('after') ?? 0);
      const newer = ITEMS.filter((i) => i.updated > since);
      return json(res, 200, { items: newer.slice(start, start + 3), next: start + 3 < newer.length ? String(start + 3) : null });
    }
    json(res, 404, {});
  });
  const dir = providersDir({
    pager: `
display_name: Pager
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
api:
  base_url: ${api.url}
  credentials: { in: header, name: X-Key, value: "\${api_key}" }
  retry: { max_attempts: 1 }
syncs:
  cursor:
    mode: full
    request: { path: /cursor }
    pagination: { type: cursor, cursor: next, param: after, page_size: { param: limit, value: 3 } }
    records: items
    mapping: "{ 'id': $string(id) }"
    model: { name: A }
  graphql:
    mode: full
    request: { method: POST, path: /graphql, body: "{ 'after': $cursor }" }
    pagination: { type: cursor, cursor: data.end }
    records: data.nodes
    mapping: "{ 'id': $string(id) }"
    model: { name: B }
  linked:
    mode: full
    request: { path: /linked }
    pagination: { type: next_url, from: link_header }
    records: $
    mapping: "{ 'id': $string(id) }"
    model: { name: C }
  stuck:
    mode: full
    request: { path: /stuck }
    pagination: { type: cursor, cursor: next, param: after }
    records: items
    mapping: "{ 'id': $string(id) }"
    model: { name: I }
  elsewhere:
    mode: full
    request: { path: /elsewhere }
    pagination: { type: next_url, from: link_header }
    records: $
    mapping: "{ 'id': $string(id) }"
    model: { name: D }
  bodynext:
    mode: full
    request: { path: /bodynext }
    pagination: { type: next_url, from: body, path: next }
    records: results
    mapping: "{ 'id': $string(id) }"
    model: { name: E }
  offset:
    mode: full
    request: { path: /offset }
    pagination: { type: offset, param: offset, page_size: { param: limit, value: 3 } }
    records: rows
    mapping: "{ 'id': $string(id) }"
    model: { name: F }
  pages:
    mode: full
    request: { path: /pages }
    pagination: { type: page, param: page, stop: last }
    records: list
    mapping: "{ 'id': $string(id) }"
    model: { name: G }
  since:
    mode: incremental
    request: { path: /since }
    pagination: { type: cursor, cursor: next, param: after }
    records: items
    mapping: "{ 'id': $string(id), 'updated': updated }"
    model: { name: H }
    checkpoint: { value: "$max([$checkpoint, $.updated][$ != null] ~> $map(function($d) { $toMillis($d) })) ~> $fromMillis('[Y0001]-[M01]-[D01]')", param: since }
`,
  });
  const { providers, errors } = loadCatalog([providerFiles(dir)]);
  assert.deepEqual(errors, []);
  const provider = providers.get('pager')!;
  syncOf = (name) => provider.syncs![name];
  fresh = () => ({ provider, record: { connection_config: {} } as Fresh['record'], credentials: { type: 'api_key', api_key: 'k-1' }, integration: {} as Fresh['integration'], scrub: (text) => text });
});
after(() => api.close());

/** Reads every page as a run does and maps its records; the checkpoint as a run would keep it. */
async function runSync(f: Fresh, sync: ReturnType<typeof syncOf>, since?: unknown) {
  const records: Record<string, unknown>[] = [];
  let checkpoint = since;
  let pages = 0;
  for await (const page of readPages(async () => f, sync, { since, budget: { remainingMs: 60_000 } })) {
    pages = page.number;
    const mapped = (await sync.mapping.evaluateEach(page.items)) as Record<string, unknown>[];
    records.push(...mapped);
    if (sync.checkpoint && mapped.length) checkpoint = await sync.checkpoint.value.evaluate(mapped, { checkpoint });
  }
  return { records, pages, checkpoint };
}

const ids = (r: { records: Record<string, unknown>[] }) => r.records.map((x) => x.id).join(',');

test('cursor from a body path, sent as a query parameter, with a page size', async () => {
  const before = api.requests.length;
  const r = await runSync(fresh('cursor'), syncOf('cursor'));
  assert.equal(ids(r), '1,2,3,4,5,6,7');
  assert.equal(r.pages, 3);
  const seen = api.requests.slice(before).map((q) => q.url);
  assert.deepEqual(seen, ['/cursor?limit=3', '/cursor?limit=3&after=3', '/cursor?limit=3&after=6']);
  assert.ok(api.requests.slice(before).every((q) => q.headers['x-key'] === 'k-1'));
});

test('cursor sent in a JSONata request body ($cursor)', async () => {
  const r = await runSync(fresh('graphql'), syncOf('graphql'));
  assert.equal(ids(r), '1,2,3,4,5,6,7');
});

test('next URL from the Link header, relative or absolute, with credentials on every page', async () => {
  const before = api.requests.length;
  const r = await runSync(fresh('linked'), syncOf('linked'));
  assert.equal(ids(r), '1,2,3,4,5,6,7');
  assert.deepEqual(api.requests.slice(before).map((q) => q.url), ['/linked', '/linked?from=3', '/linked?from=6']);
  assert.ok(api.requests.slice(before).every((q) => q.headers['x-key'] === 'k-1'));
});

test('a next URL on another host is refused: credentials never leave for it', async () => {
  await assert.rejects(runSync(fresh('elsewhere'), syncOf('elsewhere')), /next page at another origin/);
});

test('a cursor that does not advance stops the run with an error instead of looping', async () => {
  const before = api.requests.length;
  await assert.rejects(runSync(fresh('stuck'), syncOf('stuck')), /same next page twice/);
  assert.equal(api.requests.length - before, 2);
});

test('next URL from a body path', async () => {
  assert.equal(ids(await runSync(fresh('bodynext'), syncOf('bodynext'))), '1,2,3,4,5,6,7');
});

test('offset pagination stops on an empty page', async () => {
  const r = await runSync(fresh('offset'), syncOf('offset'));
  assert.equal(ids(r), '1,2,3,4,5,6,7');
  assert.equal(r.pages, 4);
});

test('page numbers with a stop condition', async () => {
  const r = await runSync(fresh('pages'), syncOf('pages'));
  assert.equal(ids(r), '1,2,3,4,5,6,7');
  assert.equal(r.pages, 3);
});

test('incremental: every page asks from the checkpoint the run started with; the next run starts from the newest', async () => {
  const before = api.requests.length;
  let r = await runSync(fresh('since'), syncOf('since'));
  assert.equal(ids(r), '1,2,3,4,5,6,7');
  assert.equal(r.checkpoint, '2026-01-07');
  r = await runSync(fresh('since'), syncOf('since'), '2026-01-04');
  assert.equal(ids(r), '5,6,7');
  const asked = api.requests.slice(before).map((q) => new URL(q.url, api.url).searchParams.get('since'));
  assert.deepEqual(asked, [null, null, null, '2026-01-04']);
});

test('linkNext reads rel="next" among other relations', () => {
  assert.equal(linkNext('<https://a.example/p?page=2>; rel="next", <https://a.example/p?page=9>; rel="last"'), 'https://a.example/p?page=2');
  assert.equal(linkNext('<https://a.example/p?page=1>; rel="prev"'), undefined);
  assert.equal(linkNext(undefined), undefined);
});
