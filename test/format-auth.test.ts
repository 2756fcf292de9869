/**
 * The auth half of the provider format's second edition (issue 12), each feature declared in a
 * provider file and run against a real HTTP server on 127.0.0.1 standing in for the provider's
 * token endpoint and API: what the provider receives, and what the app sees.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import { fakeApi, providersDir, startTerapi, type Running } from './support.ts';
import { loadCatalog } from '../core/format/provider-loader.ts';
import { formatError } from '../core/format/yaml-source.ts';
import { oauth1Header } from '../core/auth/oauth1.ts';

/** Loads one provider file's text; errors as `file:line:col: message`. */
function load(text: string, name = 'acme') {
  const { providers, errors } = loadCatalog([[{ file: `${name}.yaml`, text }]]);
  return { provider: providers.get(name), errors: errors.map(formatError) };
}

type Fake = Awaited<ReturnType<typeof fakeApi>>;

const basicOf = (header: string | undefined) => Buffer.from((header ?? '').replace(/^Basic /, ''), 'base64').toString();
const json = (res: import('node:http').ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

describe('per-connection OAuth client credentials', () => {
  let api: Fake;
  let t: Running;
  let issued = 0;
  before(async () => {
    api = await fakeApi((req, res) => {
      if (req.url === '/oauth/token') {
        const [id, secret] = basicOf(req.headers.authorization).split(':');
        if (!id || !secret) return json(res, 401, { error: 'invalid_client' });
        return json(res, 200, { access_token: `tok-${id}-${++issued}`, token_type: 'bearer', expires_in: 3600 });
      }
      json(res, 200, { seen: req.headers.authorization });
    });
    const provider = (required: boolean) => `
display_name: Per-connection client
categories: [testing]
docs: https://example.com/docs
auth:
  mode: oauth2_client_credentials
  token_url: ${api.url}/oauth/token
  client_auth: basic
${required ? '  connection_client: required\n' : ''}api: { base_url: "${api.url}" }
`;
    t = await startTerapi({ providersDirs: [providersDir({ 'cc-optional': provider(false), 'cc-required': provider(true) })] });
  });
  after(async () => {
    await t?.close();
    await api?.close();
  });

  test("a connection's own client id and secret ask for its token; others use the integration's", async () => {
    let r = await t.call('POST', '/integration', { provider_config_key: 'opt', provider: 'cc-optional', oauth_client_id: 'app-id', oauth_client_secret: 'app-secret' });
    assert.equal(r.status, 200, r.text);
    r = await t.call('POST', '/connection', { connection_id: 'own', provider_config_key: 'opt', credentials: { type: 'oauth2_client_credentials', client_id: 'cust-id', client_secret: 'cust-secret-1234' } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.credentials, { type: 'oauth2_client_credentials' }, 'the client secret is never shown');
    r = await t.call('POST', '/connection', { connection_id: 'shared', provider_config_key: 'opt' });
    assert.equal(r.status, 200, r.text);

    r = await t.call('GET', '/auth/token/opt/own');
    assert.equal(r.status, 200, r.text);
    assert.match(r.body.access_token, /^tok-cust-id-/);
    assert.ok(!r.text.includes('cust-secret-1234'));
    const tokenCalls = api.requests.filter((q) => q.url === '/oauth/token');
    assert.equal(basicOf(tokenCalls.at(-1)!.headers.authorization), 'cust-id:cust-secret-1234');
    assert.equal(tokenCalls.at(-1)!.body, 'grant_type=client_credentials');

    r = await t.call('GET', '/auth/token/opt/shared');
    assert.match(r.body.access_token, /^tok-app-id-/);
    assert.equal(basicOf(api.requests.at(-1)!.headers.authorization), 'app-id:app-secret');

    // A refresh keeps the connection's own client: the second token is asked for with it too.
    r = await t.call('GET', '/auth/token/opt/own?force_refresh=true');
    assert.match(r.body.access_token, /^tok-cust-id-/);
    assert.equal(basicOf(api.requests.at(-1)!.headers.authorization), 'cust-id:cust-secret-1234');
    // And the proxy sends that token.
    r = await t.call('GET', '/proxy/anything', undefined, { 'provider-config-key': 'opt', 'connection-id': 'own' });
    assert.equal(r.status, 200, r.text);
    assert.match(r.body.seen, /^Bearer tok-cust-id-/);
  });

  test('credentials of the wrong shape are a 400 that says the shape', async () => {
    for (const credentials of [{ type: 'oauth2_client_credentials', client_id: 'x' }, { type: 'api_key', api_key: 'k' }, { type: 'oauth2_client_credentials', client_id: 'x', client_secret: 'y', access_token: 'z' }]) {
      const r = await t.call('POST', '/connection', { connection_id: 'bad', provider_config_key: 'opt', credentials });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.body.error, 'invalid_credentials');
      // The served document's check names the missing field; the engine's names the shape.
      assert.match(r.body.message, /"client_id", "client_secret"|body\.credentials\.client_secret is required/);
    }
  });

  test('connection_client: required needs no integration client, and every connection gives one', async () => {
    let r = await t.call('POST', '/integration', { provider_config_key: 'req', provider: 'cc-required' });
    assert.equal(r.status, 200, r.text);
    r = await t.call('POST', '/connection', { connection_id: 'none', provider_config_key: 'req' });
    assert.equal(r.status, 400, r.text);
    assert.match(r.body.message, /each connection brings its own OAuth client/);
    r = await t.call('POST', '/connection', { connection_id: 'c1', provider_config_key: 'req', credentials: { type: 'oauth2_client_credentials', client_id: 'zoom-acct', client_secret: 'zoom-secret' } });
    assert.equal(r.status, 200, r.text);
    r = await t.call('GET', '/auth/token/req/c1');
    assert.match(r.body.access_token, /^tok-zoom-acct-/);

    // The connect UI asks the end user for their client id and secret.
    r = await t.call('POST', '/connect/sessions', { connection_id: 'c2', allowed_integrations: ['req'] });
    const token = r.body.token;
    r = await t.call('GET', '/connect/session', undefined, { authorization: `Bearer ${token}` });
    assert.deepEqual(r.body.integrations[0].credentials.map((f: { name: string; secret: boolean }) => [f.name, f.secret]), [['client_id', false], ['client_secret', true]]);
    r = await t.call('POST', '/connect/req/credentials', { client_id: 'ui-id', client_secret: 'ui-secret' }, { authorization: `Bearer ${token}` });
    assert.equal(r.status, 200, r.text);
    r = await t.call('GET', '/auth/token/req/c2');
    assert.match(r.body.access_token, /^tok-ui-id-/);
  });
});

describe('connection_config defaults', () => {
  let api: Fake;
  let t: Running;
  before(async () => {
    api = await fakeApi((req, res) => {
      if (req.url!.endsWith('/oauth2/v2.0/token')) return json(res, 200, { access_token: `tok-${req.url!.split('/')[1]}`, expires_in: 3600 });
      json(res, 200, { path: req.url });
    });
    t = await startTerapi({
      providersDirs: [
        providersDir({
          tenanted: `
display_name: Tenanted
categories: [testing]
docs: https://example.com/docs
connection_config:
  tenant:
    pattern: "[A-Za-z0-9.-]+"
    default: common
  region:
    pattern: 'http://127\\.0\\.0\\.1:[0-9]+'
    format: url
    default: ${api.url}
auth:
  mode: oauth2_client_credentials
  token_url: \${region}/\${tenant}/oauth2/v2.0/token
api: { base_url: "\${region}/v1" }
`,
        }),
      ],
    });
    await t.call('POST', '/integration', { provider_config_key: 'ten', provider: 'tenanted', oauth_client_id: 'id', oauth_client_secret: 'secret' });
  });
  after(async () => {
    await t?.close();
    await api?.close();
  });

  test('a field left out takes its default, in the connection and in every URL; a given value wins', async () => {
    let r = await t.call('POST', '/connection', { connection_id: 'd', provider_config_key: 'ten' });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.connection_config, { tenant: 'common', region: api.url });
    r = await t.call('GET', '/auth/token/ten/d');
    assert.equal(r.body.access_token, 'tok-common');
    r = await t.call('GET', '/proxy/me', undefined, { 'provider-config-key': 'ten', 'connection-id': 'd' });
    assert.equal(r.body.path, '/v1/me');

    r = await t.call('POST', '/connection', { connection_id: 'c', provider_config_key: 'ten', connection_config: { tenant: 'contoso.onmicrosoft.com' } });
    assert.equal(r.body.connection_config.tenant, 'contoso.onmicrosoft.com');
    r = await t.call('GET', '/auth/token/ten/c');
    assert.equal(r.body.access_token, 'tok-contoso.onmicrosoft.com');
    assert.equal(api.requests.filter((q) => q.url.endsWith('/token')).at(-1)!.url, '/contoso.onmicrosoft.com/oauth2/v2.0/token');
  });

  test('the connect UI shows a field with a default as optional, with the default', async () => {
    let r = await t.call('POST', '/connect/sessions', { connection_id: 'ui', allowed_integrations: ['ten'] });
    r = await t.call('GET', '/connect/session', undefined, { authorization: `Bearer ${r.body.token}` });
    const tenant = r.body.integrations[0].connection_config.find((f: { name: string }) => f.name === 'tenant');
    assert.equal(tenant.default, 'common');
    assert.equal(tenant.optional, true);
  });

  test('a default that does not match its pattern is a load error at its line and column', () => {
    const { errors } = load(`display_name: A
categories: [testing]
docs: https://example.com/docs
connection_config:
  host:
    pattern: '[a-z]+\\.example\\.com'
    default: evil.test
auth: { mode: none }
api: { base_url: "https://\${host}/api" }
`);
    assert.deepEqual(errors, ['acme.yaml:7:14: "connection_config.host.default" does not match the field\'s pattern [a-z]+\\.example\\.com: give a value the pattern accepts']);
  });
});

