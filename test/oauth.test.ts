/**
 * The auth engine against a real OAuth 2 server (oauth2-mock-server) on 127.0.0.1, declared as a
 * provider in a TERAPI_PROVIDERS_DIR folder: the connect flow, refresh, and their failures.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { loadConfig } from '../core/config.ts';
import { OAuth2Server } from 'oauth2-mock-server';
import { freshDatabase, pgSkip, providersDir, spawnTerapi, startTerapi, type Running, type ServerProcess } from './support.ts';

interface Mock {
  server: OAuth2Server;
  url: string;
  grants: string[];
  revoked: string[];
  /** The tokens revocation requests named. */
  revokedTokens: string[];
  refreshTokensSeen: string[];
  /** Refresh tokens the server handed out, in order. */
  refreshTokensIssued: string[];
}

async function startMock(): Promise<Mock> {
  const server = new OAuth2Server();
  await server.issuer.keys.generate('RS256');
  await server.start(0, '127.0.0.1');
  const mock: Mock = { server, url: server.issuer.url!.replace(/\/$/, ''), grants: [], revoked: [], revokedTokens: [], refreshTokensSeen: [], refreshTokensIssued: [] };
  server.service.on('beforeResponse', (res: any, req: any) => {
    // The mock's JWTs are equal within one second; a provider's tokens never are.
    if (res.body.access_token) res.body.access_token = `at-${randomUUID()}`;
    if (res.body.refresh_token) mock.refreshTokensIssued.push(res.body.refresh_token);
    mock.grants.push(req.body.grant_type);
    if (req.body.grant_type === 'refresh_token') mock.refreshTokensSeen.push(req.body.refresh_token);
  });
  server.service.on('beforeRevoke', (_res: unknown, req: any) => {
    mock.revoked.push(req.headers['content-type'] ?? 'revoked');
    // The mock parses no revocation body: read the form here.
    let body = '';
    req.on('data', (d: Buffer) => (body += d));
    req.on('end', () => mock.revokedTokens.push(new URLSearchParams(body).get('token')!));
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

/** Rows of the keyv table while a connect flow is open: neither its session token nor its PKCE verifier may be in them. */
function assertNothingInClear(rows: string[], sessionToken: string, challenge: string) {
  assert.ok(rows.some((r) => r.includes('"integration":"mock"')), 'the state row was read');
  assert.ok(!rows.join('\n').includes(sessionToken), 'a connect session token is stored in clear');
  const strings: string[] = [];
  const collect = (v: unknown): void => void (typeof v === 'string' ? strings.push(v) : v && typeof v === 'object' && Object.values(v).forEach(collect));
  rows.forEach((r) => collect(JSON.parse(r)));
  assert.ok(!strings.some((v) => createHash('sha256').update(v).digest('base64url') === challenge), 'the PKCE verifier is stored in clear');
}

const count = (mock: Mock, grant: string) => mock.grants.filter((g) => g === grant).length;

describe('OAuth 2 connect flow and token refresh (embedded store)', () => {
  let mock: Mock;
  let t: Running;

  before(async () => {
    mock = await startMock();
    t = await startTerapi({ providersDirs: [providersDir({ mock: mockProvider(mock), mockcc: clientCredentialsProvider(mock), mockiss: mockProvider(mock).replace('  mode: oauth2\n', `  mode: oauth2\n  issuer: ${mock.url}\n`) })] });
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

  /**
   * The browser's part: our redirect (which sets the cookie binding the flow to this browser), the
   * provider's redirect back, the callback page, sent with the cookie unless `cookie` is false (a
   * victim's browser opening someone else's authorization URL).
   */
  async function browse(token: string, options: { integration?: string; cookie?: boolean } = {}) {
    const start = await fetch(`${t.url}/oauth/connect/${options.integration ?? 'mock'}?connect_session_token=${token}`, { redirect: 'manual' });
    assert.equal(start.status, 302, await start.clone().text());
    const setCookie = start.headers.get('set-cookie') ?? '';
    const authorize = new URL(start.headers.get('location')!);
    const back = await fetch(authorize, { redirect: 'manual' });
    const callback = back.headers.get('location')!;
    const page = await fetch(callback, { headers: options.cookie === false ? {} : { cookie: setCookie.split(';')[0] } });
    return { authorize, callback, setCookie, cookie: setCookie.split(';')[0], status: page.status, html: await page.text(), headers: page.headers };
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
    const rotated = mock.refreshTokensIssued.at(-1)!;
    assert.ok(!r.text.includes(rotated), 'the refresh token is never handed to the app');
    assert.equal(r.body.raw.refresh_token, undefined);

    r = await t.call('GET', '/auth/token/mock/exp');
    assert.equal(count(mock, 'refresh_token'), before + 1, 'a valid token is not refreshed');
    const first = r.body.access_token;
    r = await t.call('GET', '/auth/token/mock/exp?force_refresh=true');
    assert.equal(count(mock, 'refresh_token'), before + 2);
    assert.notEqual(r.body.access_token, first);
    assert.equal(mock.refreshTokensSeen.at(-1), rotated, 'the rotated refresh token was used');

    // A provider that sends no new refresh token: the old one stays.
    const kept = mock.refreshTokensIssued.at(-1)!;
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
    const all = await Promise.all(Array.from({ length: 50 }, () => t.call('GET', '/auth/token/mock/many')));
    // This connection's refresh token only: a late retry of an earlier test's refresh is not this one's.
    assert.deepEqual(mock.refreshTokensSeen.filter((rt) => rt === 'rt-many'), ['rt-many']);
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
    assert.equal((await browse(token)).status, 200);
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

  test('the flow is bound to the browser that started it: a callback without its cookie stores nothing (login CSRF)', async () => {
    const victim = await browse(await session('csrf-victim'), { cookie: false });
    assert.equal(victim.status, 400);
    assert.match(victim.html, /"error":"wrong_browser"/);
    assert.equal((await t.call('GET', '/connection/csrf-victim?provider_config_key=mock')).status, 404, 'the attacker\'s account was stored');
    assert.match(victim.setCookie, /HttpOnly/i);
    assert.match(victim.setCookie, /SameSite=Lax/i);
    assert.match(victim.setCookie, /Path=\/oauth\/callback(;|$)/);
    assert.doesNotMatch(victim.setCookie, /Secure/i, 'not Secure while the public URL is http');
    // Another browser's cookie does not do either.
    const other = await browse(await session('csrf-other'));
    const { authorize } = await browse(await session('csrf-victim-2'), { cookie: false });
    const back = await fetch(authorize, { redirect: 'manual' });
    const page = await fetch(back.headers.get('location')!, { headers: { cookie: other.cookie } });
    assert.equal(page.status, 400);
    // Behind an https public URL the cookie is Secure, and scoped to the public URL's path.
    const publicUrl = t.engine.config.publicUrl;
    t.engine.config.publicUrl = 'https://terapi.example.com/base';
    try {
      const start = await fetch(`${t.url}/oauth/connect/mock?connect_session_token=${await session('csrf-https')}`, { redirect: 'manual' });
      assert.match(start.headers.get('set-cookie')!, /; Secure/i);
      assert.match(start.headers.get('set-cookie')!, /Path=\/base\/oauth\/callback/);
    } finally {
      t.engine.config.publicUrl = publicUrl;
    }
  });

  test('the callback page posts only to the allowed origins, under a CSP, X-Frame-Options and nosniff', async () => {
    const { html, headers } = await browse(await session('origins-1'));
    assert.doesNotMatch(html, /['"]\*['"]/, 'posted to any origin');
    assert.ok(html.includes(JSON.stringify([new URL(t.url).origin])), 'by default, the public URL\'s origin only');
    const script = /<script>([\s\S]*?)<\/script>/.exec(html)![1];
    const csp = headers.get('content-security-policy')!;
    assert.ok(csp.includes(`'sha256-${createHash('sha256').update(script).digest('base64')}'`), `the page's own script is allowed by its hash: ${csp}`);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(headers.get('x-frame-options'), 'DENY');
    assert.equal(headers.get('x-content-type-options'), 'nosniff');
    const allowed = t.engine.config.allowedOrigins;
    t.engine.config.allowedOrigins = ['https://app.example.com', 'https://admin.example.com:8443'];
    try {
      const page = await browse(await session('origins-2'));
      assert.ok(page.html.includes(JSON.stringify(['https://app.example.com', 'https://admin.example.com:8443'])));
    } finally {
      t.engine.config.allowedOrigins = allowed;
    }
    assert.deepEqual(loadConfig({ embeddedKeys: false }, { TERAPI_ALLOWED_ORIGINS: 'https://app.example.com, http://localhost:5173' }).config.allowedOrigins, ['https://app.example.com', 'http://localhost:5173']);
    assert.throws(() => loadConfig({ embeddedKeys: false }, { TERAPI_ALLOWED_ORIGINS: 'https://app.example.com/path' }), /TERAPI_ALLOWED_ORIGINS/);
  });

  test('the database holds no connect session token and no PKCE verifier in clear; its files are 0600', async () => {
    const token = await session('at-rest');
    const start = await fetch(`${t.url}/oauth/connect/mock?connect_session_token=${token}`, { redirect: 'manual' });
    const challenge = new URL(start.headers.get('location')!).searchParams.get('code_challenge');
    const file = join(t.engine.config.dataDir, 'terapi.sqlite');
    const sqlite3 = (await import('sqlite3')).default;
    const db = new sqlite3.Database(file);
    const rows: string[] = await new Promise((res, rej) => db.all('SELECT value FROM keyv', (e, r: { value: string }[]) => (e ? rej(e) : res(r.map((x) => x.value)))));
    db.close();
    assertNothingInClear(rows, token, challenge!);
    for (const f of [file, `${file}-wal`, `${file}-shm`]) assert.equal(statSync(f).mode & 0o777, 0o600, `${f} is readable by others`);
  });

  test('reconnecting revokes the grant it replaces', async () => {
    assert.equal((await browse(await session('reconnect'))).status, 200);
    const first = (await t.call('GET', '/auth/token/mock/reconnect')).body.access_token;
    assert.equal((await browse(await session('reconnect'))).status, 200);
    const second = (await t.call('GET', '/auth/token/mock/reconnect')).body.access_token;
    assert.notEqual(second, first);
    for (let i = 0; i < 50 && !mock.revokedTokens.includes(first); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(mock.revokedTokens.includes(first), 'the replaced grant is still alive at the provider');
    assert.ok(!mock.revokedTokens.includes(second));
  });

  test('an issuer declared in the provider file must come back as the callback\'s iss (RFC 9207)', async () => {
    assert.equal((await t.call('POST', '/integration', { provider_config_key: 'iss', provider: 'mockiss', oauth_client_id: 'client-1', oauth_client_secret: 'secret-1' })).status, 200);
    const withIss = (iss?: string) => mock.server.service.once('beforeAuthorizeRedirect', (redirect: { url: URL }) => iss && redirect.url.searchParams.set('iss', iss));
    const tryConnect = async (id: string) => browse((await t.call('POST', '/connect/sessions', { connection_id: id, allowed_integrations: ['iss'] })).body.token, { integration: 'iss' });
    withIss();
    let page = await tryConnect('iss-missing');
    assert.equal(page.status, 400);
    assert.match(page.html, /"error":"issuer_mismatch"/);
    withIss('https://evil.example');
    page = await tryConnect('iss-wrong');
    assert.equal(page.status, 400);
    assert.match(page.html, /"error":"issuer_mismatch"/);
    withIss(mock.url);
    page = await tryConnect('iss-right');
    assert.equal(page.status, 200, page.html);
    for (const id of ['iss-missing', 'iss-wrong']) assert.equal((await t.call('GET', `/connection/${id}?provider_config_key=iss`)).status, 404);
  });

  test('secrets a provider echoes in a refresh error are scrubbed from the answer and the logs', async () => {
    await t.call('POST', '/connection', { connection_id: 'echo', provider_config_key: 'mock', credentials: { type: 'oauth2', access_token: 'at-echo-secret-1', refresh_token: 'rt-echo-secret-1', expires_at: new Date(Date.now() - 1000).toISOString() } });
    const basic = Buffer.from('client-1:secret-1').toString('base64');
    mock.server.service.once('beforeResponse', (res: any) => {
      res.statusCode = 400;
      res.body = { error: 'invalid_request', error_description: `refresh_token=rt-echo-secret-1 ${encodeURIComponent('rt-echo-secret-1')} client_secret=secret-1 Basic ${basic} ${Buffer.from('rt-echo-secret-1').toString('base64')}` };
    });
    const logged = t.logs.length;
    const r = await t.call('GET', '/auth/token/mock/echo');
    assert.equal(r.status, 502, r.text);
    assert.match(r.text, /\[redacted\]/);
    const seen = r.text + t.logs.slice(logged).join('');
    for (const secret of ['rt-echo-secret-1', 'secret-1', basic, Buffer.from('rt-echo-secret-1').toString('base64')]) assert.ok(!seen.includes(secret), `${secret} was shown`);
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
  const servers: ServerProcess[] = [];

  before(async () => {
    mock = await startMock();
    db = await freshDatabase();
    const env = { TERAPI_DATABASE_URL: db.url, TERAPI_SECRET_KEY: 'sk_two_processes', TERAPI_PROVIDERS_DIR: providersDir({ mock: mockProvider(mock) }) };
    // As `npm start` runs it: node --import tsx server/main.ts.
    servers.push(await spawnTerapi(env), await spawnTerapi(env));
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    await mock?.server.stop();
    await db?.drop();
  });

  test('200 concurrent token requests for an expired connection: one refresh, 200 new tokens', async () => {
    let r = await servers[0].call('POST', '/integration', { provider_config_key: 'mock', provider: 'mock', oauth_client_id: 'c', oauth_client_secret: 's' });
    assert.equal(r.status, 200);
    r = await servers[1].call('POST', '/connection', { connection_id: 'shared', provider_config_key: 'mock', credentials: { type: 'oauth2', access_token: 'expired', refresh_token: 'rt', expires_at: new Date(Date.now() - 1000).toISOString() } });
    assert.equal(r.status, 200);
    const before = count(mock, 'refresh_token');
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => servers[i % 2].call('GET', '/auth/token/mock/shared')));
    assert.deepEqual(answers.filter((a) => a.status !== 200).map((a) => a.body), []);
    assert.equal(count(mock, 'refresh_token') - before, 1, 'exactly one refresh reached the OAuth server');
    const tokens = new Set(answers.map((a) => a.body.access_token));
    assert.equal(tokens.size, 1);
    assert.ok(!tokens.has('expired'));
  });

  test('on PostgreSQL too, the database holds no connect session token and no PKCE verifier in clear', async () => {
    const token = (await servers[0].call('POST', '/connect/sessions', { connection_id: 'at-rest', allowed_integrations: ['mock'] })).body.token;
    const start = await fetch(`${servers[1].url}/oauth/connect/mock?connect_session_token=${token}`, { redirect: 'manual' });
    const challenge = new URL(start.headers.get('location')!).searchParams.get('code_challenge');
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    const rows: string[] = (await c.query('SELECT value FROM keyv')).rows.map((r) => r.value);
    await c.end();
    assertNothingInClear(rows, token, challenge!);
  });
});
