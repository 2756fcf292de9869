/**
 * `terapi dryrun`, run as a user runs it, against a running server and a local API standing in for
 * the provider: a sync's mapped records and progress printed, nothing stored; --limit; an action's
 * output; the token taken from the server's token endpoint; a provider deployed through the API.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fakeApi, json, ROOT, runCommand, startTerapi, tempDir, type Running } from './support.ts';

const BIN = join(ROOT, 'server/bin.mjs');
const SECRET = 'sk_dryrun_test';
const TOTAL = 25;

const acme = (url: string) => `display_name: Acme
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
    pagination: { type: cursor, cursor: next, param: cursor }
    records: items
    mapping: "{ 'id': id, 'title': $uppercase(name) }"
    model: { name: Item }
actions:
  create_item:
    input:
      type: object
      required: [name]
      properties: { name: { type: string } }
    request:
      method: POST
      path: /items
      body: "{ 'name': name }"
    output: "{ 'created': item.id }"
`;

let t: Running;
let api: Awaited<ReturnType<typeof fakeApi>>;
const state = { failPage: 0 };

before(async () => {
  api = await fakeApi((req, res) => {
    if (req.headers['x-key'] !== 'key-1') return json(res, 401, { message: 'bad key' });
    if (req.method === 'POST') return json(res, 201, { item: { id: 'new-1', name: req.body.name } });
    const from = Number(new URL(req.url!, 'http://x').searchParams.get('cursor') ?? 0);
    if (state.failPage && from / 10 + 1 === state.failPage) return json(res, 404, { message: 'gone' });
    const items = Array.from({ length: TOTAL }, (_, i) => ({ id: i + 1, name: `item ${i + 1}` }));
    json(res, 200, { items: items.slice(from, from + 10), next: from + 10 < TOTAL ? from + 10 : null });
  });
  t = await startTerapi({ env: { TERAPI_SECRET_KEY: SECRET } });
  // The provider exists only as a file deployed through the API: the command finds it there.
  const put = await fetch(`${t.url}/providers/acme`, { method: 'PUT', headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/yaml' }, body: acme(api.url) });
  assert.equal(put.status, 201);
  assert.equal((await t.call('POST', '/integration', { provider_config_key: 'acme-int', provider: 'acme' })).status, 200);
  assert.equal((await t.call('POST', '/connection', { connection_id: 'c1', provider_config_key: 'acme-int', credentials: { type: 'api_key', api_key: 'key-1' } })).status, 200);
});
after(async () => {
  await t?.close();
  await api?.close();
});

/** `terapi dryrun ...` in a child process, with only the server's URL and key. */
const dryrun = (args: string[]) => runCommand([process.execPath, BIN, 'dryrun', ...args, '--url', t.url], { cwd: ROOT, env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', TERAPI_SECRET_KEY: SECRET } });

test('a sync dry run prints progress and the mapped records, with the token from the server, and stores nothing', async () => {
  const before = api.requests.length;
  const r = await dryrun(['acme-int', 'items', '--connection', 'c1']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 10, 'a sample of 10 by default');
  assert.deepEqual(lines[0], { id: 1, title: 'ITEM 1' });
  assert.deepEqual(lines[9], { id: 10, title: 'ITEM 10' });
  assert.match(r.stderr, /^dryrun: page 1, 10 records, \d+ records\/s$/m);
  assert.match(r.stderr, /^dryrun: page 3, 25 records, \d+ records\/s$/m);
  assert.match(r.stderr, /^dryrun: success: 3 pages, 25 records in [\d.]+ s \(\d+ records\/s\); showing 10; nothing stored$/m);
  // The provider was asked with the connection's key, which the command got from GET /auth/token.
  const asked = api.requests.slice(before);
  assert.equal(asked.length, 3);
  assert.ok(asked.every((q) => q.headers['x-key'] === 'key-1'));
  assert.ok(t.logs.some((l) => l.includes('"path":"/auth/token/acme-int/c1"') && l.includes('"status":200')));
  // Nothing stored: no records, no run.
  const records = await t.call('GET', '/records?provider_config_key=acme-int&connection_id=c1&model=Item');
  assert.equal(records.status, 200);
  assert.deepEqual(records.body.records, []);
  assert.equal((await t.call('GET', '/sync/c1/items?provider_config_key=acme-int')).body.error, 'sync_not_run');
});

test('--file merges a local file on top of the deployed one: a change tried before it is deployed', async () => {
  const dir = tempDir('terapi-dryrun-');
  writeFileSync(join(dir, 'acme.yaml'), `syncs:\n  items:\n    mode: full\n    request: { path: /items }\n    pagination: { type: cursor, cursor: next, param: cursor }\n    records: items\n    mapping: "{ 'id': id, 'title': $lowercase(name), 'tried': true }"\n    model: { name: Item }\n`);
  const r = await dryrun(['acme-int', 'items', '--connection', 'c1', '--limit', '10', '--sample', '1', '--file', join(dir, 'acme.yaml')]);
  rmSync(dir, { recursive: true, force: true });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { id: 1, title: 'item 1', tried: true });
  // The server still has the deployed version.
  assert.match((await t.call('GET', '/providers/acme')).body.definition.syncs.items.mapping, /\$uppercase/);
});

test('basic and none connections: the credentials the server answers are put where the provider file says', async () => {
  const other = (mode: string) => `display_name: Other\ncategories: [testing]\ndocs: https://example.com/docs\nauth: { mode: ${mode} }\napi:\n  base_url: ${api.url}\nsyncs:\n  things:\n    mode: full\n    request: { path: /things }\n    records: things\n    mapping: "{ 'id': id }"\n    model: { name: Thing }\n`;
  const seen: (string | undefined)[] = [];
  const things = await fakeApi((req, res) => {
    seen.push(req.headers.authorization);
    json(res, 200, { things: [{ id: 'a' }, { id: 'b' }] });
  });
  try {
    for (const [mode, credentials, expected] of [
      ['basic', { type: 'basic', username: 'ann', password: 'pa:ss word' }, `Basic ${Buffer.from('ann:pa:ss word').toString('base64')}`],
      ['none', undefined, undefined],
    ] as const) {
      const put = await fetch(`${t.url}/providers/other-${mode}`, { method: 'PUT', headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/yaml' }, body: other(mode).replace(api.url, things.url) });
      assert.equal(put.status, 201, await put.text());
      assert.equal((await t.call('POST', '/integration', { provider_config_key: `int-${mode}`, provider: `other-${mode}` })).status, 200);
      assert.equal((await t.call('POST', '/connection', { connection_id: 'u', provider_config_key: `int-${mode}`, ...(credentials ? { credentials } : {}) })).status, 200);
      const r = await dryrun([`int-${mode}`, 'things', '--connection', 'u']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n').map((l) => JSON.parse(l)), [{ id: 'a' }, { id: 'b' }]);
      assert.equal(seen.at(-1), expected);
    }
  } finally {
    await things.close();
  }
});

test('--limit stops after that many records, --sample sets how many are printed', async () => {
  const r = await dryrun(['acme-int', 'items', '--connection', 'c1', '--limit', '12', '--sample', '3']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n').map((l) => JSON.parse(l).id), [1, 2, 3]);
  assert.match(r.stderr, /^dryrun: success: 2 pages, 12 records in [\d.]+ s \(\d+ records\/s\), stopped at --limit; showing 3; nothing stored$/m);
  assert.doesNotMatch(r.stderr, /page 3/);
});

test('an action dry run prints its output; a failing run, an unknown sync and bad input exit 1', async () => {
  const r = await dryrun(['acme-int', '--action', 'create_item', '--input', '{"name":"new"}', '--connection', 'c1']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { created: 'new-1' });
  assert.deepEqual(api.requests.at(-1)!.body, { name: 'new' });
  assert.match(r.stderr, /^dryrun: action create_item done in \d+ ms; nothing stored$/m);

  const badInput = await dryrun(['acme-int', '--action', 'create_item', '--input', '{}', '--connection', 'c1']);
  assert.equal(badInput.code, 1);
  assert.match(badInput.stderr, /^terapi: the input of action "create_item" does not match its schema: input must have required property 'name'$/m);

  const unknown = await dryrun(['acme-int', 'nope', '--connection', 'c1']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /^terapi: provider "acme" has no sync "nope"; its syncs are items$/m);

  const noConnection = await dryrun(['acme-int', 'items', '--connection', 'c2']);
  assert.equal(noConnection.code, 1);
  assert.match(noConnection.stderr, /^terapi: connection "c2": unknown_connection: /m);

  state.failPage = 2;
  try {
    const failed = await dryrun(['acme-int', 'items', '--connection', 'c1']);
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /^dryrun: error: 1 page, 10 records/m);
    assert.match(failed.stderr, /^terapi: the sync failed: Acme answered HTTP 404 to page 2/m);
  } finally {
    state.failPage = 0;
  }
  assert.deepEqual((await t.call('GET', '/records?provider_config_key=acme-int&connection_id=c1&model=Item')).body.records, []);
});