describe('token lifetime: default_expires_in and refresh_on_401', () => {
  let api: Fake;
  let t: Running;
  let issued = 0;
  /** Tokens the API still takes: a session ended early takes the connection's token out. */
  const valid = new Set<string>();
  before(async () => {
    api = await fakeApi((req, res) => {
      if (req.url === '/token') {
        const token = `new-${++issued}`;
        valid.add(token);
        // Like Salesforce: no expires_in in the answer.
        return json(res, 200, { access_token: token, instance_url: 'https://x.example.com' });
      }
      const token = (req.headers.authorization ?? '').replace('Bearer ', '');
      if (!valid.has(token)) return json(res, 401, [{ message: 'Session expired or invalid', errorCode: 'INVALID_SESSION_ID' }]);
      json(res, 200, { items: [{ id: 1 }, { id: 2 }], token });
    });
    const provider = (on401: boolean) => `
display_name: Sessions
categories: [testing]
docs: https://example.com/docs
auth:
  mode: oauth2
  authorization_url: ${api.url}/authorize
  token_url: ${api.url}/token
  token_response: { default_expires_in: 7200 }
  refresh_on_401: ${on401}
api: { base_url: "${api.url}" }
syncs:
  items:
    mode: full
    auto_start: false
    request: { path: /items }
    records: items
    mapping: "{ 'id': $string(id) }"
    model: { name: Item }
actions:
  whoami:
    input: { type: object }
    request: { path: /me }
    output: "{ 'token': token }"
`;
    // The embedded store: five proxy calls refused at once once waited 30 s for SQLite's write lock
    // here (the keyv handle's statements held every libuv thread; store.ts runs them one at a time now).
    t = await startTerapi({ providersDirs: [providersDir({ sessions: provider(true), strict: provider(false) })] });
    for (const key of ['sessions', 'strict']) await t.call('POST', '/integration', { provider_config_key: key, provider: key, oauth_client_id: 'id', oauth_client_secret: 'secret' });
  });
  after(async () => {
    await t?.close();
    await api?.close();
  });
  const connect = (key: string, id: string) => t.call('POST', '/connection', { connection_id: id, provider_config_key: key, credentials: { type: 'oauth2', access_token: `ended-${id}`, refresh_token: `r-${id}` } });
  const refreshes = () => api.requests.filter((q) => q.url === '/token').length;

  test('a token response without expiry gets the default lifetime', async () => {
    await connect('strict', 'life');
    const before = Date.now();
    const r = await t.call('GET', '/auth/token/strict/life?force_refresh=true');
    assert.equal(r.status, 200, r.text);
    const elapsed = (Date.now() - before) / 1000;
    const lifetime = (Date.parse(r.body.expires_at) - before) / 1000;
    assert.ok(lifetime >= 7199 && lifetime <= 7201 + elapsed, `expires in ${lifetime} s`);
  });

  test('an action refused with 401 refreshes once and is sent again', async () => {
    await connect('sessions', 'a1');
    await t.engine.idle();
    valid.clear(); // the session ends before its stated expiry
    const before = refreshes();
    const r = await t.call('POST', '/action/trigger', { provider_config_key: 'sessions', connection_id: 'a1', action_name: 'whoami', input: {} });
    assert.equal(r.status, 200, r.text);
    assert.match(r.body.output.token, /^new-/);
    assert.equal(refreshes(), before + 1);
  });

  test('without refresh_on_401 a 401 is the provider failing, and nothing is refreshed', async () => {
    await connect('strict', 's1');
    await t.engine.idle();
    const before = refreshes();
    const r = await t.call('POST', '/action/trigger', { provider_config_key: 'strict', connection_id: 's1', action_name: 'whoami', input: {} });
    assert.equal(r.status, 502, r.text);
    assert.match(r.body.message, /HTTP 401/);
    assert.equal(refreshes(), before);
  });

  test('concurrent proxy calls refused together with one token make one refresh', async () => {
    await connect('sessions', 'p2');
    const before = refreshes();
    const calls = await Promise.all(Array.from({ length: 5 }, () => t.call('GET', '/proxy/me', undefined, { 'provider-config-key': 'sessions', 'connection-id': 'p2' })));
    assert.deepEqual(calls.map((c) => c.status), [200, 200, 200, 200, 200], calls.map((c) => c.text).join('\n'));
    assert.equal(new Set(calls.map((c) => c.body.token)).size, 1);
    assert.equal(refreshes(), before + 1);
  });

  test("a sync's page refused with 401 refreshes once and is sent again", async () => {
    const before = refreshes();
    await connect('sessions', 'p1');
    await t.call('POST', '/sync/trigger', { provider_config_key: 'sessions', connection_id: 'p1', syncs: ['items'] });
    await t.engine.idle();
    let r = await t.call('GET', '/sync/p1/items?provider_config_key=sessions');
    assert.equal(r.body.status, 'success', r.text);
    r = await t.call('GET', '/records?provider_config_key=sessions&connection_id=p1&model=Item');
    assert.deepEqual(r.body.records.map((x: { id: string }) => x.id), ['1', '2']);
    assert.equal(refreshes(), before + 1);
  });
});

