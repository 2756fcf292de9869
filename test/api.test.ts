/**
 * Conformance: every operation of the served OpenAPI document, success and failure paths, on the
 * embedded store and on PostgreSQL; every response body is checked against the document's schema.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import ajvFormats from 'ajv-formats';
import { parse } from 'yaml';
import pg from 'pg';
import { openapi } from '../server/openapi.ts';
import { fakeApi, freshDatabase, json, PG_URL, pgSkip, providersDir, rawGet, startTerapi, type Running } from './support.ts';

const ajv = new Ajv({ strict: false, allErrors: true });
ajvFormats.default(ajv);
ajv.addSchema({ $id: 'openapi', components: openapi.components });

/** Checks a response against the document: its status must be listed, its body must match. */
function conforms(operationId: string, res: { status: number; body: any }): void {
  const op = Object.values(openapi.paths).flatMap((item) => Object.values(item) as any[]).find((o) => o.operationId === operationId);
  assert.ok(op, `no operation ${operationId}`);
  const response = op.responses[String(res.status)];
  assert.ok(response, `${operationId} answered ${res.status}, which the document does not list: ${JSON.stringify(res.body)}`);
  const ref = response.$ref ? (openapi as any).components.responses[response.$ref.split('/').pop()] : response;
  const schema = ref.content?.['application/json']?.schema;
  if (!schema) return;
  const validate = ajv.compile(JSON.parse(JSON.stringify(schema).replace(/"#\/components\//g, '"openapi#/components/')));
  assert.ok(validate(res.body), `${operationId} ${res.status} body does not match the document: ${ajv.errorsText(validate.errors)} in ${JSON.stringify(res.body)}`);
  if (res.status >= 400) assert.match((res.body as { error: string }).error, /^[a-z][a-z_]*$/);
}

test('the served document keeps the contract (test/fixtures/contract-openapi.yaml) unchanged', () => {
  // The contract as it was given, vendored: the repository points at nothing outside itself.
  const contract = parse(readFileSync(new URL('./fixtures/contract-openapi.yaml', import.meta.url), 'utf8'));
  for (const [path, item] of Object.entries<any>(contract.paths)) {
    for (const [method, op] of Object.entries<any>(item)) {
      const served = (openapi.paths as any)[path]?.[method];
      assert.ok(served, `${method.toUpperCase()} ${path} is missing from the served document`);
      assert.deepEqual(served.parameters, op.parameters, `${op.operationId} parameters changed`);
      assert.deepEqual(served.requestBody, op.requestBody, `${op.operationId} body changed`);
      for (const [code, r] of Object.entries(op.responses)) assert.deepEqual(served.responses[code], r, `${op.operationId} ${code} changed`);
    }
  }
  for (const [name, schema] of Object.entries<any>(contract.components.schemas)) {
    const mine = (openapi.components.schemas as any)[name];
    // Descriptions may say more; types and formats may not change. The served document may be more
    // exact where no client of the contract is hurt: a string answered from a fixed set lists it (enum),
    // a free-form credentials object is typed per shape (a oneOf of objects), and an answer's fields
    // that are always present are required. A request's required fields stay as they were.
    for (const [prop, def] of Object.entries<any>(schema.properties ?? {})) {
      const served = mine.properties[prop];
      if (served.$ref) {
        const target = (openapi.components.schemas as any)[served.$ref.split('/').pop()];
        assert.deepEqual([def.type, target.type], ['object', 'object'], `${name}.${prop} changed`);
        for (const branch of target.oneOf) assert.equal((openapi.components.schemas as any)[branch.$ref.split('/').pop()].type, 'object', `${name}.${prop} changed`);
        continue;
      }
      const answer = !name.endsWith('Request');
      assert.deepEqual(undescribed(served, !def.enum, answer), undescribed(def, false, answer), `${name}.${prop} changed`);
    }
    if (name.endsWith('Request')) assert.deepEqual(mine.required, schema.required, `${name}.required changed`);
    else for (const field of schema.required ?? []) assert.ok(mine.required?.includes(field), `${name}.${field} is no longer required`);
  }
});

/** A schema without its descriptions (and, where the served one may say more, without its enums or required lists). */
const undescribed = (v: unknown, enums = false, required = false) =>
  JSON.parse(JSON.stringify(v, (k, x) => (k === 'description' || (enums && k === 'enum') || (required && k === 'required' && Array.isArray(x)) ? undefined : x)));

function suite(store: 'sqlite' | 'postgres') {
  describe(`REST API on ${store}`, { skip: store === 'postgres' && pgSkip }, () => {
    let t: Running;
    let api: Awaited<ReturnType<typeof fakeApi>>;
    let dropDb: (() => Promise<void>) | undefined;
    let dbUrl: string | undefined;

    before(async () => {
      api = await fakeApi((req, res) => {
        const auth = req.headers['x-api-key'];
        if (req.url === '/me') return json(res, auth === 'good-key' ? 200 : 401, {});
        if (req.url === '/resources') return json(res, 200, [{ id: 'cloud-7', name: 'Acme' }]);
        if (req.url?.startsWith('/t/cloud-7/echo')) return json(res, 200, { url: req.url });
        if (req.url?.startsWith('/echo')) return json(res, req.method === 'POST' ? 201 : 200, { method: req.method, url: req.url, key: auth, authorization: req.headers.authorization ?? null, custom: req.headers['x-custom'] ?? null, body: req.body ?? null });
        if (req.url === '/items' && req.method === 'POST') {
          if (req.body?.title === 'boom') return json(res, 500, { message: 'broken' });
          return json(res, 201, { item: { id: 'it_1', title: req.body.title, key: auth } });
        }
        if (req.url?.startsWith('/items')) {
          const page = Number(new URL(req.url, 'http://x').searchParams.get('page') ?? '1');
          return json(res, 200, { data: page <= 2 ? [{ id: `a${page}`, name: 'x' }, { id: `b${page}`, name: 'y' }] : [] });
        }
        json(res, 404, {});
      });
      const dir = providersDir({
        testapi: `
display_name: Test API
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
connection_config:
  region: { pattern: "[a-z]{2}", optional: true }
verification: { request: { path: /me } }
api:
  base_url: ${api.url}
  credentials: { in: header, name: X-Api-Key, value: "\${api_key}" }
  retry: { max_attempts: 1 }
syncs:
  items:
    mode: full
    auto_start: false
    request: { path: /items }
    pagination: { type: page, param: page }
    records: data
    mapping: "{ 'id': id, 'name': name }"
    model: { name: Item }
actions:
  create_item:
    input: { type: object, required: [title], properties: { title: { type: string } } }
    request: { method: POST, path: /items, body: "{ 'title': title }" }
    output: "{ 'id': item.id, 'title': item.title, 'key_seen': item.key }"
  delete_echo:
    input: { type: object }
    request: { method: DELETE, path: /echo/gone }
`,
        testpost: `
display_name: Test Post-connection
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
connection_config:
  cloud_id: { pattern: "[a-z0-9-]+" }
post_connection:
  request: { path: "${api.url}/resources" }
  config: { cloud_id: "$[0].id" }
  metadata: { site: "$[0].name" }
api:
  base_url: "${api.url}/t/\${cloud_id}"
  credentials: { in: header, name: X-Api-Key, value: "\${api_key}" }
`,
        testbasic: `
display_name: Test Basic
categories: [testing]
docs: https://example.com/docs
auth: { mode: basic }
api: { base_url: "${api.url}" }
`,
        testnone: `
display_name: Test None
categories: [testing]
docs: https://example.com/docs
auth: { mode: none }
connection_config:
  subdomain: { pattern: "[a-z0-9-]+" }
api: { base_url: "https://\${subdomain}.example.com" }
`,
      });
      if (store === 'postgres') {
        const db = await freshDatabase();
        dropDb = db.drop;
        dbUrl = db.url;
      }
      t = await startTerapi({ databaseUrl: dbUrl, providersDirs: [dir] });
    });
    after(async () => {
      await t?.close();
      await api?.close();
      await dropDb?.();
    });

    test('every operation needs the secret key: 401 without it or with a wrong one', async () => {
      for (const [method, path, id] of [['GET', '/integration', 'listIntegrations'], ['GET', '/connection', 'listConnections'], ['POST', '/sync/trigger', 'triggerSync'], ['GET', '/auth/token/a/b', 'getAuthToken']] as const) {
        const none = await t.call(method, path, undefined, { authorization: '' });
        assert.equal(none.status, 401);
        conforms(id, none);
        const wrong = await t.call(method, path, undefined, { authorization: `Bearer ${t.secret}x` });
        assert.equal(wrong.status, 401);
        assert.equal(wrong.body.error, 'unauthorized');
      }
      // Near misses: the key cut short, its last character changed, another case, the key twice.
      const s = t.secret;
      for (const given of [s.slice(0, -1), `${s.slice(0, -1)}${s.at(-1) === 'a' ? 'b' : 'a'}`, s.toUpperCase(), s + s]) {
        const r = await t.call('GET', '/integration', undefined, { authorization: `Bearer ${given}` });
        assert.equal(r.status, 401, JSON.stringify(given));
      }
      assert.equal((await t.call('GET', '/integration')).status, 200);
    });

    test('integrations: create, read, list, patch, duplicate, unknown', async () => {
      let r = await t.call('GET', '/integration');
      assert.equal(r.status, 200);
      conforms('listIntegrations', r);
      assert.deepEqual(r.body.integrations, []);

      r = await t.call('POST', '/integration', { provider_config_key: 'gh', provider: 'github', oauth_client_id: 'cid', oauth_client_secret: 'csecret-123', oauth_scopes: 'repo,user' });
      assert.equal(r.status, 200);
      conforms('createIntegration', r);
      assert.equal(r.body.unique_key, 'gh');
      assert.equal(r.body.connection_count, 0);
      assert.equal(r.body.oauth_scopes, 'repo,user');
      assert.ok(!r.text.includes('csecret-123'), 'the client secret is never shown');

      r = await t.call('POST', '/integration', { provider_config_key: 'gh', provider: 'github', oauth_client_id: 'x', oauth_client_secret: 'y' });
      assert.equal(r.status, 409);
      assert.equal(r.body.error, 'integration_exists');

      r = await t.call('POST', '/integration', { provider_config_key: 'nope', provider: 'no-such-provider' });
      assert.equal(r.status, 400);
      conforms('createIntegration', r);
      assert.equal(r.body.error, 'unknown_provider');

      r = await t.call('POST', '/integration', { provider: 'github' });
      assert.equal(r.status, 400);
      assert.equal(r.body.message, 'body.provider_config_key is required');

      r = await t.call('POST', '/integration', { provider_config_key: 'gh2', provider: 'github' });
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'missing_oauth_client');

      r = await t.call('POST', '/integration', '{not json');
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_request');

      for (const [key, provider] of [['api', 'testapi'], ['basic', 'testbasic'], ['none', 'testnone']]) {
        r = await t.call('POST', '/integration', { provider_config_key: key, provider });
        assert.equal(r.status, 200, JSON.stringify(r.body));
      }
      r = await t.call('POST', '/integration', { provider_config_key: 'api2', provider: 'testapi', oauth_client_id: 'x' });
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'oauth_not_used');

      r = await t.call('GET', '/integration/gh');
      assert.equal(r.status, 200);
      conforms('getIntegration', r);
      r = await t.call('GET', '/integration/missing');
      assert.equal(r.status, 404);
      conforms('getIntegration', r);
      assert.equal(r.body.error, 'unknown_integration');

      r = await t.call('PATCH', '/integration/gh', { oauth_client_secret: 'rotated-secret', oauth_scopes: 'repo' });
      assert.equal(r.status, 200);
      conforms('updateIntegration', r);
      assert.equal(r.body.oauth_scopes, 'repo');
      assert.ok(!r.text.includes('rotated-secret'));
      r = await t.call('PATCH', '/integration/gh', {});
      assert.equal(r.status, 400);
      r = await t.call('PATCH', '/integration/missing', { oauth_scopes: 'x' });
      assert.equal(r.status, 404);

      r = await t.call('GET', '/integration');
      assert.deepEqual(r.body.integrations.map((i: any) => i.unique_key).sort(), ['api', 'basic', 'gh', 'none']);
    });

    test('connections: each credential shape, wrong shapes, config checks, duplicates', async () => {
      let r = await t.call('POST', '/connection', { connection_id: 'u1', provider_config_key: 'api', credentials: { type: 'api_key', api_key: 'good-key' }, metadata: { plan: 'pro' } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      conforms('createConnection', r);
      assert.deepEqual(r.body.credentials, { type: 'api_key' });
      assert.equal(r.body.needs_reauth, false);
      assert.ok(!r.text.includes('good-key'));

      r = await t.call('POST', '/connection', { connection_id: 'u1', provider_config_key: 'api', credentials: { type: 'api_key', api_key: 'k' } });
      assert.equal(r.status, 409);
      conforms('createConnection', r);
      assert.equal(r.body.error, 'connection_exists');

      r = await t.call('POST', '/connection', { connection_id: 'u2', provider_config_key: 'api', credentials: { type: 'basic', username: 'a', password: 'b' } });
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_credentials');
      assert.match(r.body.message, /api_key auth: credentials must be \{"type": "api_key", "api_key"\}/);

      r = await t.call('POST', '/connection', { connection_id: 'u2', provider_config_key: 'api', credentials: { type: 'api_key', api_key: 'k' }, connection_config: { region: 'EUROPE' } });
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_connection_config');
      r = await t.call('POST', '/connection', { connection_id: 'u2', provider_config_key: 'api', credentials: { type: 'api_key', api_key: 'k' }, connection_config: { colour: 'x' } });
      assert.equal(r.status, 400);
      assert.match(r.body.message, /no connection_config field "colour"/);

      r = await t.call('POST', '/connection', { connection_id: 'u1', provider_config_key: 'missing', credentials: { type: 'api_key', api_key: 'k' } });
      assert.equal(r.status, 404);
      conforms('createConnection', r);
      r = await t.call('POST', '/connection', { provider_config_key: 'api' });
      assert.equal(r.status, 400);
      assert.equal(r.body.message, 'body.connection_id is required');

      r = await t.call('POST', '/connection', { connection_id: 'g1', provider_config_key: 'gh', credentials: { type: 'oauth2', access_token: 'gho_secret_token', refresh_token: 'ghr_refresh', expires_at: '2099-01-01T00:00:00Z' } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body.credentials, { type: 'oauth2', expires_at: '2099-01-01T00:00:00.000Z' });
      r = await t.call('POST', '/connection', { connection_id: 'b1', provider_config_key: 'basic', credentials: { type: 'basic', username: 'ann', password: 'pw' } });
      assert.equal(r.status, 200);
      r = await t.call('POST', '/connection', { connection_id: 'n1', provider_config_key: 'none', credentials: { type: 'api_key', api_key: 'x' }, connection_config: { subdomain: 'acme' } });
      assert.equal(r.status, 400);
      r = await t.call('POST', '/connection', { connection_id: 'n1', provider_config_key: 'none' });
      assert.equal(r.status, 400);
      assert.match(r.body.message, /needs connection_config.subdomain/);
      r = await t.call('POST', '/connection', { connection_id: 'n1', provider_config_key: 'none', connection_config: { subdomain: 'acme' } });
      assert.equal(r.status, 200);

      r = await t.call('GET', '/connection/u1?provider_config_key=api');
      assert.equal(r.status, 200);
      conforms('getConnection', r);
      assert.deepEqual(r.body.metadata, { plan: 'pro' });
      r = await t.call('GET', '/connection/u1');
      assert.equal(r.status, 400);
      conforms('getConnection', r);
      assert.equal(r.body.message, 'query.provider_config_key is required');
      r = await t.call('GET', '/connection/zzz?provider_config_key=api');
      assert.equal(r.status, 404);
      assert.equal(r.body.error, 'unknown_connection');
      r = await t.call('GET', '/connection/u1?provider_config_key=missing');
      assert.equal(r.status, 404);
      assert.equal(r.body.error, 'unknown_integration');

      r = await t.call('GET', '/connection');
      assert.equal(r.status, 200);
      conforms('listConnections', r);
      assert.equal(r.body.connections.length, 4);
      r = await t.call('GET', '/connection?provider_config_key=api');
      assert.deepEqual(r.body.connections.map((c: any) => c.id), ['u1']);
      r = await t.call('GET', '/connection?connection_id=g1');
      assert.deepEqual(r.body.connections.map((c: any) => c.provider_config_key), ['gh']);
      r = await t.call('GET', '/connection?provider_config_key=missing');
      assert.equal(r.status, 404);

      r = await t.call('GET', '/integration/api');
      assert.equal(r.body.connection_count, 1);
    });

    test('getAuthToken answers Bearer, ApiKey, Basic, and 400 no_credentials', async () => {
      let r = await t.call('GET', '/auth/token/gh/g1');
      assert.equal(r.status, 200);
      conforms('getAuthToken', r);
      assert.equal(r.body.type, 'Bearer');
      assert.equal(r.body.access_token, 'gho_secret_token');
      assert.equal(r.body.expires_at, '2099-01-01T00:00:00.000Z');
      r = await t.call('GET', '/auth/token/api/u1');
      assert.deepEqual(r.body, { type: 'ApiKey', access_token: 'good-key' });
      r = await t.call('GET', '/auth/token/basic/b1');
      assert.deepEqual(r.body, { type: 'Basic', access_token: Buffer.from('ann:pw').toString('base64') });
      r = await t.call('GET', '/auth/token/none/n1');
      assert.equal(r.status, 400);
      conforms('getAuthToken', r);
      assert.equal(r.body.error, 'no_credentials');
      r = await t.call('GET', '/auth/token/api/nobody');
      assert.equal(r.status, 404);
      conforms('getAuthToken', r);
      r = await t.call('GET', '/auth/token/api/u1?force_refresh=maybe');
      assert.equal(r.status, 400);
      assert.match(r.body.message, /query.force_refresh must be a boolean/);
    });

    test('no token is readable in the database', async () => {
      let rows: string[];
      if (store === 'postgres') {
        const c = new pg.Client({ connectionString: dbUrl });
        await c.connect();
        rows = (await c.query('SELECT value FROM keyv')).rows.map((r) => r.value);
        await c.end();
      } else {
        const sqlite3 = (await import('sqlite3')).default;
        const db = new sqlite3.Database(`${t.engine.config.dataDir}/terapi.sqlite`);
        rows = await new Promise((res, rej) => db.all('SELECT value FROM keyv', (e, r: any[]) => (e ? rej(e) : res(r.map((x) => x.value)))));
        db.close();
      }
      const all = rows.join('\n');
      assert.ok(all.includes('"gh"'), 'the rows were read');
      for (const secret of ['gho_secret_token', 'ghr_refresh', 'good-key', 'rotated-secret', '"pw"']) assert.ok(!all.includes(secret), `${secret} is stored in clear`);
      assert.ok(t.logs.length > 10);
      for (const secret of ['gho_secret_token', 'good-key', 'rotated-secret', t.secret]) assert.ok(!t.logs.join('').includes(secret), `${secret} reached the logs`);
    });

    test('actions: input checked, request built, output mapped; 404 and 502', async () => {
      let r = await t.call('POST', '/action/trigger', { provider_config_key: 'api', connection_id: 'u1', action_name: 'create_item', input: { title: 'hello' } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      conforms('triggerAction', r);
      assert.deepEqual(r.body, { success: true, action_name: 'create_item', output: { id: 'it_1', title: 'hello', key_seen: 'good-key' } });
      r = await t.call('POST', '/action/trigger', { provider_config_key: 'api', connection_id: 'u1', action_name: 'delete_echo' });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.output.method, 'DELETE');
      r = await t.call('POST', '/action/trigger', { provider_config_key: 'api', connection_id: 'u1', action_name: 'create_item', input: { title: 5 } });
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_input');
      r = await t.call('POST', '/action/trigger', { provider_config_key: 'api', connection_id: 'u1', action_name: 'nope' });
      assert.equal(r.status, 404);
      conforms('triggerAction', r);
      assert.equal(r.body.error, 'unknown_action');
      r = await t.call('POST', '/action/trigger', { provider_config_key: 'api', connection_id: 'u1', action_name: 'create_item', input: { title: 'boom' } });
      assert.equal(r.status, 502);
      conforms('triggerAction', r);
      assert.equal(r.body.error, 'provider_error');
      r = await t.call('POST', '/action/trigger', { provider_config_key: 'api', connection_id: 'u1' });
      assert.equal(r.status, 400);
    });

    test('syncs: trigger runs the sync through its pages; status follows; unknown sync 404', async () => {
      let r = await t.call('GET', '/sync/u1/items?provider_config_key=api');
      assert.equal(r.status, 404);
      conforms('getSyncStatus', r);
      r = await t.call('POST', '/sync/trigger', { provider_config_key: 'api', connection_id: 'u1', syncs: ['items'] });
      assert.equal(r.status, 200);
      conforms('triggerSync', r);
      assert.deepEqual(r.body, { success: true, syncs: [{ name: 'items', status: 'queued' }] });
      await t.engine.idle();
      r = await t.call('GET', '/sync/u1/items?provider_config_key=api');
      assert.equal(r.status, 200);
      conforms('getSyncStatus', r);
      assert.equal(r.body.status, 'success');
      assert.equal(r.body.records_count, 4);
      r = await t.call('POST', '/sync/trigger', { provider_config_key: 'api', connection_id: 'u1', syncs: ['nope'] });
      assert.equal(r.status, 404);
      conforms('triggerSync', r);
      assert.equal(r.body.error, 'unknown_sync');
      r = await t.call('POST', '/sync/trigger', { provider_config_key: 'api', connection_id: 'u1' });
      assert.equal(r.status, 400);
      conforms('triggerSync', r);
      r = await t.call('GET', '/sync/u1/nope?provider_config_key=api');
      assert.equal(r.status, 404);
    });

    test('post-connection request fills connection_config and metadata, used by later requests', async () => {
      let r = await t.call('POST', '/integration', { provider_config_key: 'post', provider: 'testpost' });
      assert.equal(r.status, 200);
      r = await t.call('POST', '/connection', { connection_id: 'p1', provider_config_key: 'post', credentials: { type: 'api_key', api_key: 'k' } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body.connection_config, { cloud_id: 'cloud-7' });
      assert.deepEqual(r.body.metadata, { site: 'Acme' });
      r = await t.call('GET', '/proxy/echo/x', undefined, { 'provider-config-key': 'post', 'connection-id': 'p1' });
      assert.deepEqual(r.body, { url: '/t/cloud-7/echo/x' });
    });

    test('connect session for an API key: the key is checked with the provider before it is kept', async () => {
      let r = await t.call('POST', '/connect/sessions', { connection_id: 'browser-1', allowed_integrations: ['api'], metadata: { via: 'connect' } });
      assert.equal(r.status, 200);
      conforms('createConnectSession', r);
      const token = r.body.token;
      r = await t.call('POST', `/connect/api/credentials?connect_session_token=${token}`, { api_key: 'bad-key' }, { authorization: '' });
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_credentials');
      assert.equal((await t.call('GET', '/connection/browser-1?provider_config_key=api')).status, 404);
      r = await t.call('POST', `/connect/api/credentials?connect_session_token=${token}`, { api_key: 'good-key' }, { authorization: '' });
      assert.equal(r.status, 200);
      conforms('connectCredentials', r);
      r = await t.call('GET', '/connection/browser-1?provider_config_key=api');
      assert.deepEqual(r.body.metadata, { via: 'connect' });
      r = await t.call('POST', `/connect/api/credentials?connect_session_token=nope`, { api_key: 'good-key' }, { authorization: '' });
      assert.equal(r.status, 401);
      r = await t.call('POST', `/connect/basic/credentials?connect_session_token=${token}`, { username: 'a', password: 'b' }, { authorization: '' });
      assert.equal(r.status, 403);
    });

    test('proxy: credentials injected, path, query, headers and body passed on, our secret never', async () => {
      const headers = { 'provider-config-key': 'api', 'connection-id': 'u1', 'x-custom': 'yes' };
      let r = await t.call('GET', '/proxy/echo/a/b?x=1&y=two', undefined, headers);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body, { method: 'GET', url: '/echo/a/b?x=1&y=two', key: 'good-key', authorization: null, custom: 'yes', body: null });
      r = await t.call('POST', '/proxy/echo/items', { title: 'via proxy' }, headers);
      assert.equal(r.status, 201);
      assert.deepEqual(r.body.body, { title: 'via proxy' });
      // Methods that may carry a body, sent without one, go out too (a streamed request waits for one otherwise).
      for (const method of ['DELETE', 'POST', 'PUT']) {
        r = await t.call(method, '/proxy/echo/x', undefined, headers);
        assert.equal(r.status, method === 'POST' ? 201 : 200, `${method}: ${r.text}`);
        assert.equal(r.body.method, method);
      }
      r = await t.call('GET', '/proxy/nothing-here', undefined, headers);
      assert.equal(r.status, 404, 'the provider\'s status comes back unchanged');
      // Sent raw: fetch itself would resolve a dot segment, encoded or not, before sending.
      for (const path of ['/proxy/echo/../me', '/proxy/echo/%2e%2e/me', '/proxy/echo/%2E./me']) assert.equal(await rawGet(t, path, headers), 400, path);
      r = await t.call('GET', '/proxy/echo', undefined, { 'provider-config-key': 'api' });
      assert.equal(r.status, 400);
      assert.match(r.body.message, /Connection-Id/);
      r = await t.call('GET', '/proxy/echo', undefined, { ...headers, 'connection-id': 'nobody' });
      assert.equal(r.status, 404);
      r = await t.call('GET', '/proxy/echo', undefined, { ...headers, authorization: '' });
      assert.equal(r.status, 401);
    });

    test('delete connection and integration; connection_count stays right', async () => {
      let r = await t.call('DELETE', '/connection/u1?provider_config_key=api');
      assert.equal(r.status, 204);
      r = await t.call('DELETE', '/connection/u1?provider_config_key=api');
      assert.equal(r.status, 404);
      conforms('deleteConnection', r);
      r = await t.call('GET', '/integration/api');
      assert.equal(r.body.connection_count, 1, 'browser-1, made through the connect session, is left');
      r = await t.call('POST', '/connection', { connection_id: 'g2', provider_config_key: 'gh', credentials: { type: 'oauth2', access_token: 't2' } });
      assert.equal((await t.call('GET', '/integration/gh')).body.connection_count, 2);
      r = await t.call('DELETE', '/integration/gh');
      assert.equal(r.status, 204);
      r = await t.call('DELETE', '/integration/gh');
      assert.equal(r.status, 404);
      conforms('deleteIntegration', r);
      r = await t.call('GET', '/connection?connection_id=g1');
      assert.deepEqual(r.body.connections, []);
      r = await t.call('POST', '/integration', { provider_config_key: 'gh', provider: 'github', oauth_client_id: 'cid', oauth_client_secret: 's' });
      assert.equal(r.body.connection_count, 0, 'a re-created integration starts with no connections');
    });

    test('concurrent creations of one key: exactly one succeeds, the others get 409', async () => {
      const integrations = await Promise.all(Array.from({ length: 8 }, () => t.call('POST', '/integration', { provider_config_key: 'race', provider: 'testapi' })));
      assert.deepEqual(integrations.map((r) => r.status).sort(), [200, 409, 409, 409, 409, 409, 409, 409]);
      const connections = await Promise.all(Array.from({ length: 8 }, (_, i) => t.call('POST', '/connection', { connection_id: 'racer', provider_config_key: 'race', credentials: { type: 'api_key', api_key: `k${i}` } })));
      assert.deepEqual(connections.map((r) => r.status).sort(), [200, 409, 409, 409, 409, 409, 409, 409]);
      const winner = connections.find((r) => r.status === 200)!;
      assert.equal((await t.call('GET', '/auth/token/race/racer')).body.access_token, `k${connections.indexOf(winner)}`, 'the stored key is the one whose creation answered 200');
    });

    test('health, openapi.yaml and unknown routes', async () => {
      let r = await t.call('GET', '/health', undefined, { authorization: '' });
      assert.equal(r.status, 200);
      assert.equal(r.body.store, store);
      r = await t.call('GET', '/openapi.yaml', undefined, { authorization: '' });
      assert.equal(r.status, 200);
      assert.ok(parse(r.text).paths['/connect/sessions']);
      r = await t.call('GET', '/nowhere');
      assert.equal(r.status, 404);
      assert.equal(r.body.error, 'not_found');
    });

    test('a known path with another method is 405 method_not_allowed with Allow; OPTIONS lists the methods', async () => {
      let r = await t.call('PUT', '/connection/x');
      assert.equal(r.status, 405);
      assert.equal(r.body.error, 'method_not_allowed');
      assert.equal(r.headers.get('allow'), 'HEAD, GET, DELETE');
      assert.match(r.body.message, /\/connection\/x does not take PUT; it takes HEAD, GET, DELETE/);
      r = await t.call('DELETE', '/health', undefined, { authorization: '' });
      assert.equal(r.status, 405);
      assert.equal(r.headers.get('allow'), 'HEAD, GET');
      r = await t.call('OPTIONS', '/integration');
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('allow'), 'HEAD, GET, POST');
      r = await t.call('PROPFIND', '/integration');
      assert.equal(r.status, 501);
      assert.equal(r.body.error, 'not_implemented');
    });

    test('a body that is not JSON is 415 unsupported_media_type, after the secret key check', async () => {
      const form = { 'content-type': 'application/x-www-form-urlencoded' };
      let r = await t.call('POST', '/integration', 'provider_config_key=x&provider=stripe', form);
      assert.equal(r.status, 415);
      assert.equal(r.body.error, 'unsupported_media_type');
      assert.match(r.body.message, /Content-Type: application\/json.*application\/x-www-form-urlencoded/);
      r = await t.call('POST', '/integration', 'x', { ...form, authorization: 'Bearer wrong' });
      assert.equal(r.status, 401);
      r = await t.call('POST', '/proxy/echo', 'a=1', { ...form, 'provider-config-key': 'api', 'connection-id': 'c1' });
      assert.equal(r.status, 415, 'the proxy says so rather than dropping the body');
      // A +json type is JSON; an empty body is no body.
      r = await t.call('POST', '/integration', { provider_config_key: 'vnd', provider: 'stripe' }, { 'content-type': 'application/vnd.api+json' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      r = await t.call('POST', '/integration', '', { 'content-type': 'text/plain' });
      assert.equal(r.status, 400);
      assert.equal(r.body.error, 'invalid_request');
    });

    test('every answer carries X-Request-Id: a well-formed one given is kept, any other replaced; error bodies and log lines carry it', async () => {
      let r = await t.call('GET', '/integration/no-such-key', undefined, { 'x-request-id': 'req-42.a:b' });
      assert.equal(r.status, 404);
      assert.equal(r.headers.get('x-request-id'), 'req-42.a:b');
      assert.equal(r.body.request_id, 'req-42.a:b');
      conforms('getIntegration', r);
      r = await t.call('GET', '/providers', undefined, { 'x-request-id': 'bad id with spaces' });
      assert.equal(r.status, 200);
      const made = r.headers.get('x-request-id')!;
      assert.match(made, /^[0-9a-f-]{36}$/);
      r = await t.call('GET', '/providers', undefined, { 'x-request-id': 'x'.repeat(129) });
      assert.notEqual(r.headers.get('x-request-id'), 'x'.repeat(129));
      assert.match(r.headers.get('x-request-id')!, /^[0-9a-f-]{36}$/);
      assert.notEqual(r.headers.get('x-request-id'), made, 'each request gets an id of its own');
      const lines = t.logs.map((l) => JSON.parse(l));
      assert.ok(lines.some((l) => l.msg === 'request' && l.request_id === 'req-42.a:b' && l.status === 404));
      assert.ok(lines.some((l) => l.msg === 'request' && l.request_id === made && l.path === '/providers'));
    });
  });
}

suite('sqlite');
suite('postgres');
void PG_URL;
