/**
 * Durability: everything survives a restart, the encryption key can be rotated without losing
 * connections, and a PostgreSQL outage is a 503 the server recovers from by itself.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { ConfigError } from '../core/config.ts';
import { openSql, type Sql } from '../core/store/sql.ts';
import { freshDatabase, pgSkip, startTerapi, tcpHop, tempDir, TEST_ENCRYPTION_KEY, type Running } from './support.ts';

const KEY_B = 'b'.repeat(64);

describe('embedded store: restart and key rotation', () => {
  const dataDir = tempDir('terapi-restart-');
  const secret = 'sk_restart_test';
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  const start = (env: Record<string, string> = {}) => startTerapi({ dataDir, env: { TERAPI_SECRET_KEY: secret, ...env } });

  test('integrations, connections and tokens survive a restart', async () => {
    let t = await start();
    let r = await t.call('POST', '/integration', { provider_config_key: 'gh', provider: 'github', oauth_client_id: 'cid', oauth_client_secret: 'cs' });
    assert.equal(r.status, 200);
    r = await t.call('POST', '/connection', { connection_id: 'u1', provider_config_key: 'gh', credentials: { type: 'oauth2', access_token: 'tok-1', expires_at: '2099-01-01T00:00:00Z' }, metadata: { a: 1 } });
    assert.equal(r.status, 200);
    await t.close();
    t = await start();
    r = await t.call('GET', '/connection/u1?provider_config_key=gh');
    assert.deepEqual(r.body.metadata, { a: 1 });
    r = await t.call('GET', '/auth/token/gh/u1');
    assert.equal(r.body.access_token, 'tok-1');
    assert.equal((await t.call('GET', '/integration/gh')).body.connection_count, 1);
    await t.close();
  });

  test('a new encryption key with the old one listed as previous keeps every connection; a start without a key still needed is refused', async () => {
    let t = await start();
    assert.equal((await t.call('POST', '/connection', { connection_id: 'u2', provider_config_key: 'gh', credentials: { type: 'oauth2', access_token: 'tok-old' } })).status, 200);
    await t.close();
    t = await start({ TERAPI_ENCRYPTION_KEY: KEY_B, TERAPI_PREVIOUS_ENCRYPTION_KEYS: TEST_ENCRYPTION_KEY });
    let r = await t.call('GET', '/auth/token/gh/u1');
    assert.equal(r.status, 200);
    assert.equal(r.body.access_token, 'tok-1');
    // Written again: now sealed with the new key only (u2 is left sealed with the old one).
    await t.call('DELETE', '/connection/u1?provider_config_key=gh');
    await t.call('POST', '/connection', { connection_id: 'u1', provider_config_key: 'gh', credentials: { type: 'oauth2', access_token: 'tok-2' } });
    // The integration's client secret is sealed too: with the old key dropped, the start is refused until it is written again.
    await t.close();
    await assert.rejects(start({ TERAPI_ENCRYPTION_KEY: KEY_B }), (e: ConfigError) => {
      assert.deepEqual(e.problems, [`the OAuth client secret of integration "gh" cannot be opened: these credentials were sealed with an encryption key this server does not have (${keyId(TEST_ENCRYPTION_KEY)}): add it to TERAPI_PREVIOUS_ENCRYPTION_KEYS`]);
      return true;
    });
    t = await start({ TERAPI_ENCRYPTION_KEY: KEY_B, TERAPI_PREVIOUS_ENCRYPTION_KEYS: TEST_ENCRYPTION_KEY });
    assert.equal((await t.call('PATCH', '/integration/gh', { oauth_client_secret: 'cs-2' })).status, 200);
    await t.close();
    t = await start({ TERAPI_ENCRYPTION_KEY: KEY_B });
    r = await t.call('GET', '/auth/token/gh/u1');
    assert.equal(r.body.access_token, 'tok-2');
    // The start opens one connection (the first by key, u1): u2, still sealed with the dropped key, fails on use.
    r = await t.call('GET', '/auth/token/gh/u2');
    assert.equal(r.status, 500);
    assert.equal(r.body.error, 'encryption_key_missing');
    assert.match(r.body.message, /TERAPI_PREVIOUS_ENCRYPTION_KEYS/);
    await t.close();
    // The old key alone opens nothing written since: refused at start, naming the setting.
    await assert.rejects(start({ TERAPI_ENCRYPTION_KEY: TEST_ENCRYPTION_KEY }), (e: ConfigError) => {
      assert.equal(e.problems.length, 2);
      assert.match(e.problems[1], new RegExp(`^the credentials of connection "u1" \\(integration "gh"\\) cannot be opened: .*\\(${keyId(KEY_B)}\\): add it to TERAPI_PREVIOUS_ENCRYPTION_KEYS$`));
      return true;
    });
  });
});

describe('embedded store: writes while another handle holds the write lock', () => {
  const dataDir = tempDir('terapi-busy-');
  let t: Running | undefined;
  let other: Sql | undefined;
  after(async () => {
    await other?.close();
    await t?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  // The server's own Sql handle holds the lock the same way in its transactions (the operations
  // log's flush, a sync page); a third handle on the file makes that moment last, deterministically.
  test('twenty concurrent creations during a transaction on another handle all succeed once it commits, not after the busy timeout', async () => {
    t = await startTerapi({ dataDir });
    const db = (other = openSql({ dataDir }));
    const server = t;
    const started = performance.now();
    const answers = (async () => {
      let calls: Promise<{ status: number; body: any }>[] = [];
      await db.transaction(async (tx) => {
        // BEGIN IMMEDIATE holds the write lock: the creations wait for it, each on a libuv thread.
        calls = Array.from({ length: 20 }, (_, i) => server.call('POST', '/integration', { provider_config_key: `busy-${i}`, provider: 'github', oauth_client_id: 'cid', oauth_client_secret: 'cs' }));
        await new Promise((r) => setTimeout(r, 500));
        // The statement before the COMMIT, and the COMMIT, need a thread of their own.
        await tx.query('SELECT 1');
      });
      return Promise.all(calls);
    })();
    const bound = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the transaction and the creations had not all ended after 10 s')), 10_000).unref());
    const statuses = (await Promise.race([answers, bound])).map((r) => (r.status === 200 ? 200 : `${r.status} ${r.body?.error}`));
    assert.deepEqual(statuses, Array(20).fill(200));
    assert.ok(performance.now() - started < 10_000);
    assert.equal((await t.call('GET', '/integration')).body.integrations.length, 20);
  });
});

const keyId = (hex: string) => createHash('sha256').update(Buffer.from(hex, 'hex')).digest('hex').slice(0, 8);

describe('PostgreSQL outage', { skip: pgSkip }, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  before(async () => { db = await freshDatabase(); });
  after(async () => { await db?.drop(); });

  test('calls answer 503 store_unavailable while the database is away, and work again when it returns', async () => {
    const real = new URL(db.url);
    const hop = await tcpHop({ host: real.hostname, port: Number(real.port || 5432) });
    const t = await startTerapi({ databaseUrl: hop.via(db.url) });
    try {
      let r = await t.call('POST', '/integration', { provider_config_key: 'stripe', provider: 'stripe' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      await hop.cut();
      r = await t.call('GET', '/integration');
      assert.equal(r.status, 503);
      assert.equal(r.body.error, 'store_unavailable');
      assert.match(r.body.message, /database cannot be reached/);
      r = await t.call('GET', '/health', undefined, { authorization: '' });
      assert.equal(r.status, 503);
      await hop.restore();
      r = await t.call('GET', '/integration');
      assert.equal(r.status, 200);
      assert.deepEqual(r.body.integrations.map((i: { unique_key: string }) => i.unique_key), ['stripe']);
      r = await t.call('GET', '/health', undefined, { authorization: '' });
      assert.equal(r.status, 200);
    } finally {
      await t.close();
      await hop.cut().catch(() => {});
    }
  });
});

describe('PostgreSQL reads by key', { skip: pgSkip }, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  before(async () => { db = await freshDatabase(); });
  after(async () => { await db?.drop(); });

  // Reads by key go to the table directly rather than through keyv (core/store/store.ts): they must
  // read what keyv wrote, escapes and expiry included.
  test('read back as written: strings that start with ":" (keys, values, array items), and an expired value as none', async () => {
    const { Store } = await import('../core/store/store.ts');
    const store = await Store.open({ databaseUrl: db.url, dataDir: tmpdir() });
    try {
      const value = { ':colon': ':value', list: [':a', 'b', '::two'], nested: { b64: ':base64:aGk=', plain: 'x:y', quote: 'a":b' }, n: 1, none: null };
      await store.set('t/escaped', value);
      assert.deepEqual(await store.get('t/escaped'), value);
      await store.set('t/plain', { a: 'b', c: [1, 2] });
      assert.deepEqual(await store.get('t/plain'), { a: 'b', c: [1, 2] });
      assert.equal(await store.get('t/missing'), undefined);
      await store.set('t/short', { a: 1 }, 50);
      assert.deepEqual(await store.get('t/short'), { a: 1 });
      await new Promise((r) => setTimeout(r, 80));
      assert.equal(await store.get('t/short'), undefined);
    } finally {
      await store.disconnect();
    }
  });
});