describe('templates in token, refresh and revocation requests', () => {
  let api: Fake;
  let t: Running;
  let issued = 0;
  before(async () => {
    api = await fakeApi((req, res) => {
      if (req.url === '/token') return json(res, 200, { access_token: `at-${++issued}`, refresh_token: `rt-${issued}`, expires_in: 3600 });
      res.writeHead(204).end();
    });
    const provider = `
display_name: Templated
categories: [testing]
docs: https://example.com/docs
connection_config:
  workspace: { pattern: "[a-z]+" }
auth:
  mode: oauth2
  authorization_url: ${api.url}/authorize
  token_url: ${api.url}/token
  scopes: [read, write]
  token_headers:
    Notion-Version: "2022-06-28"
    X-Workspace: \${workspace}
  refresh_params:
    scope: \${scopes}
    expires_in: "172800"
    audience: app-\${client_id}
  revocation:
    url: ${api.url}/\${workspace}/tokens/\${token}
    method: DELETE
    token: refresh_token
    client_auth: none
    token_in_body: false
    token_type_hint: true
    headers:
      Authorization: Bearer \${token}
api: { base_url: "${api.url}" }
`;
    t = await startTerapi({ providersDirs: [providersDir({ templated: provider })] });
    await t.call('POST', '/integration', { provider_config_key: 'tpl', provider: 'templated', oauth_client_id: 'cid', oauth_client_secret: 'csecret', oauth_scopes: 'tickets:read,users:write' });
  });
  after(async () => {
    await t?.close();
    await api?.close();
  });

  test("a refresh sends the templated headers and params: the integration's scopes and client id", async () => {
    let r = await t.call('POST', '/connection', { connection_id: 'c', provider_config_key: 'tpl', connection_config: { workspace: 'acme' }, credentials: { type: 'oauth2', access_token: 'at-0', refresh_token: 'rt-0' } });
    assert.equal(r.status, 200, r.text);
    r = await t.call('GET', '/auth/token/tpl/c?force_refresh=true');
    assert.equal(r.status, 200, r.text);
    const refresh = api.requests.find((q) => q.url === '/token')!;
    assert.equal(refresh.headers['notion-version'], '2022-06-28');
    assert.equal(refresh.headers['x-workspace'], 'acme');
    assert.deepEqual(Object.fromEntries(new URLSearchParams(refresh.body)), {
      grant_type: 'refresh_token',
      refresh_token: 'rt-0',
      scope: 'tickets:read users:write',
      expires_in: '172800',
      audience: 'app-cid',
      client_id: 'cid',
      client_secret: 'csecret',
    });
  });

  test('a revocation carries the token being revoked in its path and header, and no client secret', async () => {
    const r = await t.call('DELETE', '/connection/c?provider_config_key=tpl');
    assert.equal(r.status, 204, r.text);
    const revoke = api.requests.at(-1)!;
    assert.equal(revoke.method, 'DELETE');
    assert.equal(revoke.url, '/acme/tokens/rt-1');
    assert.equal(revoke.headers.authorization, 'Bearer rt-1');
    // Only the hint is in the body: neither the token (token_in_body: false) nor the client's credentials.
    assert.equal(revoke.body, 'token_type_hint=refresh_token');
  });

  test('a template naming ${token} outside the revocation is a load error', () => {
    const { errors } = load(`display_name: A
categories: [testing]
docs: https://example.com/docs
auth:
  mode: oauth2
  authorization_url: https://a.example.com/authorize
  token_url: https://a.example.com/token
  token_headers: { X-Token: "\${token}" }
api: { base_url: "https://a.example.com" }
`);
    assert.equal(errors.length, 1);
    assert.match(errors[0], /^acme\.yaml:8:29: "auth\.token_headers\.X-Token" uses \$\{token\}, which is not declared here/);
  });
});

