/**
 * Hostile and unlucky input, on both stores: every answer is an ErrorResponse with a 4xx (or the
 * documented 5xx of a provider failure), never a 500, a frozen server, or something stored that can
 * no longer be read. Provider patterns run in linear time; provider answers have a size limit.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fakeApi, freshDatabase, json, pgSkip, providersDir, rawGet, sendBytes, spawnTerapi, startTerapi, type Running, type ServerProcess } from './support.ts';

/** 30 characters and one that matches nothing: a backtracking engine tries 2^30 ways to fail `(a+)+b` (28 took 5.7 s). */
const EVIL = `${'a'.repeat(30)}!`;
const LIMIT_BYTES = 1_000_000;

const providers = (url: string) => ({
  hostile: `
display_name: Hostile
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key, pattern: "(a+)+b|[A-Za-z0-9_/+=-]+" }
connection_config:
  region: { pattern: "(x+x+)+y|[a-z]{2}", optional: true }
api:
  base_url: ${url}
  credentials: { in: header, name: X-Api-Key, value: "\${api_key}" }
  retry: { max_attempts: 1 }
syncs:
  items:
    mode: full
    request: { path: /items }
    records: data
    mapping: "{ 'id': id }"
    model: { name: Item }
actions:
  check:
    input: { type: object, properties: { word: { type: string, pattern: "^(a+)+$" } } }
    request: { method: POST, path: /echo, body: "{ 'word': word }" }
  grep:
    input: { type: object, properties: { text: { type: string } } }
    request: { method: POST, path: /echo, body: "{ 'found': $exists($match(text, /(a+)+b/)[0]) }" }
  number:
    input: { type: object, properties: { n: { type: string } } }
    request: { method: POST, path: /echo, body: "{ 'n': $number(n) }" }
  big:
    input: { type: object }
    request: { method: GET, path: /big }
  leak:
    input: { type: object }
    request: { method: GET, path: /leak }
`,
  loose: `
display_name: Loose
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
connection_config:
  site: { pattern: ".+" }
api:
  base_url: https://\${site}.example.invalid
  credentials: { in: header, name: X-Api-Key, value: "\${api_key}" }
  retry: { max_attempts: 1 }
actions:
  ping:
    input: { type: object }
    request: { method: GET, path: /ping }
`,
});

