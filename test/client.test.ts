/**
 * The typed client (client/) against a running server: its generated types match the served document,
 * every operation of the document is called through it, and every answer the tests get (through the
 * client or not) is checked against the document: its status must be listed for the operation, its
 * content type declared, and its body must validate against the declared schema (so a field marked
 * required is one the server really always sends).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Ajv, type ValidateFunction } from 'ajv';
import ajvFormats from 'ajv-formats';
import { OAuth2Server } from 'oauth2-mock-server';
import type { Middleware } from 'openapi-fetch';
import { createTerapiClient, pathSerializer, TerapiApiError, type TerapiClient } from '../client/src/index.ts';
import { GENERATED, generatedSchema } from '../client/generate.ts';
import { openapi } from '../server/openapi.ts';
import { fakeApi, freshDatabase, json, PG_URL, pgSkip, providersDir, ROOT, runCommand, startTerapi, tcpHop, type Running } from './support.ts';

// ---- The document, as a client sees it ----------------------------------------------------------

interface Op {
  path: string;
  method: string;
  id: string;
  op: any;
}
const doc = openapi as any;
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const OPS: Op[] = Object.entries<any>(doc.paths).flatMap(([path, item]) =>
  Object.entries<any>(item)
    .filter(([method]) => METHODS.includes(method))
    .map(([method, op]) => ({ path, method, id: op.operationId as string, op })),
);
const byId = new Map(OPS.map((o) => [o.id, o]));
const resolve = (node: any, kind: 'responses' | 'requestBodies') => (node?.$ref ? doc.components[kind][node.$ref.split('/').pop()] : node);

const ajv = new Ajv({ strict: false, allErrors: true });
ajvFormats.default(ajv);
ajv.addSchema({ $id: 'openapi', components: doc.components });
const validators = new Map<object, ValidateFunction>();
const validatorOf = (schema: object) => {
  let v = validators.get(schema);
  if (!v) validators.set(schema, (v = ajv.compile(JSON.parse(JSON.stringify(schema).replace(/"#\/components\//g, '"openapi#/components/')))));
  return v;
};

/** Statuses each operation was seen to answer, and checked; and those answered to the client. */
const seen = new Map<string, Set<number>>();
const throughClient = new Map<string, Set<number>>();

/** Checks one answer against the document; throws (failing the test) when it does not conform. */
function conforms(id: string, status: number, contentType: string | null, text: string, viaClient = false): void {
  const { op } = byId.get(id) ?? assert.fail(`no operation ${id}`);
  const listed = op.responses[String(status)];
  assert.ok(listed || (id.startsWith('proxy') && op.responses.default), `${id} answered ${status}, which the document does not list for it: ${text.slice(0, 300)}`);
  const response = resolve(listed ?? op.responses.default, 'responses');
  const media = Object.keys(response.content ?? {});
  const type = (contentType ?? '').split(';')[0].trim();
  if (media.length && text.length) {
    assert.ok(media.includes('*/*') || media.includes(type), `${id} ${status} came as ${type || 'no content type'}; the document declares ${media.join(', ')}`);
  }
  const schema = response.content?.['application/json']?.schema;
  if (schema && type === 'application/json') {
    const body: any = JSON.parse(text);
    const validate = validatorOf(schema);
    assert.ok(validate(body), `${id} ${status} does not match the document: ${ajv.errorsText(validate.errors)} in ${text.slice(0, 500)}`);
    // Terapi's errors carry a snake_case code (a proxy call may also answer the provider's own error).
    if (schema.$ref === '#/components/schemas/ErrorResponse') assert.match(JSON.parse(text).error, /^[a-z][a-z_]*$/);
  }
  for (const map of viaClient ? [seen, throughClient] : [seen]) {
    if (!map.has(id)) map.set(id, new Set());
    map.get(id)!.add(status);
  }
}

/** Every answer the client gets goes through conforms(). */
const conformance: Middleware = {
  async onResponse({ request, response, schemaPath }) {
    const { id } = OPS.find((o) => o.path === schemaPath && o.method === request.method.toLowerCase()) ?? assert.fail(`${request.method} ${schemaPath} is not in the document`);
    conforms(id, response.status, response.headers.get('content-type'), await response.clone().text(), true);
  },
};

/** An answer fetched without the client (a method the document does not give the path, a body of another type), checked. */
async function raw(t: Running, id: string, path: string, init: RequestInit & { headers?: Record<string, string> }) {
  const res = await fetch(t.url + path, { redirect: 'manual', ...init });
  const text = await res.text();
  conforms(id, res.status, res.headers.get('content-type'), text);
  return { status: res.status, body: text.startsWith('{') ? JSON.parse(text) : text, headers: res.headers };
}

// ---- Stand-ins: a provider's API and an OAuth server ---------------------------------------------

const apiProvider = (url: string) => `
display_name: Test API
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key, pattern: "[a-z-]+" }
verification: { request: { path: /me } }
api:
  base_url: ${url}
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
    output: "{ 'id': item.id, 'title': item.title }"
`;