describe('token exchange: credentials exchanged for a short-lived token', () => {
  let api: Fake;
  let t: Running;
  let signins = 0;
  let password = 'pat-secret-1';
  const valid = new Set<string>();
  before(async () => {
    api = await fakeApi(async (req, res) => {
      if (req.url === '/api/3.22/auth/signin') {
        const c = req.body?.credentials ?? {};
        if (c.personalAccessTokenName !== 'sync-bot' || c.personalAccessTokenSecret !== password) {
          return json(res, 401, { error: { summary: 'Signin Error', detail: 'Error signing in to Tableau Server', code: '401001' } });
        }
        await new Promise((r) => setTimeout(r, 50));
        const token = `session-${++signins}`;
        valid.add(token);
        return json(res, 200, { credentials: { site: { id: '9a8b7c6d', contentUrl: c.site.contentUrl }, user: { id: 'u-1' }, token } });
      }
      if (!valid.has(String(req.headers['x-tableau-auth']))) return json(res, 401, { error: { code: '401002', summary: 'Unauthorized Access' } });
      json(res, 200, { url: req.url, auth: req.headers['x-tableau-auth'], basic: req.headers.authorization ?? null });
    });
    const provider = (lifetime: number, buffer: number) => `
display_name: Two-step
categories: [testing]
docs: https://example.com/docs
connection_config:
  site: { pattern: "[A-Za-z0-9_-]*" }
  site_id: { pattern: "[a-f0-9-]+", from_token_response: credentials.site.id }
auth:
  mode: basic
  username_label: Personal access token name
  password_label: Personal access token secret
  token_exchange:
    request:
      method: POST
      path: /api/3.22/auth/signin
      body: >-
        { 'credentials': { 'personalAccessTokenName': $credentials.username,
          'personalAccessTokenSecret': $credentials.password, 'site': { 'contentUrl': $config.site } } }
    token_response:
      access_token: credentials.token
      default_expires_in: ${lifetime}
      metadata: { user_id: credentials.user.id }
    refresh_buffer_seconds: ${buffer}
    refresh_on_401: true
api:
  base_url: ${api.url}
  credentials: { in: header, name: X-Tableau-Auth, value: "\${access_token}" }
`;
    t = await startTerapi({ providersDirs: [providersDir({ twostep: provider(14400, 300), shortlived: provider(2, 1) })] });
    for (const key of ['twostep', 'shortlived']) await t.call('POST', '/integration', { provider_config_key: key, provider: key });
  });
  after(async () => {
    await t?.close();
    await api?.close();
  });
  const connect = (key: string, id: string, secret = password) =>
    t.call('POST', '/connection', { connection_id: id, provider_config_key: key, connection_config: { site: 'acme' }, credentials: { type: 'basic', username: 'sync-bot', password: secret } });
  const proxy = (key: string, id: string) => t.call('GET', '/proxy/api/3.22/sites/x/projects', undefined, { 'provider-config-key': key, 'connection-id': id });

  test('credentials the provider refuses are a 400 quoting it, and nothing is stored', async () => {
    let r = await connect('twostep', 'bad', 'wrong-secret');
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error, 'invalid_credentials');
    assert.match(r.body.message, /refused these credentials at its token exchange \(HTTP 401\)/);
    assert.ok(!r.text.includes('wrong-secret'));
    r = await t.call('GET', '/connection/bad?provider_config_key=twostep');
    assert.equal(r.status, 404);
  });

  test('the token goes on API calls, the response fills connection_config and metadata, the app gets the token', async () => {
    const before = Date.now();
    let r = await connect('twostep', 'ok');
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.connection_config, { site: 'acme', site_id: '9a8b7c6d' });
    assert.equal(r.body.metadata.user_id, 'u-1');
    const signin = api.requests.find((q) => q.url === '/api/3.22/auth/signin' && q.body.credentials.personalAccessTokenSecret === password)!;
    assert.deepEqual(signin.body, { credentials: { personalAccessTokenName: 'sync-bot', personalAccessTokenSecret: password, site: { contentUrl: 'acme' } } });
    assert.equal(signin.headers.authorization, undefined, 'the exchange carries no other credential');
    r = await t.call('GET', '/auth/token/twostep/ok');
    assert.equal(r.body.type, 'Bearer');
    assert.equal(r.body.access_token, `session-${signins}`);
    assert.ok(Date.parse(r.body.expires_at) >= before + 14_399_000);
    r = await proxy('twostep', 'ok');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.auth, `session-${signins}`);
    assert.equal(r.body.basic, null, 'the password never goes on API calls');
  });

  test('an ended session is exchanged again once for many requests; an expiring one before it expires', async () => {
    const before = signins;
    valid.clear();
    const calls = await Promise.all(Array.from({ length: 4 }, () => proxy('twostep', 'ok')));
    assert.deepEqual(calls.map((c) => c.status), [200, 200, 200, 200]);
    assert.equal(signins, before + 1);

    await connect('shortlived', 's');
    const first = (await t.call('GET', '/auth/token/shortlived/s')).body.access_token;
    await new Promise((r) => setTimeout(r, 1100)); // within the refresh buffer of its 2 s lifetime
    const [a, b] = await Promise.all([t.call('GET', '/auth/token/shortlived/s'), t.call('GET', '/auth/token/shortlived/s')]);
    assert.notEqual(a.body.access_token, first);
    assert.equal(a.body.access_token, b.body.access_token, 'one exchange for both');
  });

  test('credentials refused at a later exchange mark the connection for re-authorisation', async () => {
    password = 'rotated-secret';
    const r = await t.call('GET', '/auth/token/twostep/ok?force_refresh=true');
    assert.equal(r.status, 424, r.text);
    assert.equal(r.body.error, 'connection_needs_reauth');
    const c = await t.call('GET', '/connection/ok?provider_config_key=twostep');
    assert.equal(c.body.needs_reauth, true);
    password = 'pat-secret-1';
  });

  test('a token_exchange with a verification request is a load error', () => {
    const { errors } = load(`display_name: A
categories: [testing]
docs: https://example.com/docs
auth:
  mode: api_key
  token_exchange:
    request: { method: POST, path: /token, headers: { X-Key: "\${api_key}" } }
    token_response: { access_token: token }
verification:
  request: { path: /me }
api: { base_url: "https://a.example.com", headers: { X-Session: "\${access_token}" } }
`);
    assert.deepEqual(errors, ['acme.yaml:9:1: "verification" is not needed with auth.token_exchange: the exchange itself checks the credentials when the connection is made. Remove it']);
  });
});

