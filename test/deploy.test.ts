/**
 * Provider files deployed through the API: PUT, GET and DELETE /providers/{name} and `terapi deploy`.
 * Two real server processes on one PostgreSQL database: a file deployed through one is used by a
 * sync run on the other within seconds, and a second version by the next run. On both stores: a bad
 * file answered with its errors at file:line:col, an overlay of a built-in, where each part comes
 * from, DELETE (and a deployed provider still in use), and deployed files kept across a restart.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fakeApi, freshDatabase, json, PG_URL, pgSkip, providersDir, ROOT, runCommand, spawnTerapi, startTerapi, tempDir, type Running, type Spawned } from './support.ts';

const BIN = join(ROOT, 'server/bin.mjs');
const SECRET = 'sk_deploy_test';

/** A provider of our own against the local API at `url`; `tag` goes into every mapped record. */
const acme = (url: string, tag: string) => `display_name: Acme
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
    mapping: "{ 'id': id, 'name': name, 'tag': '${tag}' }"
    model: { name: Item }
`;

/** The local API standing in for Acme: 5 items in pages of 2. */
const itemsApi = () =>
  fakeApi((req, res) => {
    const from = Number(new URL(req.url!, 'http://x').searchParams.get('cursor') ?? 0);
    const items = Array.from({ length: 5 }, (_, i) => ({ id: i + 1, name: `item ${i + 1}` }));
    json(res, 200, { items: items.slice(from, from + 2), next: from + 2 < 5 ? from + 2 : null });
  });

/** `terapi <args>` as a user runs it. */
const terapi = (args: string[], env: Record<string, string> = {}) => runCommand([process.execPath, BIN, ...args], { cwd: ROOT, env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', ...env } });

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

type Caller = Pick<Running, 'call'>;
const put = (s: Pick<Running, 'url' | 'secret'>, name: string, text: string, type = 'application/yaml') =>
  fetch(`${s.url}/providers/${name}`, { method: 'PUT', headers: { authorization: `Bearer ${s.secret}`, 'content-type': type }, body: text }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));

/** A sync run triggered through `s`, waited for; answers the records it stored. */
async function runItems(s: Caller, connection: string) {
  // Read first: a quick run may have ended by the time the trigger answers.
  const before = (await s.call('GET', `/sync/${connection}/items?provider_config_key=acme`)).body?.last_run?.run_id;
  const triggered = await s.call('POST', '/sync/trigger', { provider_config_key: 'acme', connection_id: connection, syncs: ['items'] });
  assert.equal(triggered.status, 200, JSON.stringify(triggered.body));
  await waitFor('the run to end', async () => {
    const status = (await s.call('GET', `/sync/${connection}/items?provider_config_key=acme`)).body;
    return status?.last_run && status.last_run.run_id !== before && status.status !== 'running' ? status : undefined;
  });
  const records = await s.call('GET', `/records?provider_config_key=acme&connection_id=${connection}&model=Item`);
  assert.equal(records.status, 200);
  return records.body.records as any[];
}

describe('a provider deployed through one server is used by a run on another (PostgreSQL, real processes)', { skip: pgSkip }, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let api: Awaited<ReturnType<typeof itemsApi>>;
  const processes: Spawned[] = [];
  const files = tempDir('terapi-deploy-files-');

  before(async () => {
    db = await freshDatabase(PG_URL, 'terapi_deploy');
    api = await itemsApi();
  });
  after(async () => {
    await Promise.all(processes.map((p) => p.stop('SIGKILL')));
    await api?.close();
    await db?.drop();
    rmSync(files, { recursive: true, force: true });
  });

  test('terapi deploy through the API server, run on the worker server within seconds; a new version is used by the next run', async (ctx) => {
    const env = { TERAPI_DATABASE_URL: db.url, TERAPI_SECRET_KEY: SECRET };
    // The first serves the API only: every run happens on the second.
    const front = await spawnTerapi({ ...env, TERAPI_ROLE: 'api' });
    processes.push(front);
    const back = await spawnTerapi({ ...env, TERAPI_ROLE: 'all' });
    processes.push(back);
    assert.equal((await back.call('GET', '/providers/acme')).status, 404);

    const file = join(files, 'acme.yaml');
    writeFileSync(file, acme(api.url, 'v1'));
    const cli = await terapi(['deploy', file, '--url', front.url], { TERAPI_SECRET_KEY: SECRET });
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /acme\.yaml: deployed acme, version 1/);
    const deployed = Date.now();

    // Live on the other server within seconds (it polls every second).
    await waitFor('the other server to load acme', async () => ((await back.call('GET', '/providers/acme')).body?.version === 1 ? true : undefined), 10_000);
    const seenAfter = Date.now() - deployed;
    // It polls every second; a loaded machine gets some room.
    assert.ok(seenAfter < 5000, `seen after ${seenAfter} ms`);
    ctx.diagnostic(`the other server had version 1 in force ${seenAfter} ms after terapi deploy returned`);

    assert.equal((await back.call('POST', '/integration', { provider_config_key: 'acme', provider: 'acme' })).status, 200);
    assert.equal((await back.call('POST', '/connection', { connection_id: 'c1', provider_config_key: 'acme', credentials: { type: 'api_key', api_key: 'key-1' } })).status, 200);
    let records = await runItems(front, 'c1');
    assert.equal(records.length, 5);
    assert.deepEqual(new Set(records.map((r) => r.tag)), new Set(['v1']));
    assert.equal(api.requests.at(-1)!.headers['x-key'], 'key-1');
    // The worker server ran it: the API server runs no sync. (Log lines are written in blocks: wait for it.)
    await waitFor('the run in the worker server\'s log', async () => (/sync run started/.test(back.output()) ? true : undefined), 10_000);
    assert.doesNotMatch(front.output(), /sync run started/);

    writeFileSync(file, acme(api.url, 'v2'));
    const second = await terapi(['deploy', file, '--url', front.url, '--secret-key', SECRET]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /version 2/);
    await waitFor('the other server to load version 2', async () => ((await back.call('GET', '/providers/acme')).body?.version === 2 ? true : undefined), 10_000);
    records = await runItems(front, 'c1');
    assert.deepEqual(new Set(records.map((r) => r.tag)), new Set(['v2']));
    assert.equal(records.length, 5);
  });
});