const oauthProvider = (url: string) => `
display_name: Mock OAuth
categories: [testing]
docs: https://example.com/docs
auth:
  mode: oauth2
  authorization_url: ${url}/authorize
  token_url: ${url}/token
  scopes: [read]
  pkce: true
api: { base_url: "${url}" }
`;

/** The README's example runs against this one, as if it were GitHub's: a sync issues of model GithubIssue. */
const issuesProvider = (url: string) => `
display_name: Issues
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
api:
  base_url: ${url}
  credentials: { in: header, name: X-Api-Key, value: "\${api_key}" }
syncs:
  issues:
    mode: full
    auto_start: false
    request: { path: /issues }
    records: $
    mapping: "{ 'id': $string(id), 'title': title }"
    model: { name: GithubIssue }
`;

// A connection id with characters a path parameter must encode.
const USER = 'user@acme:1';

describe('the typed client (client/)', () => {
  let t: Running;
  let api: Awaited<ReturnType<typeof fakeApi>>;
  let oauth: OAuth2Server;
  let client: TerapiClient;

  before(async () => {
    api = await fakeApi((req, res) => {
      const key = req.headers['x-api-key'];
      if (req.url === '/me') return json(res, key === 'good-key' ? 200 : 401, { message: key === 'good-key' ? 'ok' : 'bad key' });
      if (req.url === '/items' && req.method === 'POST') {
        if (req.body?.title === 'boom') return json(res, 500, { message: 'broken' });
        return json(res, 201, { item: { id: 'it_1', title: req.body.title } });
      }
      if (req.url?.startsWith('/items')) {
        const page = Number(new URL(req.url, 'http://x').searchParams.get('page') ?? '1');
        return json(res, 200, { data: page <= 2 ? [{ id: `a${page}`, name: 'x' }, { id: `b${page}`, name: 'y' }] : [] });
      }
      if (req.url === '/issues') return json(res, 200, [{ id: 1, title: 'First issue' }, { id: 2, title: 'Second issue' }]);
      if (req.url?.startsWith('/echo')) return json(res, req.method === 'POST' ? 201 : 200, { method: req.method, url: req.url, key, body: req.body ?? null });
      json(res, 404, { message: 'no such thing' });
    });
    oauth = new OAuth2Server();
    await oauth.issuer.keys.generate('RS256');
    await oauth.start(0, '127.0.0.1');
    const oauthUrl = oauth.issuer.url!.replace(/\/$/, '');
    t = await startTerapi({ providersDirs: [providersDir({ testapi: apiProvider(api.url), mockoauth: oauthProvider(oauthUrl), issues: issuesProvider(api.url) })] });
    client = createTerapiClient({ baseUrl: t.url, secretKey: t.secret });
    client.use(conformance);
  });

  after(async () => {
    await t?.close();
    await api?.close();
    await oauth?.stop();
  });

  test('client/src/schema.generated.ts is what openapi-typescript makes of server/openapi.yaml', async () => {
    const same = readFileSync(GENERATED, 'utf8') === (await generatedSchema());
    assert.ok(same, 'client/src/schema.generated.ts does not match server/openapi.yaml: run npm run generate:client');
  });

  test('path parameters are encoded, except the slashes of the proxy path', () => {
    assert.equal(pathSerializer('/connection/{connection_id}', { connection_id: 'a/b c@d:1' }), '/connection/a%2Fb%20c%40d%3A1');
    assert.equal(pathSerializer('http://h/proxy/{path}', { path: '/repos/acme app/issues' }), 'http://h/proxy/repos/acme%20app/issues');
    assert.equal(pathSerializer('http://h/proxy/{path}', { path: ['projects', 'group/project', 'issues'] }), 'http://h/proxy/projects/group%2Fproject/issues');
  });

  test('integrations, connections, tokens: typed answers, typed credentials', async () => {
    const { data: health } = await client.GET('/health');
    const { data: metrics } = await client.GET('/metrics', { parseAs: 'text' });
    assert.match(metrics!, /^# TYPE terapi_http_request_duration_seconds histogram$/m);
    assert.deepEqual([health?.status, health?.store], ['ok', 'sqlite']);
    const { data: yaml } = await client.GET('/openapi.yaml', { parseAs: 'text' });
    assert.match(yaml!, /^openapi: 3\.0\.3$/m);
    const { data: catalogue } = await client.GET('/providers');
    const testapi = catalogue!.providers.find((p) => p.name === 'testapi')!;
    assert.deepEqual([testapi.auth_mode, testapi.syncs, testapi.actions], ['api_key', ['items'], ['create_item']]);

    const created = await client.POST('/integration', { body: { provider_config_key: 'api', provider: 'testapi' } });
    assert.equal(created.data!.unique_key, 'api');
    assert.equal(created.data!.connection_count, 0);
    const oauthIntegration = await client.POST('/integration', { body: { provider_config_key: 'mock', provider: 'mockoauth', oauth_client_id: 'client-1', oauth_client_secret: 'secret-1' } });
    assert.equal(oauthIntegration.data!.auth_mode, 'oauth2');
    const again = await client.POST('/integration', { body: { provider_config_key: 'api', provider: 'testapi' } });
    assert.deepEqual([again.response.status, again.error!.error], [409, 'integration_exists']);

    const patched = await client.PATCH('/integration/{provider_config_key}', { params: { path: { provider_config_key: 'api' } }, body: { sync_frequencies: { items: '5m' } } });
    assert.deepEqual(patched.data!.sync_frequencies, { items: '5m' });
    const listed = await client.GET('/integration');
    assert.deepEqual(listed.data!.integrations.map((i) => i.unique_key).sort(), ['api', 'mock']);
    const one = await client.GET('/integration/{provider_config_key}', { params: { path: { provider_config_key: 'api' } } });
    assert.equal(one.data!.display_name, 'Test API');
    const missing = await client.GET('/integration/{provider_config_key}', { params: { path: { provider_config_key: 'nope' } } });
    assert.deepEqual([missing.response.status, missing.error!.error], [404, 'unknown_integration']);

    // Credentials typed by shape: the compiler takes only {type: 'api_key', api_key}, {type: 'basic', ...}...
    const connection = await client.POST('/connection', {
      body: { connection_id: USER, provider_config_key: 'api', credentials: { type: 'api_key', api_key: 'good-key' }, metadata: { plan: 'pro' } },
    });
    assert.equal(connection.error, undefined, JSON.stringify(connection.error));
    assert.deepEqual([connection.data!.id, connection.data!.credentials.type, connection.data!.needs_reauth], [USER, 'api_key', false]);
    assert.deepEqual(connection.data!.metadata, { plan: 'pro' });
    // ...and the server holds to the same shapes.
    const wrongShape = await client.POST('/connection', { body: { connection_id: 'u2', provider_config_key: 'api', credentials: { type: 'basic', username: 'a', password: 'b' } } });
    assert.deepEqual([wrongShape.response.status, wrongShape.error!.error], [400, 'invalid_credentials']);
    const incomplete = await client.POST('/connection', { body: { connection_id: 'u2', provider_config_key: 'api', credentials: { type: 'api_key' } as never } });
    assert.deepEqual([incomplete.response.status, incomplete.error!.error, incomplete.error!.message], [400, 'invalid_credentials', 'body.credentials.api_key is required']);
    const unknownShape = await client.POST('/connection', { body: { connection_id: 'u2', provider_config_key: 'api', credentials: { type: 'jwt' } as never } });
    assert.deepEqual([unknownShape.response.status, unknownShape.error!.error], [400, 'invalid_credentials']);
    const duplicate = await client.POST('/connection', { body: { connection_id: USER, provider_config_key: 'api', credentials: { type: 'api_key', api_key: 'good-key' } } });
    assert.deepEqual([duplicate.response.status, duplicate.error!.error], [409, 'connection_exists']);
    const oauthConnection = await client.POST('/connection', {
      body: { connection_id: USER, provider_config_key: 'mock', credentials: { type: 'oauth2', access_token: 'at-given', refresh_token: 'rt-given', expires_at: '2099-01-01T00:00:00Z' } },
    });
    assert.deepEqual([oauthConnection.data!.credentials.type, oauthConnection.data!.credentials.expires_at], ['oauth2', '2099-01-01T00:00:00.000Z']);

    const got = await client.GET('/connection/{connection_id}', { params: { path: { connection_id: USER }, query: { provider_config_key: 'api' } } });
    assert.equal(got.data!.provider, 'testapi');
    const absent = await client.GET('/connection/{connection_id}', { params: { path: { connection_id: 'nobody' }, query: { provider_config_key: 'api' } } });
    assert.deepEqual([absent.response.status, absent.error!.error], [404, 'unknown_connection']);
    const all = await client.GET('/connection', { params: { query: { connection_id: USER } } });
    assert.deepEqual(all.data!.connections.map((c) => c.provider_config_key).sort(), ['api', 'mock']);
    const ofUnknown = await client.GET('/connection', { params: { query: { provider_config_key: 'nope' } } });
    assert.equal(ofUnknown.response.status, 404);

    const apiToken = await client.GET('/auth/token/{provider_config_key}/{connection_id}', { params: { path: { provider_config_key: 'api', connection_id: USER } } });
    assert.deepEqual(apiToken.data, { type: 'ApiKey', access_token: 'good-key' });
    const bearer = await client.GET('/auth/token/{provider_config_key}/{connection_id}', { params: { path: { provider_config_key: 'mock', connection_id: USER } } });
    assert.deepEqual([bearer.data!.type, bearer.data!.access_token, bearer.data!.expires_at], ['Bearer', 'at-given', '2099-01-01T00:00:00.000Z']);
    // The provider revokes the grant: a forced refresh is a 424 the client sees typed.
    oauth.service.once('beforeResponse', (res: any) => {
      res.statusCode = 400;
      res.body = { error: 'invalid_grant', error_description: 'revoked' };
    });
    const revoked = await client.GET('/auth/token/{provider_config_key}/{connection_id}', { params: { path: { provider_config_key: 'mock', connection_id: USER }, query: { force_refresh: true } } });
    assert.deepEqual([revoked.response.status, revoked.error!.error], [424, 'connection_needs_reauth']);
  });

  test('provider files through the API: deployed as YAML, read with their sources, deleted', async () => {
    const name = { params: { path: { name: 'deployed-api' } } };
    const yaml = apiProvider(api.url).replace('Test API', 'Deployed API');
    const asYaml = { bodySerializer: (b: unknown) => String(b), headers: { 'content-type': 'application/yaml' } };
    const put = await client.PUT('/providers/{name}', { ...name, body: yaml as never, ...asYaml });
    assert.deepEqual([put.response.status, put.data!.name, put.data!.version > 0], [201, 'deployed-api', true]);
    const shown = await client.GET('/providers/{name}', name);
    assert.equal(shown.data!.version, put.data!.version);
    assert.equal((shown.data!.definition as { display_name: string }).display_name, 'Deployed API');
    const bad = await client.PUT('/providers/{name}', { ...name, body: yaml.replace('mode: full', 'mode: sometimes') as never, ...asYaml });
    assert.deepEqual([bad.response.status, bad.error!.error], [400, 'invalid_provider']);
    assert.match(bad.error!.message, /deployed\/deployed-api\.yaml:\d+:\d+/);
    const deleted = await client.DELETE('/providers/{name}', name);
    assert.equal(deleted.response.status, 204);
    const gone = await client.DELETE('/providers/{name}', name);
    assert.deepEqual([gone.response.status, gone.error!.error], [404, 'provider_not_deployed']);
  });

  test('syncs, records (paged by the records helper), actions and the proxy', async () => {
    const where = { provider_config_key: 'api', connection_id: USER };
    const triggered = await client.POST('/sync/trigger', { body: { ...where, syncs: ['items'] } });
    assert.equal(triggered.data!.success, true);
    assert.ok(['queued', 'running'].includes(triggered.data!.syncs[0].status));
    const status = async () => (await client.GET('/sync/{connection_id}/{sync_name}', { params: { path: { connection_id: USER, sync_name: 'items' }, query: { provider_config_key: 'api' } } })).data;
    const deadline = Date.now() + 20_000;
    let s = await status();
    while (s?.status !== 'success' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      s = await status();
    }
    assert.deepEqual([s!.status, s!.records_count, s!.last_run!.added], ['success', 4, 4]);
    const syncs = await client.GET('/syncs', { params: { query: where } });
    assert.deepEqual(syncs.data!.syncs.map((x) => [x.sync_name, x.model, x.status]), [['items', 'Item', 'success']]);

    const page = await client.GET('/records', { params: { query: { ...where, model: 'Item', limit: 3 } } });
    assert.equal(page.data!.records.length, 3);
    assert.equal(typeof page.data!.next_cursor, 'string');
    const seenIds: string[] = [];
    for await (const record of client.records<{ id: string; name: string }>({ ...where, model: 'Item', limit: 1 })) {
      seenIds.push(record.id);
      assert.equal(record._terapi_metadata.last_action, 'added');
    }
    assert.deepEqual(seenIds.sort(), ['a1', 'a2', 'b1', 'b2']);
    await assert.rejects(
      async () => {
        for await (const _ of client.records({ ...where, model: 'Nope' })) void _;
      },
      (e: unknown) => e instanceof TerapiApiError && e.status === 404 && e.code === 'unknown_model' && typeof e.requestId === 'string',
    );

    const paused = await client.POST('/sync/pause', { body: { ...where, syncs: ['items'] } });
    assert.deepEqual(paused.data!.syncs, [{ name: 'items', status: 'paused' }]);
    const started = await client.POST('/sync/start', { body: { ...where, syncs: ['items'] } });
    assert.deepEqual(started.data!.syncs, [{ name: 'items', status: 'scheduled' }]);
    const unknownSync = await client.POST('/sync/trigger', { body: { ...where, syncs: ['nope'] } });
    assert.deepEqual([unknownSync.response.status, unknownSync.error!.error], [404, 'unknown_sync']);

    const action = await client.POST('/action/trigger', { body: { ...where, action_name: 'create_item', input: { title: 'Hello' } } });
    assert.deepEqual(action.data, { success: true, action_name: 'create_item', output: { id: 'it_1', title: 'Hello' } });
    const failed = await client.POST('/action/trigger', { body: { ...where, action_name: 'create_item', input: { title: 'boom' } } });
    assert.deepEqual([failed.response.status, failed.error!.error], [502, 'provider_error']);
    const badInput = await client.POST('/action/trigger', { body: { ...where, action_name: 'create_item', input: {} } });
    assert.deepEqual([badInput.response.status, badInput.error!.error], [400, 'invalid_input']);

    // The proxy helper: the path keeps its slashes, the query is the provider's, the key is injected.
    const res = await client.proxy({ path: 'echo/a b/c', query: { q: 'x y', page: '2' }, providerConfigKey: 'api', connectionId: USER });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { method: 'GET', url: '/echo/a%20b/c?q=x+y&page=2', key: 'good-key', body: null });
    const oneSegment = await client.proxy({ path: ['echo', 'group/project'], providerConfigKey: 'api', connectionId: USER });
    assert.equal((await oneSegment.json()).url, '/echo/group%2Fproject');
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE'] as const) {
      const r = await client.proxy({ method, path: '/echo/x', body: [{ n: 1 }], providerConfigKey: 'api', connectionId: USER });
      assert.equal(r.status, method === 'POST' ? 201 : 200);
      assert.deepEqual(await r.json(), { method, url: '/echo/x', key: 'good-key', body: [{ n: 1 }] });
    }
    // The provider's own error status and body come back unchanged.
    const notThere = await client.proxy({ path: 'nothing', providerConfigKey: 'api', connectionId: USER });
    assert.deepEqual([notThere.status, await notThere.json()], [404, { message: 'no such thing' }]);
    // Terapi's own refusal, as a Response with an ErrorResponse.
    const noConnection = await client.proxy({ path: 'echo', providerConfigKey: 'api', connectionId: 'nobody' });
    assert.deepEqual([noConnection.status, (await noConnection.json()).error], [404, 'unknown_connection']);
    // The generated call itself, typed.
    const direct = await client.GET('/proxy/{path}', { params: { path: { path: 'echo/d' }, header: { 'Provider-Config-Key': 'api', 'Connection-Id': USER }, query: { query: { a: '1' } } } });
    assert.deepEqual(direct.data, { method: 'GET', url: '/echo/d?a=1', key: 'good-key', body: null });

    const ops = await client.GET('/operations', { params: { query: { connection_id: USER, type: 'action', limit: 10 } } });
    // Newest first: the input refused, the provider's failure, the success.
    assert.deepEqual(ops.data!.operations.map((o) => [o.name, o.outcome, o.error]), [['create_item', 'error', 'invalid_input'], ['create_item', 'error', 'provider_error'], ['create_item', 'success', undefined]]);
  });

  test('the connect flow, its pages and the dashboard, through the client', async () => {
    const session = await client.POST('/connect/sessions', { body: { connection_id: 'browser-1', allowed_integrations: ['api', 'mock'] } });
    const token = session.data!.token;
    assert.equal(session.data!.connect_url, `${t.url}/connect#connect_session_token=${token}`);
    const asBrowser = { authorization: `Bearer ${token}` };
    const described = await client.GET('/connect/session', { headers: asBrowser });
    assert.deepEqual(described.data!.integrations.map((i) => [i.provider_config_key, i.auth_mode]), [['api', 'api_key'], ['mock', 'oauth2']]);
    const noSession = await client.GET('/connect/session', { headers: { authorization: 'Bearer cs_nope' } });
    assert.deepEqual([noSession.response.status, noSession.error!.error], [401, 'invalid_session']);

    const badKey = await client.POST('/connect/{provider_config_key}/credentials', { params: { path: { provider_config_key: 'api' } }, body: { api_key: 'bad-key' }, headers: asBrowser });
    assert.deepEqual([badKey.response.status, badKey.error!.error], [400, 'invalid_credentials']);
    const connected = await client.POST('/connect/{provider_config_key}/credentials', { params: { path: { provider_config_key: 'api' } }, body: { api_key: 'good-key' }, headers: asBrowser });
    assert.deepEqual(connected.data, { provider_config_key: 'api', connection_id: 'browser-1' });

    const started = await client.POST('/connect/{provider_config_key}/oauth', { params: { path: { provider_config_key: 'mock' } }, body: {}, headers: asBrowser });
    assert.match(started.data!.authorization_url, /\/authorize\?/);
    const wrongWay = await client.POST('/connect/{provider_config_key}/oauth', { params: { path: { provider_config_key: 'api' } }, body: {}, headers: asBrowser });
    assert.deepEqual([wrongWay.response.status, wrongWay.error!.error], [400, 'not_oauth']);

    // The browser's part of an OAuth connect: our redirect, the provider's, the callback page.
    const redirect = await client.GET('/oauth/connect/{provider_config_key}', { params: { path: { provider_config_key: 'mock' }, query: { connect_session_token: token } }, redirect: 'manual', parseAs: 'text' });
    assert.equal(redirect.response.status, 302);
    const cookie = redirect.response.headers.get('set-cookie')!.split(';')[0];
    const back = await fetch(redirect.response.headers.get('location')!, { redirect: 'manual' });
    const callback = new URL(back.headers.get('location')!);
    const page = await client.GET('/oauth/callback', {
      params: { query: { code: callback.searchParams.get('code')!, state: callback.searchParams.get('state')! } },
      headers: { cookie },
      parseAs: 'text',
    });
    assert.equal(page.response.status, 200);
    assert.match(page.data!, /"type":"terapi:connect","ok":true,"provider_config_key":"mock","connection_id":"browser-1"/);
    const replayed = await client.GET('/oauth/callback', { params: { query: { code: 'x', state: callback.searchParams.get('state')! } }, headers: { cookie }, parseAs: 'text' });
    assert.equal(replayed.response.status, 400);
    assert.match(String(replayed.error), /invalid_state/);
    const made = await client.GET('/connection/{connection_id}', { params: { path: { connection_id: 'browser-1' }, query: { provider_config_key: 'mock' } } });
    assert.equal(made.data!.credentials.type, 'oauth2');

    for (const [url, pattern] of [['/connect', /<html/i], ['/connect.js', /export async function connect|export function connect/], ['/dashboard', /<html/i]] as const) {
      const r = await client.GET(url, { parseAs: 'text' });
      assert.equal(r.response.status, 200);
      assert.match(r.data!, pattern);
    }
    const style = await client.GET('/web/{file}', { params: { path: { file: 'terapi.css' } }, parseAs: 'text' });
    assert.equal(style.response.headers.get('content-type'), 'text/css; charset=utf-8');
    const noFile = await client.GET('/web/{file}', { params: { path: { file: 'nope.js' } } });
    assert.equal(noFile.response.status, 404);

    const origin = { origin: t.url, authorization: '' };
    const signedIn = await client.POST('/dashboard/login', { body: { secret_key: t.secret }, headers: origin });
    assert.equal(signedIn.response.status, 204);
    const dashboardCookie = signedIn.response.headers.get('set-cookie')!.split(';')[0];
    const readAsDashboard = await client.GET('/syncs', { headers: { authorization: '', cookie: dashboardCookie } });
    assert.equal(readAsDashboard.response.status, 200);
    const wrongKey = await client.POST('/dashboard/login', { body: { secret_key: 'sk_wrong' }, headers: origin });
    assert.deepEqual([wrongKey.response.status, wrongKey.error!.error], [401, 'unauthorized']);
    const crossOrigin = await client.POST('/dashboard/login', { body: { secret_key: t.secret }, headers: { ...origin, origin: 'https://evil.example' } });
    assert.deepEqual([crossOrigin.response.status, crossOrigin.error!.error], [403, 'cross_origin']);
    const signedOut = await client.POST('/dashboard/logout', { headers: { ...origin, cookie: dashboardCookie } });
    assert.equal(signedOut.response.status, 204);

    const connectOps = await client.GET('/operations', { params: { query: { connection_id: 'browser-1', type: 'connect' } } });
    assert.deepEqual(connectOps.data!.operations.map((o) => [o.provider_config_key, o.name, o.outcome]), [['mock', 'oauth', 'success'], ['api', 'credentials', 'success'], ['api', 'credentials', 'error']]);

    // Deletes last: their 204s, then what is gone is a 404.
    const deleted = await client.DELETE('/connection/{connection_id}', { params: { path: { connection_id: USER }, query: { provider_config_key: 'api' } } });
    assert.equal(deleted.response.status, 204);
    const deletedAgain = await client.DELETE('/connection/{connection_id}', { params: { path: { connection_id: USER }, query: { provider_config_key: 'api' } } });
    assert.equal(deletedAgain.response.status, 404);
    const gone = await client.DELETE('/integration/{provider_config_key}', { params: { path: { provider_config_key: 'mock' } } });
    assert.equal(gone.response.status, 204);
  });

  test("the README's five first calls (client/examples/first-calls.ts) run as written", async () => {
    const example = readFileSync(new URL('../client/examples/first-calls.ts', import.meta.url), 'utf8');
    assert.ok(readFileSync(new URL('../client/README.md', import.meta.url), 'utf8').includes('```ts\n' + example + '```'), 'client/README.md does not show client/examples/first-calls.ts as it is');
    await client.POST('/integration', { body: { provider_config_key: 'github', provider: 'issues' } });
    await client.POST('/connection', { body: { provider_config_key: 'github', connection_id: 'user-1', credentials: { type: 'api_key', api_key: 'k' } } });
    // A run done before, so that the records are there whatever the example's own run is doing.
    await client.POST('/sync/trigger', { body: { provider_config_key: 'github', connection_id: 'user-1', syncs: ['issues'] } });
    const deadline = Date.now() + 20_000;
    const done = async () => (await client.GET('/sync/{connection_id}/{sync_name}', { params: { path: { connection_id: 'user-1', sync_name: 'issues' }, query: { provider_config_key: 'github' } } })).data?.status === 'success';
    while (!(await done()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));

    const run = await runCommand([process.execPath, '--import', 'tsx', 'client/examples/first-calls.ts'], { cwd: ROOT, env: { PATH: process.env.PATH, TERAPI_URL: t.url, TERAPI_SECRET_KEY: t.secret } });
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stdout.trim().split('\n');
    assert.match(lines[0], new RegExp(`^connect at ${t.url}/connect#connect_session_token=\\S+$`));
    assert.deepEqual(lines.slice(1, 3), ['connection user-1 ok', 'token ApiKey']);
    assert.match(lines[3], /^sync issues (queued|running)$/);
    assert.deepEqual(lines.slice(4).sort(), ['issue 1 First issue added', 'issue 2 Second issue added']);
  });

  test('statuses every operation shares: 401 without the key, 400/413 for a bad or large body, 415 for another type, 405 for another method', async () => {
    const dummy = (o: Op) => {
      let path = o.path;
      for (const p of o.op.parameters ?? []) if (p.in === 'path') path = path.replace(`{${p.name}}`, 'x');
      return path;
    };
    const proxyHeaders = { 'provider-config-key': 'api', 'connection-id': 'browser-1' };
    for (const o of OPS) {
      const schemes = (o.op.security ?? doc.security).flatMap((s: object) => Object.keys(s));
      const method = o.method.toUpperCase();
      const headers = { authorization: `Bearer ${t.secret}`, ...(o.id.startsWith('proxy') ? proxyHeaders : {}) };
      if (schemes.includes('SecretKeyAuth') || schemes.includes('ConnectSessionAuth')) {
        // Without credentials (a connect session operation with a body checks the body first).
        const r = await raw(t, o.id, dummy(o), { method, headers: { authorization: '' } });
        if (!(schemes.includes('ConnectSessionAuth') && o.op.requestBody)) assert.equal(r.status, 401, `${o.id} without credentials`);
      }
      if (method === 'GET') continue;
      // A provider file is read as text, YAML or JSON: a broken one is an invalid provider file, told where.
      const badBody = o.id === 'deployProvider' ? 'invalid_provider' : 'invalid_request';
      // Any JSON body of a POST, PUT, PATCH or DELETE is read before the request is routed.
      const big = await raw(t, o.id, dummy(o), { method, headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ a: 'x'.repeat(1_100_000) }) });
      assert.deepEqual([big.status, big.body.error], [413, 'body_too_large'], o.id);
      const broken = await raw(t, o.id, dummy(o), { method, headers: { ...headers, 'content-type': 'application/json' }, body: '{"a":' });
      assert.deepEqual([broken.status, broken.body.error], [400, badBody], o.id);
      if (o.op.requestBody || o.id.startsWith('proxy')) {
        const other = await raw(t, o.id, dummy(o), { method, headers: { ...headers, 'content-type': 'text/plain' }, body: 'hello' });
        assert.deepEqual([other.status, other.body.error], [415, 'unsupported_media_type'], o.id);
        if (!o.id.startsWith('proxy')) {
          const notAnObject = await raw(t, o.id, dummy(o), { method, headers: { ...headers, 'content-type': 'application/json' }, body: '[]' });
          assert.deepEqual([notAnObject.status, notAnObject.body.error], [400, badBody], o.id);
        }
      }
    }
    // A path called with a method it does not take: 405, listed on each of the path's operations.
    for (const [path, item] of Object.entries<any>(doc.paths)) {
      if (path.startsWith('/proxy/')) continue;
      const method = ['put', 'patch', 'delete', 'post'].find((m) => !item[m])!;
      const concrete = path.replace(/\{[^}]+\}/g, 'x');
      for (const o of OPS.filter((x) => x.path === path)) {
        const r = await raw(t, o.id, concrete, { method: method.toUpperCase(), headers: { authorization: `Bearer ${t.secret}` } });
        assert.deepEqual([r.status, r.body.error], [405, 'method_not_allowed'], `${method} ${path}`);
        assert.ok(r.headers.get('allow')!.includes(o.method.toUpperCase()));
      }
    }
  });

  test('an unexpected error is a 500 internal_error, as the document says, with the request id', async () => {
    const list = t.engine.integrations.list;
    t.engine.integrations.list = async () => {
      throw new Error('a bug');
    };
    try {
      const r = await client.GET('/integration', { headers: { 'x-request-id': 'req-500' } });
      assert.deepEqual([r.response.status, r.error!.error, r.error!.request_id], [500, 'internal_error', 'req-500']);
      assert.ok(!r.error!.message.includes('a bug'), 'the error itself is logged, not answered');
    } finally {
      t.engine.integrations.list = list;
    }
  });

  test('every operation of the document was called through the client with a success', (t) => {
    // A new operation in openapi.yaml fails here until a test above calls it.
    const missing = OPS.filter((o) => ![...(throughClient.get(o.id) ?? [])].some((s) => s < 400)).map((o) => o.id);
    assert.deepEqual(missing, [], `operations never answered with a success through the client: ${missing.join(', ')}`);
    const checked = [...seen.values()].reduce((n, s) => n + s.size, 0);
    assert.ok(checked > OPS.length * 2, `only ${checked} (operation, status) answers were checked`);
    t.diagnostic(`${OPS.length} operations; ${checked} (operation, status) pairs answered and checked against the document`);
  });
});

