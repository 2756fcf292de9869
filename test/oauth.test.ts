/**
 * The auth engine against a real OAuth 2 server (oauth2-mock-server) on 127.0.0.1, declared as a
 * provider in a TERAPI_PROVIDERS_DIR folder: the connect flow, refresh, and their failures.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { OAuth2Server } from 'oauth2-mock-server';
import { freshDatabase, pgSkip, providersDir, startTerapi, TEST_ENCRYPTION_KEY, type Running } from './support.ts';

interface Mock {
  server: OAuth2Server;
  url: string;
  grants: string[];
  revoked: string[];
  refreshTokensSeen: string[];
}

async function startMock(): Promise<Mock> {
  const server = new OAuth2Server();
  await server.issuer.keys.generate('RS256');
  await server.start(0, '127.0.0.1');
  const mock: Mock = { server, url: server.issuer.url!.replace(/\/$/, ''), grants: [], revoked: [], refreshTokensSeen: [] };
  server.service.on('beforeResponse', (res: any, req: any) => {
    // The mock's JWTs are equal within one second; a provider's tokens never are.
    if (res.body.access_token) res.body.access_token = `at-${randomUUID()}`;
    mock.grants.push(req.body.grant_type);
    if (req.body.grant_type === 'refresh_token') mock.refreshTokensSeen.push(req.body.refresh_token);
  });
  server.service.on('beforeRevoke', (_res: unknown, req: any) => {
    mock.revoked.push(req.headers['content-type'] ?? 'revoked');
  });
  return mock;
}

const mockProvider = (mock: Mock) => `
display_name: Mock OAuth
categories: [testing]
docs: https://example.com/docs
auth:
  mode: oauth2
  authorization_url: ${mock.url}/authorize
  token_url: ${mock.url}/token
  scopes: [read, write]
  pkce: true
  refresh_buffer_seconds: 60
  revocation: { url: "${mock.url}/revoke" }
  token_response:
    metadata:
      token_type: token_type
api: { base_url: "${mock.url}" }
`;

const clientCredentialsProvider = (mock: Mock) => `
display_name: Mock client credentials
categories: [testing]
docs: https://example.com/docs
auth:
  mode: oauth2_client_credentials
  token_url: ${mock.url}/token
  scopes: [machine]
  refresh_buffer_seconds: 60
api: { base_url: "${mock.url}" }
`;

const count = (mock: Mock, grant: string) => mock.grants.filter((g) => g === grant).length;

describe('OAuth 2 connect flow and token refresh (embedded store)', () => {
  let mock: Mock;
  let t: Running;

  before(async () => {
    mock = await startMock();
    t = await startTerapi({ providersDirs: [providersDir({ mock: mockProvider(mock), mockcc: clientCredentialsProvider(mock) })] });
    const r = await t.call('POST', '/integration', { provider_config_key: 'mock', provider: 'mock', oauth_client_id: 'client-1', oauth_client_secret: 'secret-1' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  });
  after(async () => {
    await t?.close();
    await mock?.server.stop();
  });

  async function session(connectionId: string) {
    const r = await t.call('POST', '/connect/sessions', { connection_id: connectionId, allowed_integrations: ['mock'], metadata: { from: 'test' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.token as string;
  }

  /** The browser's part: our redirect, the provider's redirect back, the callback page. */
  async function browse(token: string) {
    const start = await fetch(`${t.url}/oauth/connect/mock?connect_session_token=${token}`, { redirect: 'manual' });
    assert.equal(start.status, 302);
    const authorize = new URL(start.headers.get('location')!);
    const back = await fetch(authorize, { redirect: 'manual' });
    const callback = back.headers.get('location')!;
    const page = await fetch(callback);
    return { authorize, callback, status: page.status, html: await page.text() };
  }

  test('connect: redirect with client id, scopes, state and PKCE; callback stores the connection', async () => {
    const { authorize, status, html } = await browse(await session('user-1'));
    assert.equal(authorize.origin + authorize.pathname, `${mock.url}/authorize`);
    assert.equal(authorize.searchParams.get('client_id'), 'client-1');
    assert.equal(authorize.searchParams.get('scope'), 'read write');
    assert.equal(authorize.searchParams.get('code_challenge_method'), 'S256');
    assert.match(authorize.searchParams.get('code_challenge')!, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(authorize.searchParams.get('redirect_uri'), `${t.url}/oauth/callback`);
    assert.ok(authorize.searchParams.get('state')!.length >= 32);
    assert.equal(status, 200);
    assert.match(html, /Connected/);
    assert.match(html, /"type":"terapi:connect","ok":true,"provider_config_key":"mock","connection_id":"user-1"/);
    const c = await t.call('GET', '/connection/user-1?provider_config_key=mock');
    assert.equal(c.status, 200);
    assert.equal(c.body.credentials.type, 'oauth2');
    assert.ok(c.body.credentials.expires_at);
    assert.deepEqual(c.body.metadata, { from: 'test', token_type: 'Bearer' });
    const token = await t.call('GET', '/auth/token/mock/user-1');
    assert.equal(token.body.type, 'Bearer');
    assert.equal(token.body.raw.token_type, 'Bearer');
    assert.equal(count(mock, 'authorization_code'), 1);
  });

  test('a replayed or forged state ends on an error page and stores nothing', async () => {
    const { callback } = await browse(await session('user-2'));
    const replay = await fetch(callback);
    assert.equal(replay.status, 400);
    assert.match(await replay.text(), /unknown, was already used, or has expired/);
    const forged = await fetch(`${t.url}/oauth/callback?code=abc&state=forged`);
    assert.equal(forged.status, 400);
    assert.match(await forged.text(), /"error":"invalid_state"/);
    assert.ok(t.logs.some((l) => l.includes('invalid_state')), 'the failure is logged');
  });

  test('access_denied from the provider ends on an error page and stores nothing', async () => {
    const deny = (redirect: { url: URL }) => {
      redirect.url.searchParams.delete('code');
      redirect.url.searchParams.set('error', 'access_denied');
    };
    mock.server.service.once('beforeAuthorizeRedirect', deny);
    const { status, html } = await browse(await session('user-3'));
    assert.equal(status, 400);
    assert.match(html, /"error":"access_denied"/);
    assert.equal((await t.call('GET', '/connection/user-3?provider_config_key=mock')).status, 404);
  });

  test('a failed code exchange ends on an error page and stores nothing', async () => {
    mock.server.service.once('beforeResponse', (res: any) => {
      res.statusCode = 400;
      res.body = { error: 'invalid_grant', error_description: 'code expired' };
    });
    const { status, html } = await browse(await session('user-4'));
    assert.equal(status, 400);
    assert.match(html, /token_exchange_failed/);
    assert.match(html, /code expired/);
    assert.equal((await t.call('GET', '/connection/user-4?provider_config_key=mock')).status, 404);
  });

  test('an expired token is refreshed; force_refresh refreshes a valid one; rotated refresh tokens replace the old', async () => {
    let r = await t.call('POST', '/connection', { connection_id: 'exp', provider_config_key: 'mock', credentials: { type: 'oauth2', access_token: 'old-token', refresh_token: 'rt-0', expires_at: new Date(Date.now() - 1000).toISOString() } });
    assert.equal(r.status, 200);
    const before = count(mock, 'refresh_token');
    r = await t.call('GET', '/auth/token/mock/exp', undefined, { 'x-request-id': 'refresh-exp-1' });
    assert.equal(r.status, 200);
    assert.notEqual(r.body.access_token, 'old-token');
    // core's line for the refresh carries the id of the request that caused it
    assert.ok(t.logs.map((l) => JSON.parse(l)).some((l) => l.msg === 'token refreshed' && l.connection === 'exp' && l.request_id === 'refresh-exp-1'), 'the refresh line has the request id');
    assert.ok(Date.parse(r.body.expires_at) > Date.now() + 60_000);
    assert.equal(count(mock, 'refresh_token'), before + 1);
    assert.equal(mock.refreshTokensSeen.at(-1), 'rt-0');
    const rotated = r.body.raw.refresh_token;

    r = await t.call('GET', '/auth/token/mock/exp');
    assert.equal(count(mock, 'refresh_token'), before + 1, 'a valid token is not refreshed');
    const first = r.body.access_token;
    r = await t.call('GET', '/auth/token/mock/exp?force_refresh=true');
    assert.equal(count(mock, 'refresh_token'), before + 2);
    assert.notEqual(r.body.access_token, first);
    assert.equal(mock.refreshTokensSeen.at(-1), rotated, 'the rotated refresh token was used');

    // A provider that sends no new refresh token: the old one stays.
    const kept = r.body.raw.refresh_token;
    mock.server.service.once('beforeResponse', (res: any) => delete res.body.refresh_token);
    await t.call('GET', '/auth/token/mock/exp?force_refresh=true');
    await t.call('GET', '/auth/token/mock/exp?force_refresh=true');
    assert.equal(mock.refreshTokensSeen.at(-1), kept);
  });

  test('a failed refresh is a 502, logged with the error\'s message and stack and the request id', async () => {
    await t.call('POST', '/connection', { connection_id: 'flaky', provider_config_key: 'mock', credentials: { type: 'oauth2', access_token: 'old', refresh_token: 'rt-flaky', expires_at: new Date(Date.now() - 1000).toISOString() } });
    mock.server.service.once('beforeResponse', (res: any) => {
      res.statusCode = 401;
      res.body = { error: 'invalid_client' };
    });
    const r = await t.call('GET', '/auth/token/mock/flaky', undefined, { 'x-request-id': 'refresh-flaky' });
    assert.equal(r.status, 502);
    assert.equal(r.body.request_id, 'refresh-flaky');
    const line = t.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'token refresh failed' && l.connection === 'flaky');
    assert.ok(line, 'the failure is logged');
    assert.equal(line.request_id, 'refresh-flaky');
    assert.equal(typeof line.err.message, 'string');
    assert.match(line.err.stack, /\n\s+at /);
    assert.deepEqual(Object.keys(line.err).filter((k) => !['type', 'message', 'stack', 'code'].includes(k)), [], 'nothing but what and where: an HTTP error holds the request it sent');
  });

  test('concurrent requests for one expired connection cause one refresh', async () => {
    await t.call('POST', '/connection', { connection_id: 'many', provider_config_key: 'mock', credentials: { type: 'oauth2', access_token: 'old', refresh_token: 'rt-many', expires_at: new Date(Date.now() - 1000).toISOString() } });
    const before = count(mock, 'refresh_token');
    const all = await Promise.all(Array.from({ length: 50 }, () => t.call('GET', '/auth/token/mock/many')));
    assert.equal(count(mock, 'refresh_token'), before + 1);
    assert.equal(new Set(all.map((r) => r.body.access_token)).size, 1);
  });

  test('invalid_grant marks the connection for re-authorisation, answers 424, and stops calling the provider', async () => {
    await t.call('POST', '/connection', { connection_id: 'revoked', provider_config_key: 'mock', credentials: { type: 'oauth2', access_token: 'old', refresh_token: 'rt-revoked', expires_at: new Date(Date.now() - 1000).toISOString() } });
    mock.server.service.once('beforeResponse', (res: any) => {
      res.statusCode = 400;
      res.body = { error: 'invalid_grant' };
    });
    const before = count(mock, 'refresh_token');
    let r = await t.call('GET', '/auth/token/mock/revoked');
    assert.equal(r.status, 424);
    assert.equal(r.body.error, 'connection_needs_reauth');
    r = await t.call('GET', '/connection/revoked?provider_config_key=mock');
    assert.equal(r.body.needs_reauth, true);
    r = await t.call('GET', '/auth/token/mock/revoked?force_refresh=true');
    assert.equal(r.status, 424);
    assert.equal(count(mock, 'refresh_token'), before + 1, 'the provider was not called again');
    // Reconnecting through the flow clears it.
    const token = (await t.call('POST', '/connect/sessions', { connection_id: 'revoked', allowed_integrations: ['mock'] })).body.token;
    const start = await fetch(`${t.url}/oauth/connect/mock?connect_session_token=${token}`, { redirect: 'manual' });
    const back = await fetch(start.headers.get('location')!, { redirect: 'manual' });
    assert.equal((await fetch(back.headers.get('location')!)).status, 200);
    r = await t.call('GET', '/auth/token/mock/revoked');
    assert.equal(r.status, 200);
  });

  test('deleting a connection revokes its grant at the provider', async () => {
    const before = mock.revoked.length;
    const r = await t.call('DELETE', '/connection/user-1?provider_config_key=mock');
    assert.equal(r.status, 204);
    assert.equal(mock.revoked.length, before + 1);
    assert.ok(t.logs.some((l) => l.includes('grant revoked')));
  });

  test('client credentials: the token is fetched on first use, reused, and fetched again when it expires', async () => {
    let r = await t.call('POST', '/integration', { provider_config_key: 'cc', provider: 'mockcc', oauth_client_id: 'machine-1', oauth_client_secret: 's' });
    assert.equal(r.status, 200);
    r = await t.call('POST', '/connection', { connection_id: 'svc', provider_config_key: 'cc', credentials: { type: 'oauth2', access_token: 'x' } });
    assert.equal(r.status, 400, 'a client-credentials connection takes no credentials');
    const before = count(mock, 'client_credentials');
    r = await t.call('POST', '/connection', { connection_id: 'svc', provider_config_key: 'cc' });
    assert.equal(r.status, 200);
    assert.equal(count(mock, 'client_credentials'), before, 'nothing fetched before first use');
    r = await t.call('GET', '/auth/token/cc/svc');
    assert.equal(r.status, 200);
    assert.equal(r.body.type, 'Bearer');
    assert.equal(count(mock, 'client_credentials'), before + 1);
    const first = r.body.access_token;
    r = await t.call('GET', '/auth/token/cc/svc');
    assert.equal(r.body.access_token, first);
    assert.equal(count(mock, 'client_credentials'), before + 1);
    // A token that lives less than the provider's buffer counts as expired at once.
    mock.server.service.once('beforeResponse', (res: any) => (res.body.expires_in = 30));
    r = await t.call('GET', '/auth/token/cc/svc?force_refresh=true');
    const short = r.body.access_token;
    r = await t.call('GET', '/auth/token/cc/svc');
    assert.equal(count(mock, 'client_credentials'), before + 3);
    assert.notEqual(r.body.access_token, short);
  });

  test('connection_config from the session goes into the authorization URL (Zendesk subdomain)', async () => {
    await t.call('POST', '/integration', { provider_config_key: 'zd', provider: 'zendesk', oauth_client_id: 'zid', oauth_client_secret: 'zs' });
    let r = await t.call('POST', '/connect/sessions', { connection_id: 'z1', allowed_integrations: ['zd'], connection_config: { zd: { subdomain: 'evil.com/x' } } });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_connection_config');
    r = await t.call('POST', '/connect/sessions', { connection_id: 'z1', allowed_integrations: ['zd'], connection_config: { zd: { subdomain: 'acme' } } });
    const start = await fetch(`${t.url}/oauth/connect/zd?connect_session_token=${r.body.token}`, { redirect: 'manual' });
    assert.equal(start.status, 302);
    const location = new URL(start.headers.get('location')!);
    assert.equal(location.host, 'acme.zendesk.com');
    assert.equal(location.searchParams.get('client_id'), 'zid');
  });

  test('connect sessions: unknown token 401, integration not allowed 403', async () => {
    let r = await fetch(`${t.url}/oauth/connect/mock?connect_session_token=nope`, { redirect: 'manual' });
    assert.equal(r.status, 401);
    await t.call('POST', '/integration', { provider_config_key: 'gh', provider: 'github', oauth_client_id: 'a', oauth_client_secret: 'b' });
    const token = await session('user-9');
    r = await fetch(`${t.url}/oauth/connect/gh?connect_session_token=${token}`, { redirect: 'manual' });
    assert.equal(r.status, 403);
    assert.equal((await r.json()).error, 'integration_not_allowed');
  });
});

