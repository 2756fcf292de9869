/**
 * The connect UI in a real browser (headless Chromium): an app's page, on its own origin, imports
 * connect.js from Terapi and connects an end user through the popup. OAuth against a real OAuth 2
 * server (oauth2-mock-server), an API key that the provider refuses and then accepts, a user who
 * closes the window; and the page on a phone-sized screen, by keyboard, without leaking its token.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { OAuth2Server } from 'oauth2-mock-server';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { fakeApi, json, providersDir, startTerapi, type Running } from './support.ts';
import { fitsWidth, launchChromium, screenshot, watchConsole } from './browser.ts';

/** A 32-pixel logo as a data: URL (the schema allows https: and data:image URLs). */
const LOGO = `data:image/svg+xml;base64,${Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><rect width="32" height="32" rx="6" fill="#6a1b9a"/></svg>').toString('base64')}`;
const GOOD_KEY = 'sk_goodkey123';
const WRONG_KEY = 'sk_wrongkey99';

/**
 * The app: a page on its own origin whose button asks the app's backend for a connect session
 * (the backend calls Terapi with the secret key), then calls connect() from Terapi's connect.js.
 * What connect() resolved to and the events it heard are kept on the page.
 */
async function startApp(terapi: () => Running, integrations: () => string[]) {
  const page = (terapiUrl: string) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>The app</title></head>
<body><h1>The app</h1><button id="connect">Connect an account</button>
<pre id="result"></pre>
<script type="module">
import { connect } from '${terapiUrl}/connect.js';
window.events = [];
window.results = [];
document.getElementById('connect').addEventListener('click', async () => {
  const { token } = await (await fetch('/session', { method: 'POST' })).json();
  const result = await connect({ sessionToken: token, onEvent: (e) => window.events.push(e) });
  window.results.push(result);
  document.getElementById('result').textContent = JSON.stringify(result);
});
</script></body></html>`;
  const tokens: string[] = [];
  const server: Server = createServer(async (req, res) => {
    if (req.url === '/session' && req.method === 'POST') {
      const r = await terapi().call('POST', '/connect/sessions', { connection_id: `user-${randomUUID().slice(0, 8)}`, allowed_integrations: integrations() });
      tokens.push(r.body.token);
      return json(res, r.status, r.body);
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(page(terapi().url));
  });
  server.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, tokens, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

describe('the connect UI in headless Chromium', () => {
  let mock: OAuth2Server;
  let mockUrl: string;
  let provider: Awaited<ReturnType<typeof fakeApi>>;
  let t: Running;
  let app: Awaited<ReturnType<typeof startApp>>;
  let browser: Browser;
  let allowed = ['mock', 'keyed'];
  /** Every request the browser sent to Terapi or the provider, with its Referer. */
  const sent: { url: string; referer?: string }[] = [];
  const problems: string[] = [];

  before(async () => {
    mock = new OAuth2Server();
    await mock.issuer.keys.generate('RS256');
    await mock.start(0, '127.0.0.1');
    mockUrl = mock.issuer.url!.replace(/\/$/, '');
    // The API-key provider's API: a key check that answers in the provider's own words.
    provider = await fakeApi((req, res) => {
      if (req.url === '/eu-west/me') {
        return req.headers['x-api-key'] === GOOD_KEY ? json(res, 200, { id: 'acct_1' }) : json(res, 401, { error: { type: 'invalid_request_error', message: `No such API key: ${req.headers['x-api-key']}` } });
      }
      json(res, 404, {});
    });
    app = await startApp(() => t, () => allowed);
    t = await startTerapi({
      providersDirs: [providersDir({
        mock: `
display_name: Mock OAuth
categories: [testing]
docs: https://example.com/docs
auth:
  mode: oauth2
  authorization_url: ${mockUrl}/authorize
  token_url: ${mockUrl}/token
  scopes: [read]
  pkce: true
api: { base_url: "${mockUrl}" }
`,
        keyed: `
display_name: Keyed Service
logo: ${LOGO}
categories: [testing]
docs: https://example.com/docs
auth:
  mode: api_key
  label: Secret key
  pattern: "sk_[a-z0-9]{8,}"
connection_config:
  region:
    pattern: "[a-z]{2}-[a-z]+"
    description: The region of your account, under Settings.
    example: eu-west
api:
  base_url: ${provider.url}/\${region}
  credentials: { in: header, name: x-api-key, value: "\${api_key}" }
verification:
  request: { path: /me }
`,
      })],
      env: { TERAPI_ALLOWED_ORIGINS: app.url },
    });
    for (const body of [
      { provider_config_key: 'mock', provider: 'mock', oauth_client_id: 'client-1', oauth_client_secret: 'secret-1' },
      { provider_config_key: 'keyed', provider: 'keyed' },
    ]) assert.equal((await t.call('POST', '/integration', body)).status, 200);
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await t?.close();
    await app?.close();
    await provider?.close();
    await mock?.stop();
  });

  async function appPage(): Promise<{ context: BrowserContext; page: Page }> {
    const context = await browser.newContext();
    context.on('request', (r) => sent.push({ url: r.url(), referer: r.headers()['referer'] }));
    context.on('page', (p) => problems.push(...watchConsole(p)));
    const page = await context.newPage();
    problems.push(...watchConsole(page));
    await page.goto(app.url);
    return { context, page };
  }

  /** Presses the app's button and answers the popup it opens. */
  async function openConnect(context: BrowserContext, page: Page): Promise<Page> {
    const [popup] = await Promise.all([context.waitForEvent('page'), page.click('#connect')]);
    await popup.waitForLoadState();
    return popup;
  }

  const results = (page: Page) => page.evaluate(() => (window as any).results as any[]);
  const events = (page: Page) => page.evaluate(() => ((window as any).events as any[]).map((e) => e.type));

  test('OAuth in the popup: the list, the provider, the callback, and the app receives the result', async () => {
    allowed = ['mock', 'keyed'];
    const { context, page } = await appPage();
    const popup = await openConnect(context, page);
    await popup.getByRole('heading', { name: 'Connect an account' }).waitFor();
    // Both integrations, by display name; the one whose file names a logo shows it.
    assert.equal(await popup.getByRole('listitem').count(), 2);
    for (const name of ['Mock OAuth', 'Keyed Service']) assert.equal(await popup.getByRole('button', { name, exact: true }).count(), 1, name);
    const logo = popup.locator('button:has-text("Keyed Service") img');
    assert.equal(await logo.getAttribute('src'), LOGO);
    assert.ok(await logo.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth === 32), 'the logo is drawn');
    await screenshot(popup, 'connect-oauth-1-list');

    await popup.getByRole('button', { name: 'Mock OAuth' }).click();
    await popup.getByRole('heading', { name: 'Connect Mock OAuth' }).waitFor();
    await screenshot(popup, 'connect-oauth-2-integration');
    await popup.getByRole('button', { name: 'Continue to Mock OAuth' }).click();
    // The provider sends the browser straight back: the callback page says so, and tells the app.
    await popup.getByRole('heading', { name: 'Connected to Mock OAuth' }).waitFor();
    assert.doesNotMatch(popup.url(), /code=|state=/, 'the spent code and state are taken out of the address bar');
    await screenshot(popup, 'connect-oauth-3-connected');
    await page.waitForFunction(() => (window as any).results.length === 1);
    const [result] = await results(page);
    assert.equal(result.ok, true);
    assert.equal(result.provider_config_key, 'mock');
    assert.deepEqual(await events(page), ['opened', 'connected']);
    // The popup closes itself after a moment.
    await popup.waitForEvent('close', { timeout: 5000 });
    await screenshot(page, 'connect-oauth-4-app');

    const made = await t.call('GET', `/connection/${result.connection_id}?provider_config_key=mock`);
    assert.equal(made.status, 200);
    assert.equal(made.body.credentials.type, 'oauth2');
    // The provider's authorization page was told nothing of where the browser came from.
    const authorize = sent.find((s) => s.url.startsWith(`${mockUrl}/authorize`));
    assert.ok(authorize, 'the browser went to the provider');
    assert.equal(authorize.referer, undefined, 'a Referer reached the provider');
    await context.close();
  });

  test('API key, by keyboard: a pattern check before submit, the provider refuses the key in its own words, then accepts the right one', async () => {
    allowed = ['keyed'];
    const { context, page } = await appPage();
    await page.focus('#connect');
    const [popup] = await Promise.all([context.waitForEvent('page'), page.keyboard.press('Enter')]);
    // One integration: its form at once, the focus on its first field.
    await popup.getByRole('heading', { name: 'Connect Keyed Service' }).waitFor();
    assert.equal(await popup.evaluate(() => document.activeElement?.id), 'credential-api_key');
    // The provider's description of its connection_config field is shown with it.
    assert.match(await popup.locator('#config-region-hint').innerText(), /The region of your account, under Settings\. For example: eu-west/);

    // Not the provider's pattern: refused in the page, nothing sent.
    await popup.keyboard.type('not-a-key');
    await popup.keyboard.press('Tab');
    await popup.keyboard.type('eu-west');
    await popup.keyboard.press('Enter');
    await popup.getByText('This does not look like a Secret key.').waitFor();
    assert.equal(await popup.evaluate(() => document.activeElement?.id), 'credential-api_key', 'the focus goes back to the field to fix');
    assert.equal(provider.requests.length, 0, 'a key that breaks the pattern reached the provider');
    await screenshot(popup, 'connect-apikey-1-pattern');

    // A well-formed key the provider refuses: its own words, without the key.
    await popup.fill('#credential-api_key', WRONG_KEY);
    await popup.keyboard.press('Enter');
    const alert = popup.getByRole('alert').filter({ hasText: 'Not connected' });
    await alert.waitFor();
    const said = await alert.innerText();
    assert.match(said, /Keyed Service rejected these credentials \(HTTP 401\): "No such API key: \[redacted\]"\. Check them and try again/);
    assert.ok(!said.includes(WRONG_KEY), 'the key is repeated on the page');
    assert.equal(await popup.evaluate(() => document.activeElement?.getAttribute('role')), 'alert', 'the error takes the focus');
    await screenshot(popup, 'connect-apikey-2-refused');

    // The right key: connected.
    await popup.fill('#credential-api_key', GOOD_KEY);
    await popup.focus('#credential-api_key');
    await popup.keyboard.press('Enter');
    await popup.getByRole('heading', { name: 'Connected to Keyed Service' }).waitFor();
    await screenshot(popup, 'connect-apikey-3-connected');
    await page.waitForFunction(() => (window as any).results.length === 1);
    const [result] = await results(page);
    assert.equal(result.ok, true);
    assert.deepEqual(await events(page), ['opened', 'error', 'connected']);
    const made = await t.call('GET', `/connection/${result.connection_id}?provider_config_key=keyed`);
    assert.equal(made.status, 200);
    assert.deepEqual(made.body.connection_config, { region: 'eu-west' });
    assert.deepEqual(provider.requests.map((r) => r.headers['x-api-key']), [WRONG_KEY, GOOD_KEY]);
    await popup.waitForEvent('close', { timeout: 5000 });
    await context.close();
  });

  test('a user who closes the window: the promise settles with "closed"; a message from another origin is ignored', async () => {
    allowed = ['keyed'];
    const { context, page } = await appPage();
    const popup = await openConnect(context, page);
    await popup.getByRole('heading', { name: 'Connect Keyed Service' }).waitFor();
    // Any window can post to the app's page: connect() listens to Terapi's origin and its popup only.
    await page.evaluate(() => window.postMessage({ type: 'terapi:connect', ok: true, provider_config_key: 'keyed', connection_id: 'forged' }, '*'));
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await results(page), [], 'a forged message settled the promise');
    await popup.close();
    await page.waitForFunction(() => (window as any).results.length === 1);
    const [result] = await results(page);
    assert.equal(result.ok, false);
    assert.equal(result.error, 'closed');
    assert.match(result.message, /closed before an account was connected/);
    assert.deepEqual(await events(page), ['opened', 'closed']);
    await context.close();
  });

  test('connect_url on a phone-sized screen: readable, its token out of the address bar, the Referer and every URL', async () => {
    allowed = ['mock', 'keyed'];
    const session = await t.call('POST', '/connect/sessions', { connection_id: 'phone-user', allowed_integrations: ['mock', 'keyed'] });
    const { token, connect_url } = session.body;
    app.tokens.push(token);
    assert.equal(connect_url, `${t.url}/connect#connect_session_token=${token}`);
    const context = await browser.newContext({ viewport: { width: 375, height: 667 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    context.on('request', (r) => sent.push({ url: r.url(), referer: r.headers()['referer'] }));
    const page = await context.newPage();
    problems.push(...watchConsole(page));
    await page.goto(connect_url);
    await page.getByRole('heading', { name: 'Connect an account' }).waitFor();
    assert.equal(page.url(), `${t.url}/connect`, 'the token stays in the address bar');
    assert.ok(await fitsWidth(page), 'the page scrolls sideways on a phone');
    await screenshot(page, 'connect-phone-1-list');
    await page.getByRole('button', { name: 'Keyed Service' }).tap();
    await page.getByRole('heading', { name: 'Connect Keyed Service' }).waitFor();
    assert.ok(await fitsWidth(page), 'the form scrolls sideways on a phone');
    const box = (await page.locator('#credential-api_key').boundingBox())!;
    assert.ok(box.height >= 44 && box.width > 300, `the field is a comfortable target on a phone: ${JSON.stringify(box)}`);
    await screenshot(page, 'connect-phone-2-form');
    // Reloaded, the page finds its session in the tab, not in the URL.
    await page.reload();
    await page.getByRole('heading', { name: 'Connect an account' }).waitFor();
    await context.close();
  });

  test('the token is in no URL the browser requested, no Referer and no log line; no page broke its policy', () => {
    const tokens = [...app.tokens];
    assert.ok(tokens.length >= 3);
    for (const s of sent) {
      for (const token of tokens) {
        assert.ok(!s.url.includes(token), `a request URL holds the token: ${s.url}`);
        assert.ok(!(s.referer ?? '').includes(token), `a Referer holds the token: ${s.url}`);
      }
    }
    const logs = t.logs.join('\n');
    for (const token of tokens) assert.ok(!logs.includes(token), 'a log line holds the token');
    assert.deepEqual(problems, [], 'the pages reported errors (a script error, a CSP refusal)');
  });

  test('each connect attempt that reached the server is in the operations log, the refused one in words', async () => {
    const r = await t.call('GET', '/operations?type=connect');
    const seen = r.body.operations.reverse().map((op: any) => [op.provider_config_key, op.name, op.outcome, op.error ?? ''].join(' '));
    assert.deepEqual(seen, ['mock oauth success ', 'keyed credentials error invalid_credentials', 'keyed credentials success ']);
    assert.match(r.body.operations[1].message, /No such API key: \[redacted\]/);
  });
});