// ---- With the database away ---------------------------------------------------------------------

/** Values for the parameters and body fields the document names, so that a request gets past its checks. */
const VALUES: Record<string, unknown> = {
  provider_config_key: 'api',
  provider: 'testapi',
  connection_id: 'c1',
  sync_name: 'items',
  syncs: ['items'],
  action_name: 'create_item',
  model: 'Item',
  file: 'terapi.css',
  path: 'echo',
  allowed_integrations: ['api'],
  credentials: { type: 'api_key', api_key: 'k' },
  'Provider-Config-Key': 'api',
  'Connection-Id': 'c1',
};

/** A request body that fits the schema: its required fields and those VALUES names (the first field, where one is needed). */
function sample(schema: any, name = ''): unknown {
  if (schema.$ref) return sample(doc.components.schemas[schema.$ref.split('/').pop()], name);
  if (name in VALUES) return VALUES[name];
  if (schema.oneOf || schema.anyOf) return sample((schema.oneOf ?? schema.anyOf)[0], name);
  if (schema.enum) return schema.enum[0];
  switch (schema.type) {
    case 'object': {
      const keys = [...new Set([...(schema.required ?? []), ...Object.keys(schema.properties ?? {}).filter((k) => k in VALUES)])];
      if (!keys.length && schema.minProperties && schema.properties) keys.push(Object.keys(schema.properties)[0]);
      return Object.fromEntries(keys.map((k) => [k, sample(schema.properties?.[k] ?? {}, k)]));
    }
    case 'array':
      return [sample(schema.items ?? {}, name)];
    case 'integer':
    case 'number':
      return 1;
    case 'boolean':
      return true;
    default:
      return 'x';
  }
}

