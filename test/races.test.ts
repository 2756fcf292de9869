/**
 * Races between real server processes (PRODUCT.md, "Concurrency"): a delete is final, whatever
 * refresh or creation runs at the same moment, on one server or across two; a credential only goes
 * to the integration it was made for; a database link cut while a refresh holds its lock is a 503
 * the server recovers from, never the end of the process.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { fakeApi, freshDatabase, json, pgSkip, providersDir, spawnTerapi, tcpHop, type ServerProcess } from './support.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An OAuth server whose token answers take as long as the test says; it issues rotating tokens and records revocations. */
async function slowOAuth() {
  const state = { delayMs: 0, refuse: false, issued: 0, revoked: [] as string[], refreshes: 0 };
  const api = await fakeApi(async (req, res) => {
    const form = Object.fromEntries(new URLSearchParams(typeof req.body === 'string' ? req.body : ''));
    if (req.url === '/token') {
      state.refreshes++;
      await sleep(state.delayMs);
      if (state.refuse) return json(res, 400, { error: 'invalid_grant' });
      const n = ++state.issued;
      return json(res, 200, { access_token: `at-${n}`, refresh_token: `rt-${n}`, expires_in: 3600, token_type: 'Bearer' });
    }
    if (req.url === '/revoke') {
      state.revoked.push(form.token);
      return json(res, 200, {});
    }
    json(res, 200, { ok: true, key: req.headers['x-api-key'] ?? null });
  });
  return { api, state };
}

const oauthProvider = (url: string) => `
display_name: Slow OAuth
categories: [testing]
docs: https://example.com/docs
auth:
  mode: oauth2
  authorization_url: ${url}/authorize
  token_url: ${url}/token
  revocation: { url: "${url}/revoke", token: refresh_token }
api: { base_url: "${url}" }
`;

const keyProvider = (name: string, url: string) => `
display_name: ${name}
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
api:
  base_url: ${url}
  credentials: { in: header, name: X-Api-Key, value: "\${api_key}" }
  retry: { max_attempts: 1 }
`;

const expired = (refresh: string) => ({ type: 'oauth2', access_token: 'at-0', refresh_token: refresh, expires_at: new Date(Date.now() - 1000).toISOString() });

/** Waits until `check` holds, polling. */
async function until(check: () => boolean, what: string, ms = 10_000) {
  for (const end = Date.now() + ms; !check(); await sleep(20)) if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
}