describe('JWT bearer grant signed with a sealed private key', () => {
  let api: Fake;
  let t: Running;
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const rsaPem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const ecPem = ec.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  /** Checks a JWT as the provider does: its signature with the public key, then its claims. */
  const verified = (jwt: string, key: KeyObject, alg: 'RS256' | 'ES256') => {
    const [h, p, sig] = jwt.split('.');
    const ok = verify('sha256', Buffer.from(`${h}.${p}`), alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key, Buffer.from(sig, 'base64url'));
    return ok ? { header: JSON.parse(Buffer.from(h, 'base64url').toString()), claims: JSON.parse(Buffer.from(p, 'base64url').toString()) } : undefined;
  };
  let issued = 0;
  before(async () => {
    api = await fakeApi((req, res) => {
      if (req.url === '/token') {
        const form = new URLSearchParams(req.body);
        const jwt = verified(form.get('assertion') ?? '', rsa.publicKey, 'RS256');
        if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer' || !jwt) return json(res, 400, { error: 'invalid_grant', error_description: 'Invalid JWT Signature.' });
        return json(res, 200, { access_token: `ya29.${++issued}`, expires_in: 3599, token_type: 'Bearer', claims: jwt.claims, header: jwt.header });
      }
      const m = /^\/app\/installations\/(\d+)\/access_tokens$/.exec(req.url!);
      if (m) {
        const jwt = verified(String(req.headers.authorization).replace('Bearer ', ''), ec.publicKey, 'ES256');
        if (!jwt) return json(res, 401, { message: 'A JSON web token could not be decoded' });
        return json(res, 201, { token: `ghs_${m[1]}_${++issued}`, expires_at: new Date(Date.now() + 3600_000).toISOString(), claims: jwt.claims });
      }
      json(res, 200, { auth: req.headers.authorization });
    });
    const google = `
display_name: Service account
categories: [testing]
docs: https://example.com/docs
connection_config:
  subject: { pattern: "[^@]+@[a-z.]+", optional: true }
auth:
  mode: jwt_bearer
  issuer_label: Service account email
  claims:
    iss: \${issuer}
    scope: https://www.googleapis.com/auth/drive.readonly
    aud: ${api.url}/token
  token_exchange:
    request:
      method: POST
      path: ${api.url}/token
      body: "{ 'grant_type': 'urn:ietf:params:oauth:grant-type:jwt-bearer', 'assertion': $assertion }"
    format: form
    token_response: { access_token: access_token, expires_in: expires_in, metadata: { claims: claims, header: header } }
api: { base_url: "${api.url}" }
`;
    const githubApp = `
display_name: App
categories: [testing]
docs: https://example.com/docs
connection_config:
  installation_id: { pattern: "[0-9]+" }
auth:
  mode: jwt_bearer
  algorithm: ES256
  claims: { iss: "\${issuer}" }
  lifetime_seconds: 540
  token_exchange:
    request:
      method: POST
      path: /app/installations/\${installation_id}/access_tokens
      headers: { Authorization: "Bearer \${assertion}" }
    token_response: { access_token: token, expires_at: expires_at, metadata: { claims: claims } }
api: { base_url: "${api.url}" }
`;
    t = await startTerapi({ providersDirs: [providersDir({ 'service-account': google, 'gh-app': githubApp })] });
    for (const key of ['service-account', 'gh-app']) await t.call('POST', '/integration', { provider_config_key: key, provider: key });
  });
  after(async () => {
    await t?.close();
    await api?.close();
  });

  test('a service account key signs an RS256 assertion; its token goes on API calls; the key is never shown', async () => {
    const started = Math.floor(Date.now() / 1000);
    // As in a key file's JSON: the key with \n escapes.
    let r = await t.call('POST', '/connection', { connection_id: 'sa', provider_config_key: 'service-account', credentials: { type: 'jwt_bearer', issuer: 'sync@acme.iam.gserviceaccount.com', private_key: rsaPem.replace(/\n/g, '\\n'), key_id: 'k-123' } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.credentials.type, 'jwt_bearer');
    assert.ok(!r.text.includes('PRIVATE KEY'));
    const { claims, header } = r.body.metadata;
    assert.deepEqual(header, { alg: 'RS256', typ: 'JWT', kid: 'k-123' });
    assert.equal(claims.iss, 'sync@acme.iam.gserviceaccount.com');
    assert.equal(claims.aud, `${api.url}/token`);
    assert.equal(claims.scope, 'https://www.googleapis.com/auth/drive.readonly');
    assert.ok(claims.iat <= started - 59 && claims.exp === claims.iat + 3600, JSON.stringify(claims));
    r = await t.call('GET', '/auth/token/service-account/sa');
    assert.equal(r.body.type, 'Bearer');
    assert.match(r.body.access_token, /^ya29\./);
    assert.ok(!r.text.includes('PRIVATE KEY'));
    r = await t.call('GET', '/proxy/drive/v3/files', undefined, { 'provider-config-key': 'service-account', 'connection-id': 'sa' });
    assert.match(r.body.auth, /^Bearer ya29\./);
    // A refresh signs a new assertion.
    const before = issued;
    r = await t.call('GET', '/auth/token/service-account/sa?force_refresh=true');
    assert.equal(r.status, 200, r.text);
    assert.equal(issued, before + 1);
  });

  test('a GitHub App key (pasted on one line) signs an ES256 JWT (iss a number) sent as the bearer of the installation token request', async () => {
    const r = await t.call('POST', '/connection', { connection_id: 'app', provider_config_key: 'gh-app', connection_config: { installation_id: '4242' }, credentials: { type: 'jwt_bearer', issuer: '123456', private_key: ecPem.replace(/\n/g, ' ') } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.metadata.claims.iss, 123456);
    assert.equal(r.body.metadata.claims.exp - r.body.metadata.claims.iat, 540);
    const token = await t.call('GET', '/auth/token/gh-app/app');
    assert.match(token.body.access_token, /^ghs_4242_/);
  });

  test('a key that is not a private key, or of the wrong kind, is a 400; a key the provider refuses too', async () => {
    let r = await t.call('POST', '/connection', { connection_id: 'x', provider_config_key: 'service-account', credentials: { type: 'jwt_bearer', issuer: 'a@b.c', private_key: 'not a key' } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error, 'invalid_credentials');
    r = await t.call('POST', '/connection', { connection_id: 'x', provider_config_key: 'service-account', credentials: { type: 'jwt_bearer', issuer: 'a@b.c', private_key: ecPem } });
    assert.equal(r.status, 400, r.text);
    assert.match(r.body.message, /RS256, which needs an RSA key/);
    // Another RSA key than the one the provider knows: its answer is passed on as a 400.
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    r = await t.call('POST', '/connection', { connection_id: 'x', provider_config_key: 'service-account', credentials: { type: 'jwt_bearer', issuer: 'a@b.c', private_key: other } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error, 'invalid_credentials');
    assert.match(r.body.message, /refused these credentials at its token exchange \(HTTP 400\): "Invalid JWT Signature\."/);
    assert.equal((await t.call('GET', '/connection/x?provider_config_key=service-account')).status, 404);
  });
});

describe('values from the OAuth callback, and choosing among post-connection results', () => {
  let api: Fake;
  let t: Running;
  /** The shop the fake authorization server sends back with the code. */
  let shop = 'acme.myshopify.com';
  before(async () => {
    api = await fakeApi((req, res) => {
      const url = new URL(req.url!, 'http://x');
      if (url.pathname === '/authorize') {
        const back = new URL(url.searchParams.get('redirect_uri')!);
        back.searchParams.set('code', 'code-1');
        back.searchParams.set('state', url.searchParams.get('state')!);
        back.searchParams.set('shop', shop);
        res.writeHead(302, { location: back.toString() }).end();
        return;
      }
      if (url.pathname.endsWith('/token')) return json(res, 200, { access_token: `tok-${url.pathname.split('/')[1]}`, scope: 'read_products' });
      if (url.pathname === '/accessible-resources') {
        return json(res, 200, [
          { id: '11111111-1111-1111-1111-111111111111', name: 'first', url: 'https://first.atlassian.net' },
          { id: '22222222-2222-2222-2222-222222222222', name: 'second', url: 'https://second.atlassian.net' },
        ]);
      }
      json(res, 404, {});
    });
    // The token URL names the shop the callback gave (Shopify: https://{shop}/admin/oauth/access_token);
    // here the shop is the first path segment of the stand-in server.
    const shopify = `
display_name: Shop
categories: [testing]
docs: https://example.com/docs
connection_config:
  shop: { pattern: "[a-z0-9-]+\\\\.myshopify\\\\.com", from_callback: shop }
auth:
  mode: oauth2
  authorization_url: ${api.url}/authorize
  token_url: ${api.url}/\${shop}/token
api: { base_url: "${api.url}/\${shop}" }
`;
    const sites = `
display_name: Sites
categories: [testing]
docs: https://example.com/docs
connection_config:
  site_url: { pattern: "https://[a-z0-9-]+\\\\.atlassian\\\\.net", optional: true }
  cloud_id: { pattern: "[0-9a-f-]{36}" }
auth:
  mode: oauth2
  authorization_url: ${api.url}/authorize
  token_url: ${api.url}/token
post_connection:
  request: { path: /accessible-resources }
  choose:
    items: $
    where: $not($exists($config.site_url)) or url = $config.site_url
  config: { cloud_id: id }
  metadata: { site_name: name, site_count: $count($response) }
api: { base_url: "${api.url}" }
`;
    t = await startTerapi({ providersDirs: [providersDir({ shop: shopify, sites })] });
    for (const key of ['shop', 'sites']) await t.call('POST', '/integration', { provider_config_key: key, provider: key, oauth_client_id: 'id', oauth_client_secret: 'secret' });
  });
  after(async () => {
    await t?.close();
    await api?.close();
  });

  /** The browser's part of a connect flow: our redirect, the provider's, then the callback with the flow's cookie. */
  async function browse(key: string, connectionId: string) {
    const s = await t.call('POST', '/connect/sessions', { connection_id: connectionId, allowed_integrations: [key] });
    const start = await fetch(`${t.url}/oauth/connect/${key}?connect_session_token=${s.body.token}`, { redirect: 'manual' });
    const cookie = (start.headers.get('set-cookie') ?? '').split(';')[0];
    const back = await fetch(start.headers.get('location')!, { redirect: 'manual' });
    const page = await fetch(back.headers.get('location')!, { headers: { cookie } });
    return { status: page.status, html: await page.text() };
  }

  test("a callback parameter is kept into connection_config and used by the token URL", async () => {
    const { status, html } = await browse('shop', 's1');
    assert.equal(status, 200, html);
    const c = await t.call('GET', '/connection/s1?provider_config_key=shop');
    assert.deepEqual(c.body.connection_config, { shop: 'acme.myshopify.com' });
    assert.ok(api.requests.some((q) => q.url === '/acme.myshopify.com/token'));
  });

  test('a callback parameter that does not match its pattern fails the flow and stores nothing', async () => {
    shop = 'evil.example.com';
    const before = api.requests.filter((q) => q.url.endsWith('/token')).length;
    const { status, html } = await browse('shop', 's2');
    shop = 'acme.myshopify.com';
    assert.equal(status, 400);
    assert.match(html, /invalid_callback/);
    assert.equal((await t.call('GET', '/connection/s2?provider_config_key=shop')).status, 404);
    assert.equal(api.requests.filter((q) => q.url.endsWith('/token')).length, before, 'no code was exchanged');
  });

  test('several post-connection results: a connection_config field chooses one, else the first', async () => {
    let r = await t.call('POST', '/connection', { connection_id: 'any', provider_config_key: 'sites', credentials: { type: 'oauth2', access_token: 'a' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.connection_config.cloud_id, '11111111-1111-1111-1111-111111111111');
    assert.deepEqual(r.body.metadata, { site_name: 'first', site_count: 2 });
    r = await t.call('POST', '/connection', { connection_id: 'second', provider_config_key: 'sites', connection_config: { site_url: 'https://second.atlassian.net' }, credentials: { type: 'oauth2', access_token: 'a' } });
    assert.equal(r.body.connection_config.cloud_id, '22222222-2222-2222-2222-222222222222');
    assert.equal(r.body.metadata.site_name, 'second');
    r = await t.call('POST', '/connection', { connection_id: 'none', provider_config_key: 'sites', connection_config: { site_url: 'https://third.atlassian.net' }, credentials: { type: 'oauth2', access_token: 'a' } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error, 'no_matching_result');
    assert.match(r.body.message, /none of the 2 results/);
  });
});

describe('OAuth 1.0a', () => {
  test('HMAC-SHA1 signature of the RFC 5849 / Twitter documented example', () => {
    // https://developer.x.com/en/docs/authentication/oauth-1-0a/creating-a-signature: a POST with a
    // query parameter and a form body; its documented signature is hCtSmYh+iHYCEqBWrE7C7hYmtUk=.
    const header = oauth1Header(
      'POST',
      new URL('https://api.twitter.com/1.1/statuses/update.json?include_entities=true'),
      { consumerKey: 'xvz1evFS4wEEPTGEFPHBog', consumerSecret: 'kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw', token: '370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb', tokenSecret: 'LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE' },
      { status: 'Hello Ladies + Gentlemen, a signed OAuth request!' },
      { oauth_nonce: 'kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg' },
      1318622958_000,
    );
    assert.match(header, /oauth_signature="hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D"/);
    assert.match(header, /^OAuth oauth_consumer_key="xvz1evFS4wEEPTGEFPHBog", /);
  });

  describe('the connect flow and signed API calls, against a stand-in Trello', () => {
    let api: Fake;
    let t: Running;
    const consumer = { consumerKey: 'trello-key', consumerSecret: 'trello-secret' };
    const tokens: Record<string, string> = {};
    let callback = '';
    /** Checks a request's OAuth header as the provider does: the signature it would make with the secrets it knows. */
    const signedBy = (req: { method: string; url: string; headers: Record<string, any> }, tokenSecret?: string) => {
      const params = Object.fromEntries([...String(req.headers.authorization ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], decodeURIComponent(m[2])]));
      const { oauth_signature, oauth_consumer_key, oauth_token, oauth_timestamp, ...rest } = params;
      if (oauth_consumer_key !== consumer.consumerKey) return undefined;
      const expected = oauth1Header(req.method, new URL(req.url, api.url), { ...consumer, token: oauth_token, tokenSecret }, {}, rest, Number(oauth_timestamp) * 1000);
      return expected.includes(`oauth_signature="${encodeURIComponent(oauth_signature).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}"`) ? params : undefined;
    };
    before(async () => {
      api = await fakeApi((req, res) => {
        const url = new URL(req.url!, api.url);
        const form = (status: number, body: string) => {
          res.writeHead(status, { 'content-type': 'text/plain' });
          res.end(body);
        };
        if (url.pathname === '/1/OAuthGetRequestToken') {
          const p = signedBy(req as any);
          if (!p) return form(401, 'invalid signature');
          callback = p.oauth_callback;
          tokens['req-tok'] = 'req-secret';
          return form(200, 'oauth_token=req-tok&oauth_token_secret=req-secret&oauth_callback_confirmed=true');
        }
        if (url.pathname === '/1/OAuthAuthorizeToken') {
          const back = new URL(callback);
          back.searchParams.set('oauth_token', url.searchParams.get('oauth_token')!);
          back.searchParams.set('oauth_verifier', 'verifier-1');
          res.writeHead(302, { location: back.toString() }).end();
          return;
        }
        if (url.pathname === '/1/OAuthGetAccessToken') {
          const p = signedBy(req as any, tokens['req-tok']);
          if (!p || p.oauth_token !== 'req-tok' || p.oauth_verifier !== 'verifier-1') return form(401, 'invalid signature');
          tokens['acc-tok'] = 'acc-secret';
          return form(200, 'oauth_token=acc-tok&oauth_token_secret=acc-secret');
        }
        const p = signedBy(req as any, tokens['acc-tok']);
        if (!p || p.oauth_token !== 'acc-tok') return json(res, 401, { message: 'invalid signature' });
        json(res, 200, [{ id: '5abbe4b7ddc1b351ef961414', name: 'Trello Platform Changes', query: url.search }]);
      });
      const trello = `
display_name: Stand-in Trello
categories: [testing]
docs: https://example.com/docs
auth:
  mode: oauth1
  request_token_url: ${api.url}/1/OAuthGetRequestToken
  authorization_url: ${api.url}/1/OAuthAuthorizeToken
  access_token_url: ${api.url}/1/OAuthGetAccessToken
  authorization_params: { name: Terapi, scope: "read,write", expiration: never }
api: { base_url: "${api.url}/1" }
`;
      t = await startTerapi({ providersDirs: [providersDir({ trello })] });
      await t.call('POST', '/integration', { provider_config_key: 'trello', provider: 'trello', oauth_client_id: consumer.consumerKey, oauth_client_secret: consumer.consumerSecret });
    });
    after(async () => {
      await t?.close();
      await api?.close();
    });

    test('request token, authorisation, access token; then every call signed with the token', async () => {
      const s = await t.call('POST', '/connect/sessions', { connection_id: 'u1', allowed_integrations: ['trello'] });
      const start = await fetch(`${t.url}/oauth/connect/trello?connect_session_token=${s.body.token}`, { redirect: 'manual' });
      assert.equal(start.status, 302, await start.clone().text());
      const authorize = new URL(start.headers.get('location')!);
      assert.equal(authorize.searchParams.get('oauth_token'), 'req-tok');
      assert.equal(authorize.searchParams.get('scope'), 'read,write');
      const cookie = (start.headers.get('set-cookie') ?? '').split(';')[0];
      const back = await fetch(authorize, { redirect: 'manual' });
      const page = await fetch(back.headers.get('location')!, { headers: { cookie } });
      const html = await page.text();
      assert.equal(page.status, 200, html);
      let r = await t.call('GET', '/auth/token/trello/u1');
      assert.deepEqual(r.body, { type: 'OAuth1', access_token: 'acc-tok', raw: { oauth_token: 'acc-tok', oauth_token_secret: 'acc-secret' } });
      r = await t.call('GET', '/proxy/members/me/boards?fields=name,url&filter=open', undefined, { 'provider-config-key': 'trello', 'connection-id': 'u1' });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body[0].name, 'Trello Platform Changes');
      assert.ok(!JSON.stringify(api.requests.at(-1)!.headers).includes('acc-secret'), 'the token secret signs, it is never sent');
    });

    test('a callback with another request token stores nothing', async () => {
      const s = await t.call('POST', '/connect/sessions', { connection_id: 'u2', allowed_integrations: ['trello'] });
      const start = await fetch(`${t.url}/oauth/connect/trello?connect_session_token=${s.body.token}`, { redirect: 'manual' });
      const cookie = (start.headers.get('set-cookie') ?? '').split(';')[0];
      const forged = new URL(callback);
      forged.searchParams.set('oauth_token', 'other-tok');
      forged.searchParams.set('oauth_verifier', 'verifier-1');
      const page = await fetch(forged, { headers: { cookie } });
      assert.equal(page.status, 400);
      assert.match(await page.text(), /invalid_callback/);
      assert.equal((await t.call('GET', '/connection/u2?provider_config_key=trello')).status, 404);
    });
  });
});