describe('with the database unreachable, every operation answers a status its document lists', { skip: pgSkip }, () => {
  let t: Running;
  let api: Awaited<ReturnType<typeof fakeApi>>;
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let hop: Awaited<ReturnType<typeof tcpHop>>;

  before(async () => {
    api = await fakeApi((req, res) => json(res, 200, { url: req.url }));
    db = await freshDatabase(PG_URL!, 'terapi_client');
    const real = new URL(PG_URL!);
    hop = await tcpHop({ host: real.hostname, port: Number(real.port || 5432) });
    t = await startTerapi({ databaseUrl: hop.via(db.url), providersDirs: [providersDir({ testapi: apiProvider(api.url) })] });
  });

  after(async () => {
    await t?.close();
    await hop?.cut().catch(() => {});
    await api?.close();
    await db?.drop();
  });

  test('503 store_unavailable where the store is needed, and only listed statuses elsewhere', async () => {
    const client = createTerapiClient({ baseUrl: t.url, secretKey: t.secret });
    client.use(conformance);
    assert.equal((await client.POST('/integration', { body: { provider_config_key: 'api', provider: 'testapi' } })).response.status, 200);
    assert.equal((await client.POST('/connection', { body: { provider_config_key: 'api', connection_id: 'c1', credentials: { type: 'api_key', api_key: 'k' } } })).response.status, 200);
    await hop.cut();
    const answers: string[] = [];
    try {
      for (const o of OPS) {
        const params: Record<string, Record<string, unknown>> = {};
        for (const p of o.op.parameters ?? []) {
          if (p.required || p.in === 'path') (params[p.in] ??= {})[p.name] = VALUES[p.name] ?? 'x';
        }
        const body = resolve(o.op.requestBody, 'requestBodies')?.content['application/json']?.schema;
        const { response } = await (client as any).request(o.method, o.path, {
          params,
          ...(body ? { body: sample(body) } : {}),
          // The dashboard's sign-in is taken from its own page only; a connect session operation takes its token here.
          headers: o.id === 'dashboardLogin' ? { origin: t.url, authorization: '' } : (o.op.security ?? doc.security).some((x: object) => 'ConnectSessionAuth' in x) ? { authorization: 'Bearer cs_x' } : {},
          parseAs: 'text',
          redirect: 'manual',
        });
        answers.push(`${o.id} ${response.status}`);
      }
    } finally {
      await hop.restore();
    }
    const unavailable = answers.filter((a) => a.endsWith(' 503'));
    // Everything that reads or writes integrations, connections, sessions, syncs, records or the log.
    for (const id of ['listConnections', 'createConnection', 'getConnection', 'deleteConnection', 'listIntegrations', 'createIntegration', 'updateIntegration', 'triggerSync', 'pauseSync', 'listSyncs', 'getSyncStatus', 'listRecords', 'triggerAction', 'getAuthToken', 'createConnectSession', 'getConnectSession', 'connectCredentials', 'listOperations', 'proxyGet', 'proxyPost', 'health']) {
      assert.ok(unavailable.includes(`${id} 503`), `${id} did not answer 503 with the database away: ${answers.join(', ')}`);
    }
  });
});