describe('single-flight refresh across two server processes on one PostgreSQL', { skip: pgSkip }, () => {
  let mock: Mock;
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  const servers: ChildProcess[] = [];

  before(async () => {
    mock = await startMock();
    db = await freshDatabase();
  });
  after(async () => {
    for (const s of servers) s.kill('SIGTERM');
    await Promise.all(servers.map((s) => new Promise((r) => (s.exitCode !== null ? r(null) : s.once('exit', r)))));
    await mock?.server.stop();
    await db?.drop();
  });

  test('200 concurrent token requests for an expired connection: one refresh, 200 new tokens', async () => {
    const dir = providersDir({ mock: mockProvider(mock) });
    const secret = 'sk_two_processes';
    const ports = [34000 + Math.floor(Math.random() * 1000), 35000 + Math.floor(Math.random() * 1000)];
    for (const port of ports) {
      // As `npm start` runs it: node --import tsx server/main.ts.
      const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts'], {
        cwd: new URL('..', import.meta.url).pathname,
        env: { ...process.env, PORT: String(port), TERAPI_DATABASE_URL: db.url, TERAPI_SECRET_KEY: secret, TERAPI_ENCRYPTION_KEY: TEST_ENCRYPTION_KEY, TERAPI_PROVIDERS_DIR: dir, TERAPI_DATA_DIR: providersDir({}), TERAPI_LOG_LEVEL: 'warn' },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      servers.push(child);
    }
    const call = (port: number, method: string, path: string, body?: unknown) =>
      fetch(`http://127.0.0.1:${port}${path}`, { method, headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    for (const port of ports) {
      for (let i = 0; ; i++) {
        const ok = await fetch(`http://127.0.0.1:${port}/health`).then((r) => r.ok, () => false);
        if (ok) break;
        assert.ok(i < 100, `server on ${port} did not start`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    let r = await call(ports[0], 'POST', '/integration', { provider_config_key: 'mock', provider: 'mock', oauth_client_id: 'c', oauth_client_secret: 's' });
    assert.equal(r.status, 200);
    r = await call(ports[1], 'POST', '/connection', { connection_id: 'shared', provider_config_key: 'mock', credentials: { type: 'oauth2', access_token: 'expired', refresh_token: 'rt', expires_at: new Date(Date.now() - 1000).toISOString() } });
    assert.equal(r.status, 200);
    const before = count(mock, 'refresh_token');
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => call(ports[i % 2], 'GET', '/auth/token/mock/shared').then(async (res) => ({ status: res.status, body: await res.json() }))));
    assert.deepEqual(answers.filter((a) => a.status !== 200), []);
    assert.equal(count(mock, 'refresh_token') - before, 1, 'exactly one refresh reached the OAuth server');
    const tokens = new Set(answers.map((a) => a.body.access_token));
    assert.equal(tokens.size, 1);
    assert.ok(!tokens.has('expired'));
  });
});