function raceSuite(store: 'sqlite' | 'postgres') {
  describe(`delete wins over refresh and creation (${store}, real processes)`, { skip: store === 'postgres' && pgSkip }, () => {
    let oauth: Awaited<ReturnType<typeof slowOAuth>>;
    let other: Awaited<ReturnType<typeof fakeApi>>;
    let db: Awaited<ReturnType<typeof freshDatabase>> | undefined;
    /** Two servers on PostgreSQL; on the embedded store one process owns the file, so both are the same. */
    let a: ServerProcess;
    let b: ServerProcess;

    before(async () => {
      oauth = await slowOAuth();
      other = await fakeApi((req, res) => json(res, 200, { key: req.headers['x-api-key'] ?? null }));
      const dir = providersDir({ slow: oauthProvider(oauth.api.url), first: keyProvider('First', oauth.api.url), second: keyProvider('Second', other.url) });
      db = store === 'postgres' ? await freshDatabase() : undefined;
      const env = { TERAPI_PROVIDERS_DIR: dir, ...(db ? { TERAPI_DATABASE_URL: db.url } : {}) };
      a = await spawnTerapi(env);
      b = db ? await spawnTerapi({ ...env, TERAPI_SECRET_KEY: a.secret }) : a;
      const r = await a.call('POST', '/integration', { provider_config_key: 'slow', provider: 'slow', oauth_client_id: 'c', oauth_client_secret: 's' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    });
    after(async () => {
      await a?.stop();
      if (b !== a) await b?.stop();
      await oauth?.api.close();
      await other?.close();
      await db?.drop();
    });

    /** Starts a refresh on server b, deletes the connection on server a while the token endpoint works; answers the refresh's answer. */
    async function deleteDuringRefresh(id: string, refreshToken: string, refuse = false) {
      let r = await a.call('POST', '/connection', { connection_id: id, provider_config_key: 'slow', credentials: expired(refreshToken) });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      Object.assign(oauth.state, { delayMs: 1500, refuse });
      const seen = oauth.state.refreshes;
      const refresh = b.call('GET', `/auth/token/slow/${id}`);
      await until(() => oauth.state.refreshes > seen, 'the refresh to reach the token endpoint');
      r = await a.call('DELETE', `/connection/${id}?provider_config_key=slow`);
      assert.equal(r.status, 204);
      const answer = await refresh;
      Object.assign(oauth.state, { delayMs: 0, refuse: false });
      for (const server of [a, b]) {
        assert.equal((await server.call('GET', `/connection/${id}?provider_config_key=slow`)).status, 404, 'the connection came back');
        assert.deepEqual((await server.call('GET', '/connection?provider_config_key=slow')).body.connections, []);
      }
      return answer;
    }

    test('a connection deleted while its token is being refreshed stays deleted, and the new tokens are revoked', async () => {
      const answer = await deleteDuringRefresh('c1', 'rt-old');
      assert.equal(answer.status, 404, `the refresh must not hand out a deleted connection's token: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.error, 'unknown_connection');
      const issued = `rt-${oauth.state.issued}`;
      await until(() => oauth.state.revoked.includes(issued), `the discarded refresh's token ${issued} to be revoked (revoked: ${oauth.state.revoked})`);
      assert.ok(oauth.state.revoked.includes('rt-old'), 'the deleted grant is revoked');
    });

    test('a connection deleted while a refresh is refused (invalid_grant) is not written back as needing re-authorisation', async () => {
      const answer = await deleteDuringRefresh('c2', 'rt-refused', true);
      assert.equal(answer.status, 404, JSON.stringify(answer.body));
    });

    test('deleting an integration while 50 connections are being created leaves none behind; a reused key never sends their keys', async () => {
      let r = await a.call('POST', '/integration', { provider_config_key: 'reused', provider: 'first' });
      assert.equal(r.status, 200);
      // Creations 5 ms apart; the delete starts once ten of them are made, so that it meets the rest in flight.
      let made = 0;
      let deletion: ReturnType<ServerProcess['call']> | undefined;
      const creations: ReturnType<ServerProcess['call']>[] = [];
      for (let i = 0; i < 50; i++) {
        creations.push(
          (i % 2 ? a : b).call('POST', '/connection', { connection_id: `u${i}`, provider_config_key: 'reused', credentials: { type: 'api_key', api_key: `secret-key-${i}` } }).then((c) => {
            if (c.status === 200 && ++made === 10) deletion = a.call('DELETE', '/integration/reused');
            return c;
          }),
        );
        await sleep(5);
      }
      const statuses = (await Promise.all(creations)).map((c) => c.status);
      assert.ok(deletion, 'ten connections were made before the delete');
      assert.equal((await deletion).status, 204);
      assert.deepEqual(statuses.filter((s) => s !== 200 && s !== 404), [], 'each creation either happened before the delete or found no integration');
      r = await a.call('POST', '/integration', { provider_config_key: 'reused', provider: 'second' });
      assert.equal(r.status, 200);
      assert.equal(r.body.connection_count, 0, 'a connection outlived its integration');
      for (const server of [a, b]) assert.deepEqual((await server.call('GET', '/connection?provider_config_key=reused')).body.connections, []);
      const sent = await Promise.all(Array.from({ length: 50 }, (_, i) => b.call('GET', '/proxy/whoami', undefined, { 'provider-config-key': 'reused', 'connection-id': `u${i}` })));
      assert.deepEqual([...new Set(sent.map((s) => s.status))], [404]);
      assert.deepEqual(other.requests.map((q) => q.headers['x-api-key']), [], 'an old key reached the new provider');
    });

    test('a connection left from an earlier integration of the same key is refused, not used', async () => {
      let r = await a.call('POST', '/integration', { provider_config_key: 'again', provider: 'first' });
      assert.equal(r.status, 200);
      r = await a.call('POST', '/connection', { connection_id: 'left', provider_config_key: 'again', credentials: { type: 'api_key', api_key: 'left-behind-key' } });
      assert.equal(r.status, 200);
      const row = await readRow(store, db?.url, a, 'connection/again/left');
      assert.equal((await a.call('DELETE', '/integration/again')).status, 204);
      assert.equal((await a.call('POST', '/integration', { provider_config_key: 'again', provider: 'second' })).status, 200);
      // As an older version could leave it: the row put back under the reused key.
      await writeRow(store, db?.url, a, 'connection/again/left', row);
      const before = other.requests.length;
      r = await b.call('GET', '/proxy/whoami', undefined, { 'provider-config-key': 'again', 'connection-id': 'left' });
      assert.equal(r.status, 404, JSON.stringify(r.body));
      r = await b.call('GET', '/auth/token/again/left');
      assert.equal(r.status, 404);
      assert.equal(other.requests.length, before, 'the left-behind key reached the new provider');
    });
  });
}


async function readRow(store: 'sqlite' | 'postgres', url: string | undefined, server: ServerProcess, key: string): Promise<string> {
  const rows = await query(store, url, server, 'SELECT value FROM keyv WHERE key = ?', [key]);
  assert.equal(rows.length, 1, `no row ${key}`);
  return rows[0].value as string;
}

async function writeRow(store: 'sqlite' | 'postgres', url: string | undefined, server: ServerProcess, key: string, value: string) {
  await query(store, url, server, 'INSERT INTO keyv (key, value) VALUES (?, ?)', [key, value]);
}

/** SQL on the keyv table behind the server's back (`?` placeholders). */
async function query(store: 'sqlite' | 'postgres', url: string | undefined, server: ServerProcess, text: string, params: unknown[]): Promise<Record<string, unknown>[]> {
  if (store === 'postgres') {
    let i = 0;
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return (await c.query(text.replace(/\?/g, () => `$${++i}`), params)).rows;
    } finally {
      await c.end();
    }
  }
  const sqlite3 = (await import('sqlite3')).default;
  const db = new sqlite3.Database(`${server.dataDir}/terapi.sqlite`);
  try {
    return await new Promise((res, rej) => db.all(text, params, (e, rows: Record<string, unknown>[]) => (e ? rej(e) : res(rows))));
  } finally {
    db.close();
  }
}

raceSuite('sqlite');
raceSuite('postgres');

describe('PostgreSQL link cut while a token refresh holds its lock (real process)', { skip: pgSkip }, () => {
  let oauth: Awaited<ReturnType<typeof slowOAuth>>;
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let hop: Awaited<ReturnType<typeof tcpHop>>;
  let server: ServerProcess;

  before(async () => {
    oauth = await slowOAuth();
    db = await freshDatabase();
    const real = new URL(db.url);
    hop = await tcpHop({ host: real.hostname, port: Number(real.port || 5432) });
    server = await spawnTerapi({ TERAPI_PROVIDERS_DIR: providersDir({ slow: oauthProvider(oauth.api.url) }), TERAPI_DATABASE_URL: hop.via(db.url) });
  });
  after(async () => {
    await server?.stop();
    await hop?.cut().catch(() => {});
    await oauth?.api.close();
    await db?.drop();
  });

  test('8 concurrent force_refresh, the link cut for 4 s: 503 store_unavailable, then the server recovers', async () => {
    let r = await server.call('POST', '/integration', { provider_config_key: 'slow', provider: 'slow', oauth_client_id: 'c', oauth_client_secret: 's' });
    assert.equal(r.status, 200);
    r = await server.call('POST', '/connection', { connection_id: 'c1', provider_config_key: 'slow', credentials: { type: 'oauth2', access_token: 'at-0', refresh_token: 'rt-0', expires_at: '2099-01-01T00:00:00Z' } });
    assert.equal(r.status, 200);
    oauth.state.delayMs = 1000;
    const seen = oauth.state.refreshes;
    const calls = Array.from({ length: 8 }, () => server.call('GET', '/auth/token/slow/c1?force_refresh=true').catch((e: Error) => ({ status: 0, body: { error: e.message } })));
    await until(() => oauth.state.refreshes > seen, 'the refresh to reach the token endpoint');
    await hop.cut();
    const answers = await Promise.all(calls);
    await sleep(4000 - 1000);
    assert.ok(server.alive(), `the server process ended:\n${server.output().slice(-2000)}`);
    for (const answer of answers) {
      assert.ok(answer.status === 503 || answer.status === 200, `answered ${answer.status}: ${JSON.stringify(answer.body)}`);
      if (answer.status === 503) assert.equal(answer.body.error, 'store_unavailable');
    }
    assert.ok(answers.some((x) => x.status === 503), 'the refresh could not be stored while the database was away');
    await hop.restore();
    oauth.state.delayMs = 0;
    r = await server.call('GET', '/auth/token/slow/c1');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    r = await server.call('GET', '/auth/token/slow/c1?force_refresh=true');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(server.alive());
  });
});
