/**
 * A server SIGKILLed in the middle of a sync: after a restart the sync's status says what happened,
 * and the next run resumes from what was stored, with no record lost and none doubled. Real server
 * processes against a real paginated API, on the embedded store and on PostgreSQL.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { fakeApi, freshDatabase, json, pgSkip, providersDir, spawnTerapi, tempDir, type Spawned } from './support.ts';

const TOTAL = 60;
const PAGE = 5;

async function slowApi() {
  const state = { delayMs: 250, sinceAsked: [] as (string | null)[] };
  const items = Array.from({ length: TOTAL }, (_, i) => ({ id: i + 1, updated_at: new Date(Date.UTC(2026, 0, 1) + i * 60_000).toISOString() }));
  const api = await fakeApi(async (req, res) => {
    const url = new URL(req.url!, 'http://x');
    await new Promise((r) => setTimeout(r, state.delayMs));
    const since = url.searchParams.get('since');
    if (!url.searchParams.get('cursor')) state.sinceAsked.push(since);
    const list = items.filter((i) => !since || i.updated_at > since);
    const from = Number(url.searchParams.get('cursor') ?? 0);
    json(res, 200, { items: list.slice(from, from + PAGE), next: from + PAGE < list.length ? from + PAGE : null });
  });
  return { ...api, state };
}

const file = (url: string) => `
display_name: Slow
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
api:
  base_url: ${url}
  credentials: { in: header, name: X-Key, value: "\${api_key}" }
syncs:
  full:
    mode: full
    auto_start: false
    request: { path: /items }
    pagination: { type: cursor, cursor: next, param: cursor, page_size: { param: limit, value: ${PAGE} } }
    records: items
    mapping: "{ 'id': id, 'updated_at': updated_at }"
    model: { name: Full }
  incremental:
    mode: incremental
    auto_start: false
    request: { path: /items }
    pagination: { type: cursor, cursor: next, param: cursor, page_size: { param: limit, value: ${PAGE} } }
    records: items
    mapping: "{ 'id': id, 'updated_at': updated_at }"
    model: { name: Incremental }
    checkpoint: { value: "$max($.updated_at.$toMillis($)) ~> $fromMillis()", param: since }
`;

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function allRecords(s: Spawned, model: string) {
  const out: any[] = [];
  let cursor: string | null = null;
  do {
    const r = await s.call('GET', `/records?provider_config_key=slow&connection_id=c&model=${model}&limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
    assert.equal(r.status, 200);
    out.push(...r.body.records);
    cursor = r.body.next_cursor;
  } while (cursor);
  return out;
}

function suite(name: string, env: () => Record<string, string>, skip: string | false = false) {
  describe(`a server killed during a sync (${name})`, { skip }, () => {
    let api: Awaited<ReturnType<typeof slowApi>>;
    let server: Spawned | undefined;
    let providers: string;

    before(async () => {
      api = await slowApi();
      providers = providersDir({ slow: file(api.url) });
      server = await spawnTerapi({ ...env(), TERAPI_PROVIDERS_DIR: providers });
      assert.equal((await server.call('POST', '/integration', { provider_config_key: 'slow', provider: 'slow' })).status, 200);
      assert.equal((await server.call('POST', '/connection', { connection_id: 'c', provider_config_key: 'slow', credentials: { type: 'api_key', api_key: 'k' } })).status, 200);
    });
    after(async () => {
      await server?.stop();
      await api?.close();
    });

    for (const sync of ['full', 'incremental'] as const) {
      test(`${sync}: SIGKILL midway, restart, the status says so, and the next run finishes with the exact records`, async () => {
        const model = sync === 'full' ? 'Full' : 'Incremental';
        api.state.delayMs = 250;
        assert.equal((await server!.call('POST', '/sync/trigger', { provider_config_key: 'slow', connection_id: 'c', syncs: [sync] })).status, 200);
        const stored = await waitFor('three pages stored', async () => {
          const s = await server!.call('GET', `/sync/c/${sync}?provider_config_key=slow`);
          return s.body?.last_run?.pages >= 3 ? s.body.last_run.pages : undefined;
        });
        await server!.stop('SIGKILL');

        api.state.sinceAsked.length = 0;
        api.state.delayMs = 0;
        server = await spawnTerapi({ ...env(), TERAPI_PROVIDERS_DIR: providers });
        // The interrupted run is noticed at the restart (embedded) or when its lease runs out
        // (PostgreSQL), and queued again: it resumes on its own.
        const done = await waitFor('the resumed run to end', async () => {
          const s = await server!.call('GET', `/sync/c/${sync}?provider_config_key=slow`);
          return s.body?.status === 'success' ? s.body : undefined;
        });
        assert.equal(done.last_run.resumes?.outcome, 'interrupted', JSON.stringify(done));
        assert.match(done.last_run.resumes.error, /interrupted/);
        const records = await allRecords(server!, model);
        assert.deepEqual(records.map((r) => r.id).sort((a, b) => a - b), Array.from({ length: TOTAL }, (_, i) => i + 1));
        assert.ok(records.every((r) => r._terapi_metadata.last_action === 'added'));
        // Resumed, not started over: only what was missing was added, nothing twice.
        const before = records.filter((r) => r._terapi_metadata.first_seen_at < done.last_run.started_at);
        assert.ok(before.length >= stored * PAGE && before.length < TOTAL, `${before.length} records stored before the kill`);
        assert.equal(done.last_run.added, TOTAL - before.length);
        assert.equal(done.records_count, TOTAL);
        // An incremental run resumes from the checkpoint of the last stored page.
        if (sync === 'incremental') assert.equal(api.state.sinceAsked[0], before.map((r) => r.updated_at).sort().at(-1));
      });
    }
  });
}

const dataDir = tempDir('terapi-crash-');
after(() => rmSync(dataDir, { recursive: true, force: true }));
suite('embedded', () => ({ TERAPI_DATA_DIR: dataDir }));

let db: Awaited<ReturnType<typeof freshDatabase>> | undefined;
describe('on PostgreSQL', { skip: pgSkip }, () => {
  before(async () => {
    db = await freshDatabase();
  });
  after(async () => db?.drop());
  // A short lease: another server notices a dead run within seconds.
  suite('postgres', () => ({ TERAPI_DATABASE_URL: db!.url, TERAPI_DATA_DIR: dataDir, TERAPI_SYNC_LEASE_SECONDS: '2' }));
});