describe('the connect UI\'s API: what a session shows, and the server\'s own checks of what the form sends', () => {
  let t: Running;
  let desk: Awaited<ReturnType<typeof fakeApi>>;

  before(async () => {
    desk = await fakeApi((_req, res) => json(res, 200, { id: '77' }));
    t = await startTerapi({
      providersDirs: [providersDir({
        desk: `
display_name: Desk
categories: [testing]
docs: https://example.com/docs
auth: { mode: basic, username_label: Email, password_label: API token }
connection_config:
  subdomain: { pattern: "[a-z0-9-]+", description: Your Desk subdomain, example: acme }
  team: { pattern: "[0-9]+", optional: true }
  account_id: { pattern: "[0-9]+" }
post_connection:
  request: { path: /me }
  config: { account_id: id }
api: { base_url: "${desk.url}/\${subdomain}" }
`,
        open: `
display_name: Open Data
categories: [testing]
docs: https://example.com/docs
auth: { mode: none }
connection_config:
  dataset: { pattern: "[a-z]+" }
api: { base_url: "https://open.example/\${dataset}" }
`,
      })],
    });
    for (const p of ['desk', 'open']) assert.equal((await t.call('POST', '/integration', { provider_config_key: p, provider: p })).status, 200);
  });
  after(async () => {
    await t?.close();
    await desk?.close();
  });

  const session = async (preset?: Record<string, Record<string, string>>) => {
    const r = await t.call('POST', '/connect/sessions', { connection_id: 'u1', allowed_integrations: ['desk', 'open'], ...(preset ? { connection_config: preset } : {}) });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.token as string;
  };
  const as = (token: string) => ({ authorization: `Bearer ${token}` });

  test('GET /connect/session: each integration, its credentials and the fields the end user fills (not those the app set, nor those the provider fills)', async () => {
    const token = await session({ desk: { team: '42' } });
    const r = await t.call('GET', '/connect/session', undefined, as(token));
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('cache-control'), 'no-store');
    assert.equal(r.body.connection_id, 'u1');
    const [desk, open] = r.body.integrations;
    assert.deepEqual(desk, {
      provider_config_key: 'desk', provider: 'desk', display_name: 'Desk', auth_mode: 'basic',
      credentials: [{ name: 'username', label: 'Email', optional: false, secret: false }, { name: 'password', label: 'API token', optional: false, secret: true }],
      connection_config: [{ name: 'subdomain', description: 'Your Desk subdomain', pattern: '[a-z0-9-]+', example: 'acme', optional: false, secret: false, format: 'text' }],
    });
    assert.deepEqual([open.auth_mode, open.credentials, open.connection_config.map((f: any) => f.name)], ['none', [], ['dataset']]);
    // The secret key is not a session token; none at all is a 401 too.
    assert.equal((await t.call('GET', '/connect/session')).status, 401);
    assert.equal((await t.call('GET', '/connect/session', undefined, { authorization: 'Bearer cs_unknown' })).body.error, 'invalid_session');
  });

  test('the server checks what the form sends: patterns, required fields, fields the app set, credentials of the mode', async () => {
    const token = await session({ desk: { team: '42' } });
    const post = (key: string, body: unknown) => t.call('POST', `/connect/${key}/credentials`, body, as(token));
    let r = await post('desk', { username: 'me@acme.example', password: 'tok', connection_config: { subdomain: 'Not Valid!' } });
    assert.deepEqual([r.status, r.body.error], [400, 'invalid_connection_config']);
    assert.match(r.body.message, /connection_config\.subdomain must match \[a-z0-9-\]\+ \(e\.g\. acme\)/);
    r = await post('desk', { username: 'me@acme.example', password: 'tok' });
    assert.match(r.body.message, /needs connection_config\.subdomain \(Your Desk subdomain\)/);
    r = await post('desk', { username: 'me@acme.example', password: 'tok', connection_config: { subdomain: 'acme', team: '7' } });
    assert.deepEqual([r.status, r.body.error], [400, 'invalid_connection_config']);
    assert.match(r.body.message, /team is set by the app/);
    r = await post('desk', { api_key: 'k', connection_config: { subdomain: 'acme' } });
    assert.deepEqual([r.status, r.body.error], [400, 'invalid_credentials']);
    r = await post('desk', { username: 'me@acme.example', password: 'tok', connection_config: { subdomain: 'acme' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const made = await t.call('GET', '/connection/u1?provider_config_key=desk');
    assert.deepEqual(made.body.connection_config, { subdomain: 'acme', team: '42', account_id: '77' });
    assert.deepEqual(desk.requests.map((q) => q.url), ['/acme/me']);
    // A provider without credentials connects with its configuration alone.
    r = await post('open', { connection_config: { dataset: 'rivers' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal((await post('open', { api_key: 'x', connection_config: { dataset: 'rivers' } })).body.error, 'invalid_credentials');
    // An OAuth start for a provider that has no OAuth is refused in words.
    r = await t.call('POST', '/connect/desk/oauth', {}, as(token));
    assert.deepEqual([r.status, r.body.error], [400, 'not_oauth']);
  });
});