function suite(store: 'sqlite' | 'postgres') {
  describe(`hostile input (${store})`, { skip: store === 'postgres' && pgSkip }, () => {
    let t: Running;
    let api: Awaited<ReturnType<typeof fakeApi>>;
    let dropDb: (() => Promise<void>) | undefined;

    before(async () => {
      api = await fakeApi((req, res) => {
        if (req.url?.startsWith('/big')) return sendBytes(res, LIMIT_BYTES * 2);
        if (req.url === '/leak') {
          // A provider that echoes the credentials it was sent, in several spellings.
          const key = String(req.headers['x-api-key']);
          return json(res, 401, { error: `bad key ${key}`, encoded: encodeURIComponent(key), base64: Buffer.from(key).toString('base64') });
        }
        json(res, 200, { url: req.url, body: req.body ?? null, data: [] });
      });
      let databaseUrl: string | undefined;
      if (store === 'postgres') {
        const db = await freshDatabase();
        dropDb = db.drop;
        databaseUrl = db.url;
      }
      t = await startTerapi({ databaseUrl, providersDirs: [providersDir(providers(api.url))], env: { TERAPI_MAX_RESPONSE_BYTES: String(LIMIT_BYTES) } });
      for (const [key, provider] of [['h', 'hostile'], ['l', 'loose']]) assert.equal((await t.call('POST', '/integration', { provider_config_key: key, provider })).status, 200);
      const r = await t.call('POST', '/connection', { connection_id: 'c', provider_config_key: 'h', credentials: { type: 'api_key', api_key: 'key-1' } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    });
    after(async () => {
      await t?.close();
      await api?.close();
      await dropDb?.();
    });

    /** An answer within `ms`, as an ErrorResponse when it is an error. */
    async function timed(ms: number, run: () => ReturnType<Running['call']>) {
      const started = performance.now();
      const r = await run();
      const took = performance.now() - started;
      assert.ok(took < ms, `took ${Math.round(took)} ms: the server was frozen`);
      if (r.status >= 400) {
        assert.equal(typeof r.body?.message, 'string', `not an ErrorResponse: ${r.text.slice(0, 200)}`);
        assert.match(r.body.error, /^[a-z][a-z_]*$/);
      }
      return r;
    }

    test('provider patterns run in linear time: api_key, connection_config, action input schema, JSONata regex', async () => {
      let r = await timed(2000, () => t.call('POST', '/connection', { connection_id: 'evil-1', provider_config_key: 'h', credentials: { type: 'api_key', api_key: EVIL } }));
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_credentials');
      const session = (await t.call('POST', '/connect/sessions', { connection_id: 'evil-2', allowed_integrations: ['h'] })).body.token;
      r = await timed(2000, () => t.call('POST', `/connect/h/credentials?connect_session_token=${session}`, { api_key: EVIL }, { authorization: '' }));
      assert.equal(r.status, 400);
      r = await timed(2000, () => t.call('POST', '/connection', { connection_id: 'evil-3', provider_config_key: 'h', credentials: { type: 'api_key', api_key: 'k' }, connection_config: { region: 'x'.repeat(28) } }));
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_connection_config');
      r = await timed(2000, () => t.call('POST', '/action/trigger', { provider_config_key: 'h', connection_id: 'c', action_name: 'check', input: { word: EVIL } }));
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_input');
      r = await timed(2000, () => t.call('POST', '/action/trigger', { provider_config_key: 'h', connection_id: 'c', action_name: 'grep', input: { text: EVIL } }));
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body.output.body, { found: false });
      r = await t.call('POST', '/action/trigger', { provider_config_key: 'h', connection_id: 'c', action_name: 'grep', input: { text: 'xaab' } });
      assert.deepEqual(r.body.output.body, { found: true }, 'the regex still matches what it should');
    });

    test('metadata nested thousands deep is refused before anything is written; a toJSON field is plain data', async () => {
      let deep: unknown = 'bottom';
      for (let i = 0; i < 3000; i++) deep = { d: deep };
      let r = await timed(5000, () => t.call('POST', '/connection', { connection_id: 'deep', provider_config_key: 'h', credentials: { type: 'api_key', api_key: 'k' }, metadata: deep as object }));
      assert.equal(r.status, 400, JSON.stringify(r.body).slice(0, 300));
      assert.match(r.body.message, /nested/);
      assert.equal((await t.call('GET', '/connection/deep?provider_config_key=h')).status, 404, 'nothing was written');
      r = await t.call('POST', '/connect/sessions', { connection_id: 'deep', allowed_integrations: ['h'], metadata: deep as object });
      assert.equal(r.status, 400);
      r = await t.call('POST', '/connection', { connection_id: 'huge', provider_config_key: 'h', credentials: { type: 'api_key', api_key: 'k' }, metadata: { blob: 'x'.repeat(200_000) } });
      assert.equal(r.status, 400);
      assert.match(r.body.message, /metadata/);
      r = await t.call('POST', '/connection', { connection_id: 'huge', provider_config_key: 'h', metadata: { blob: 'x'.repeat(2_000_000) } });
      assert.equal(r.status, 413);
      assert.equal(r.body.error, 'body_too_large');
      r = await t.call('POST', '/connection', { connection_id: 'tojson', provider_config_key: 'h', credentials: { type: 'api_key', api_key: 'k' }, metadata: { toJSON: 'x', nested: { toJSON: 1 }, ':colon': ':value' } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      r = await t.call('GET', '/connection/tojson?provider_config_key=h');
      assert.deepEqual(r.body.metadata, { toJSON: 'x', nested: { toJSON: 1 }, ':colon': ':value' });
      assert.equal((await t.call('GET', '/connection?provider_config_key=h')).status, 200);
      assert.equal((await t.call('DELETE', '/connection/tojson?provider_config_key=h')).status, 204);
    });

    test('a NUL character or a lone surrogate is refused in what would be stored; what is stored stays readable and writable', async () => {
      let r = await t.call('POST', '/integration', { provider_config_key: 'nul', provider: 'github', oauth_client_id: 'client\u0000id', oauth_client_secret: 's' });
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.match(r.body.message, /NUL/);
      r = await t.call('POST', '/connection', { connection_id: 'nul', provider_config_key: 'h', credentials: { type: 'api_key', api_key: 'k' }, metadata: { note: 'a\u0000b' } });
      assert.equal(r.status, 400);
      r = await t.call('POST', '/connection', { connection_id: 'nul', provider_config_key: 'h', credentials: { type: 'api_key', api_key: 'k' }, metadata: { ['\udfffkey']: 'x' } });
      assert.equal(r.status, 400);
      r = await t.call('POST', '/integration', { provider_config_key: 'nul', provider: 'github', oauth_client_id: 'client-id', oauth_client_secret: 's', oauth_scopes: 'repo,\ud800' });
      assert.equal(r.status, 400);
      r = await t.call('POST', '/integration', { provider_config_key: 'nul', provider: 'github', oauth_client_id: 'client-id', oauth_client_secret: 's' });
      assert.equal(r.status, 200);
      assert.equal((await t.call('PATCH', '/integration/nul', { oauth_scopes: 'repo' })).status, 200);
      assert.equal((await t.call('POST', '/connection', { connection_id: 'nul', provider_config_key: 'nul', credentials: { type: 'oauth2', access_token: 'x' } })).status, 200);
      assert.equal((await t.call('DELETE', '/integration/nul')).status, 204);
    });

    test('a lone surrogate in an id is a 400, in a path or in a body', async () => {
      let r = await t.call('POST', '/sync/trigger', { provider_config_key: 'h', connection_id: '\ud800', syncs: ['items'] });
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.equal(r.body.error, 'invalid_request');
      r = await t.call('POST', '/connection', { connection_id: 'x', provider_config_key: '\udfff', credentials: { type: 'api_key', api_key: 'k' } });
      assert.equal(r.status, 400);
      r = await t.call('GET', '/connection/%ED%A0%80?provider_config_key=h');
      assert.ok(r.status === 400 || r.status === 404, `answered ${r.status}`);
      assert.equal(typeof r.body.error, 'string');
      r = await t.call('GET', `/connection/x?provider_config_key=${encodeURIComponent('h')}%ED%A0%80`);
      assert.ok(r.status === 400 || r.status === 404, `answered ${r.status}`);
      r = await t.call('GET', '/auth/token/h/%ED%A0%80');
      assert.ok(r.status === 400 || r.status === 404, `answered ${r.status}`);
    });

    test('names found on Object.prototype are unknown, not found', async () => {
      for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
        let r = await t.call('POST', '/action/trigger', { provider_config_key: 'h', connection_id: 'c', action_name: name });
        assert.equal(r.status, 404, `action ${name}: ${JSON.stringify(r.body)}`);
        assert.equal(r.body.error, 'unknown_action');
        r = await t.call('POST', '/sync/trigger', { provider_config_key: 'h', connection_id: 'c', syncs: [name] });
        assert.equal(r.status, 404, `sync ${name}: ${JSON.stringify(r.body)}`);
        assert.equal(r.body.error, 'unknown_sync');
        r = await t.call('GET', `/sync/c/${name}?provider_config_key=h`);
        assert.equal(r.status, 404);
        r = await t.call('POST', '/connection', { connection_id: `p-${name.replace(/_/g, '')}`, provider_config_key: 'h', credentials: { type: 'api_key', api_key: 'k' }, connection_config: JSON.parse(`{"${name}": "x"}`) });
        assert.equal(r.status, 400, `connection_config.${name}: ${JSON.stringify(r.body)}`);
        // A body with a __proto__ key is refused by the body parser itself.
        assert.equal(r.body.error, name === '__proto__' ? 'invalid_request' : 'invalid_connection_config', JSON.stringify(r.body));
        r = await t.call('POST', '/connect/sessions', { connection_id: 'p', allowed_integrations: ['h'], connection_config: JSON.parse(`{"h": {"${name}": "x"}}`) });
        assert.equal(r.status, 400, `session connection_config.${name}: ${JSON.stringify(r.body)}`);
      }
    });

    test('a value that makes an invalid URL is a 400, not a throw inside the request code', async () => {
      let r = await t.call('POST', '/connection', { connection_id: 'bad-url', provider_config_key: 'l', credentials: { type: 'api_key', api_key: 'k' }, connection_config: { site: 'a b<>' } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      r = await t.call('POST', '/action/trigger', { provider_config_key: 'l', connection_id: 'bad-url', action_name: 'ping' });
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.equal(r.body.error, 'invalid_url');
      r = await t.call('GET', '/proxy/ping', undefined, { 'provider-config-key': 'l', 'connection-id': 'bad-url' });
      assert.equal(r.status, 400, JSON.stringify(r.body));
    });

    test('an expression that fails in an action is a documented 502 expression_error naming its place in the provider file', async () => {
      const r = await t.call('POST', '/action/trigger', { provider_config_key: 'h', connection_id: 'c', action_name: 'number', input: { n: 'not a number' } });
      assert.equal(r.status, 502, JSON.stringify(r.body));
      assert.equal(r.body.error, 'expression_error');
      assert.match(r.body.message, /hostile\.yaml:\d+:\d+: "actions\.number\.request\.body"/);
    });

    test('credentials a provider echoes in an error are scrubbed from the answer and the logs', async () => {
      const key = 'sk_live_S3cret/+=key';
      let r = await t.call('POST', '/connection', { connection_id: 'leaky', provider_config_key: 'h', credentials: { type: 'api_key', api_key: key } });
      assert.equal(r.status, 200);
      const logged = t.logs.length;
      r = await t.call('POST', '/action/trigger', { provider_config_key: 'h', connection_id: 'leaky', action_name: 'leak' });
      assert.equal(r.status, 502);
      assert.equal(r.body.error, 'provider_error');
      assert.match(r.body.message, /bad key \[redacted\]/);
      const shown = r.text + t.logs.slice(logged).join('');
      for (const form of [key, encodeURIComponent(key), Buffer.from(key).toString('base64'), JSON.stringify(key).slice(1, -1)]) assert.ok(!shown.includes(form), `${form} was shown`);
    });

    test('the proxy refuses paths that climb above the base path, in every spelling', async () => {
      for (const path of ['/proxy/a/..\\..\\x', '/proxy/a/%5C..%5C..%5Cx', '/proxy/..%2F..%2Fx', '/proxy/a/..%5cx', '/proxy/a/%2e%2E%5c', '/proxy/a\\b']) {
        const status = await rawGet(t, path, { 'provider-config-key': 'h', 'connection-id': 'c' });
        assert.equal(status, 400, path);
      }
      const r = await t.call('GET', '/proxy/group%2Fproject/items', undefined, { 'provider-config-key': 'h', 'connection-id': 'c' });
      assert.equal(r.status, 200, 'an encoded slash inside a segment (GitLab project paths) still goes through');
      assert.equal(r.body.url, '/group%2Fproject/items');
    });

    test('a provider answer over the size limit is a 502 response_too_large where it is read into memory', async () => {
      const r = await t.call('POST', '/action/trigger', { provider_config_key: 'h', connection_id: 'c', action_name: 'big' });
      assert.equal(r.status, 502, r.text.slice(0, 200));
      assert.equal(r.body.error, 'response_too_large');
      assert.match(r.body.message, /1000000 bytes/);
    });
  });
}

describe('the proxy streams provider answers (real process)', () => {
  let api: Awaited<ReturnType<typeof fakeApi>>;
  let server: ServerProcess;
  before(async () => {
    api = await fakeApi((req, res) => sendBytes(res, Number(new URL(req.url!, 'http://x').searchParams.get('bytes'))));
    server = await spawnTerapi({ TERAPI_PROVIDERS_DIR: providersDir(providers(api.url)) });
    assert.equal((await server.call('POST', '/integration', { provider_config_key: 'h', provider: 'hostile' })).status, 200);
    assert.equal((await server.call('POST', '/connection', { connection_id: 'c', provider_config_key: 'h', credentials: { type: 'api_key', api_key: 'k' } })).status, 200);
  });
  after(async () => {
    await server?.stop();
    await api?.close();
  });

  test('a 300 MB answer goes through the proxy whole, and the server stays small', async () => {
    const bytes = 300 * 1024 * 1024;
    // The server's worker threads load their modules after it listens: the baseline is taken once
    // they have, after a small answer through the same path.
    await (await fetch(`${server.url}/proxy/big?bytes=1024`, { headers: { authorization: `Bearer ${server.secret}`, 'provider-config-key': 'h', 'connection-id': 'c' } })).arrayBuffer();
    await new Promise((r) => setTimeout(r, 3000));
    const before = peakRss(server.child.pid!);
    const res = await fetch(`${server.url}/proxy/big?bytes=${bytes}`, { headers: { authorization: `Bearer ${server.secret}`, 'provider-config-key': 'h', 'connection-id': 'c' } });
    let received = 0;
    for await (const chunk of res.body!) received += (chunk as Uint8Array).length;
    assert.equal(res.status, 200);
    assert.equal(received, bytes);
    const grew = peakRss(server.child.pid!) - before;
    assert.ok(grew < 100 * 1024 * 1024, `the server's peak memory grew by ${Math.round(grew / 1048576)} MB for a 300 MB answer`);
  });
});

/** The peak resident memory of a process (VmHWM), in bytes. */
function peakRss(pid: number): number {
  const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1];
  return Number(kb) * 1024;
}

suite('sqlite');
suite('postgres');
