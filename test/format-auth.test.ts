/**
 * The auth half of the provider format's second edition (issue 12), each feature declared in a
 * provider file and run against a real HTTP server on 127.0.0.1 standing in for the provider's
 * token endpoint and API: what the provider receives, and what the app sees.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fakeApi, providersDir, startTerapi, type Running } from './support.ts';
import { loadCatalog } from '../core/format/provider-loader.ts';
import { formatError } from '../core/format/yaml-source.ts';

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
      assert.match(r.body.message, /"client_id", "client_secret"/);
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