for (const store of ['sqlite', 'postgres'] as const) {
  describe(`provider files through the API (${store})`, { skip: store === 'postgres' ? pgSkip : false }, () => {
    let t: Running;
    let db: Awaited<ReturnType<typeof freshDatabase>> | undefined;
    let api: Awaited<ReturnType<typeof itemsApi>>;
    const dataDir = tempDir('terapi-deploy-data-');
    // A TERAPI_PROVIDERS_DIR file overlays github too: a third origin.
    const folder = providersDir({ github: 'docs: https://example.com/our-github-notes\n' });
    const start = () => startTerapi({ databaseUrl: db?.url, dataDir, providersDirs: [folder], env: { TERAPI_SECRET_KEY: SECRET } });

    before(async () => {
      if (store === 'postgres') db = await freshDatabase(PG_URL, 'terapi_deploy');
      api = await itemsApi();
      t = await start();
    });
    after(async () => {
      await t?.close();
      await api?.close();
      await db?.drop();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(folder, { recursive: true, force: true });
    });

    test('a bad file is a 400 invalid_provider listing every error at file:line:col; nothing is stored', async () => {
      const bad = 'display_name: Bad\nauth: { mode: api_keys }\napi:\n  base_url: https://example.com\n  timeout: 3\n';
      const r = await put(t, 'bad', bad);
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_provider');
      const at = r.body.errors.map((e: any) => `${e.file}:${e.line}:${e.col}`);
      assert.ok(at.includes('deployed/bad.yaml:2:15'), `errors at ${at.join(', ')}`);
      assert.ok(at.includes('deployed/bad.yaml:5:3'), `errors at ${at.join(', ')}`);
      assert.match(r.body.message, /^\d+ errors in provider files:\ndeployed\/bad\.yaml:\d+:\d+: /);
      assert.match(r.body.message, /deployed\/bad\.yaml:5:3: unknown key "timeout" in "api": allowed keys are /);
      // The same errors as the loader gives for the file on disk.
      const dir = providersDir({ bad });
      const validate = await terapi(['validate', join(dir, 'bad.yaml')]);
      rmSync(dir, { recursive: true, force: true });
      const fromLoader = validate.stderr.split('\n').filter((l) => /:\d+:\d+: /.test(l)).map((l) => l.slice(l.indexOf('bad.yaml:') + 'bad.yaml'.length));
      assert.deepEqual(r.body.errors.map((e: any) => `:${e.line}:${e.col}: ${e.message}`), fromLoader);
      assert.equal((await t.call('GET', '/providers/bad')).status, 404);
      // A YAML syntax error, and JSON (which is YAML) located the same way.
      const syntax = await put(t, 'bad', 'display_name: [\n');
      assert.equal(syntax.status, 400);
      assert.deepEqual([syntax.body.errors[0].line, syntax.body.errors[0].col], [2, 1]);
      const asJson = await put(t, 'bad', '{\n  "display_name": "Bad",\n  "auth": {"mode": "api_keys"}\n}', 'application/json');
      assert.equal(asJson.status, 400);
      assert.ok(asJson.body.errors.some((e: any) => e.line === 3 && e.message.includes('"auth.mode" must be one of')), JSON.stringify(asJson.body.errors));
      // Not YAML or JSON, and no secret key.
      assert.equal((await put(t, 'bad', 'x', 'text/html')).status, 415);
      assert.equal((await fetch(`${t.url}/providers/acme`, { method: 'PUT', headers: { 'content-type': 'application/yaml' }, body: acme(api.url, 'v1') })).status, 401);
      assert.equal((await t.call('GET', '/providers/acme', undefined, { authorization: 'Bearer wrong' })).status, 401);
    });

    test('terapi deploy prints the errors at the local file and exits 1', async () => {
      const dir = tempDir('terapi-deploy-cli-');
      const file = join(dir, 'broken.yaml');
      writeFileSync(file, 'display_name: Broken\ncategories: [testing]\ndocs: https://example.com\nauth: { mode: none }\napi:\n  base_url: https://example.com\nsyncs:\n  things:\n    mode: full\n    request: { path: /things }\n    records: "items["\n    mapping: "$"\n    model: { name: Thing }\n');
      const r = await terapi(['deploy', file, '--url', t.url, '--secret-key', SECRET]);
      rmSync(dir, { recursive: true, force: true });
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:11:14: "syncs\\.things\\.records" is not a valid JSONata expression`, 'm'));
      assert.match(r.stderr, /broken\.yaml: not deployed, 1 error/);
      const wrongKey = await terapi(['deploy', join(ROOT, 'providers/github.yaml'), '--url', t.url, '--secret-key', 'nope']);
      assert.equal(wrongKey.code, 1);
      assert.match(wrongKey.stderr, /^terapi: the server at .* refused the secret key/m);
    });

    test('an overlay of a built-in adds a sync and replaces a part; GET shows where each part comes from', async () => {
      const builtin = (await t.call('GET', '/providers/github')).body;
      assert.equal(builtin.version, null);
      assert.deepEqual(builtin.files.map((f: any) => f.origin), ['builtin', 'directory']);
      const overlay = `display_name: GitHub (ours)
syncs:
  stars:
    mode: full
    request: { path: /user/starred }
    pagination: { type: next_url, from: link_header }
    records: $
    mapping: "{ 'id': $string(id), 'name': full_name }"
    model: { name: Star }
`;
      const r = await put(t, 'github', overlay);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.version, 1);
      const part = (parts: any[], name: string) => parts.find((p) => p.part === name);
      assert.deepEqual(part(r.body.parts, 'display_name'), { part: 'display_name', origin: 'deployed', file: 'deployed/github.yaml', version: 1, deployed_at: part(r.body.parts, 'display_name').deployed_at });
      assert.deepEqual(part(r.body.parts, 'syncs.stars'), part(r.body.parts, 'display_name') && { ...part(r.body.parts, 'display_name'), part: 'syncs.stars' });
      assert.deepEqual(part(r.body.parts, 'syncs.issues'), { part: 'syncs.issues', origin: 'builtin', file: 'providers/github.yaml' });
      assert.deepEqual(part(r.body.parts, 'docs'), { part: 'docs', origin: 'directory', file: join(folder, 'github.yaml') });

      const g = (await t.call('GET', '/providers/github')).body;
      assert.equal(g.version, 1);
      assert.equal(g.definition.display_name, 'GitHub (ours)');
      assert.equal(g.definition.docs, 'https://example.com/our-github-notes');
      assert.deepEqual(Object.keys(g.definition.syncs).sort(), ['issues', 'stars']);
      assert.equal(g.definition.auth.mode, 'oauth2');
      assert.deepEqual(g.files.map((f: any) => [f.origin, f.file]), [['builtin', 'providers/github.yaml'], ['directory', join(folder, 'github.yaml')], ['deployed', 'deployed/github.yaml']]);
      assert.equal(g.files[2].text, overlay);
      const listed = (await t.call('GET', '/providers')).body.providers.find((p: any) => p.name === 'github');
      assert.equal(listed.display_name, 'GitHub (ours)');
      assert.deepEqual(listed.syncs.sort(), ['issues', 'stars']);

      // A second PUT replaces the first as a whole: version 2, without the sync of version 1.
      const again = await put(t, 'github', 'display_name: GitHub (ours, again)\n');
      assert.equal(again.status, 200);
      assert.equal(again.body.version, 2);
      assert.deepEqual((await t.call('GET', '/providers')).body.providers.find((p: any) => p.name === 'github').syncs, ['issues']);

      // DELETE: the built-in stays, with the folder's overlay; a second DELETE finds nothing.
      assert.equal((await t.call('DELETE', '/providers/github')).status, 204);
      const back = (await t.call('GET', '/providers/github')).body;
      assert.equal(back.version, null);
      assert.equal(back.definition.display_name, 'GitHub');
      assert.deepEqual(back.files.map((f: any) => f.origin), ['builtin', 'directory']);
      const none = await t.call('DELETE', '/providers/github');
      assert.equal(none.status, 404);
      assert.equal(none.body.error, 'provider_not_deployed');
      // The version count goes on after a DELETE.
      assert.equal((await put(t, 'github', 'display_name: GitHub 4\n')).body.version, 4);
      assert.equal((await t.call('DELETE', '/providers/github')).status, 204);
    });

    test('a new provider is used by a sync; deleting it while an integration uses it is a 409; deployed files outlive a restart', async () => {
      const r = await put(t, 'acme', acme(api.url, 'v1'));
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.ok(r.body.parts.every((p: any) => p.origin === 'deployed' && p.version === 1));
      assert.equal((await t.call('POST', '/integration', { provider_config_key: 'acme', provider: 'acme' })).status, 200);
      assert.equal((await t.call('POST', '/connection', { connection_id: 'c1', provider_config_key: 'acme', credentials: { type: 'api_key', api_key: 'key-1' } })).status, 200);
      assert.deepEqual((await runItems(t, 'c1')).map((x) => x.tag), ['v1', 'v1', 'v1', 'v1', 'v1']);

      const inUse = await t.call('DELETE', '/providers/acme');
      assert.equal(inUse.status, 409);
      assert.equal(inUse.body.error, 'provider_in_use');
      assert.match(inUse.body.message, /integration "acme"/);

      await t.close();
      t = await start();
      const g = (await t.call('GET', '/providers/acme')).body;
      assert.equal(g.version, 1);
      assert.equal(g.definition.syncs.items.mapping, "{ 'id': id, 'name': name, 'tag': 'v1' }");

      assert.equal((await t.call('DELETE', '/integration/acme')).status, 204);
      assert.equal((await t.call('DELETE', '/providers/acme')).status, 204);
      assert.equal((await t.call('GET', '/providers/acme')).status, 404);
      assert.equal((await t.call('POST', '/integration', { provider_config_key: 'acme', provider: 'acme' })).status, 400);
    });
  });
}
