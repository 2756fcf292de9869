import { createTables, type Sql, type SqlTx } from '../store/sql.ts';
import { guarded, Store } from '../store/store.ts';
import { idCursor } from '../store/cursor.ts';

/**
 * Synced records and the state of each sync, in SQL tables of their own beside keyv's table
 * (PRODUCT.md, "Storage"). A page of records and the sync's checkpoint are written in one
 * transaction, so they never disagree; cursors are handed out under the sync's row lock, one writer
 * per connection and model, so they increase in commit order: a reader that follows them never
 * misses a change committed after its read.
 */

export interface SyncKey {
  integration: string;
  connection: string;
  sync: string;
}

/** A run that holds a sync: `run` is what its pages mark records with (a resumed full run keeps the first one's). */
export interface RunHandle extends SyncKey {
  model: string;
  runId: string;
  run: string;
}

/**
 * A page of mapped records ready to store: `rows` is the JSON text of `[[id, data, hash], ...]`
 * (each record's id, its data as JSON text, and a hash of that text) in UTF-8, `count` their
 * number. The bytes are handed over from the run thread (transferred, not copied) and go to the
 * database as one parameter, read as text there: the API thread neither builds nor converts
 * anything per record.
 */
export interface PreparedPage {
  rows: Uint8Array;
  count: number;
}

export interface PageCounts {
  added: number;
  updated: number;
  unchanged: number;
}

/** What a run did, kept on the sync's status. */
export interface RunSummary {
  run_id: string;
  started_at: string;
  finished_at?: string;
  outcome: 'running' | 'success' | 'error' | 'interrupted' | 'rate_limited';
  pages: number;
  added: number;
  updated: number;
  deleted: number;
  unchanged: number;
  invalid: { count: number; examples: { id?: string; page: number; problem: string }[] };
  error?: string;
  /** The run this one carries on from, when that one was interrupted or rate-limited. */
  resumes?: { run_id: string; outcome: 'interrupted' | 'rate_limited'; error?: string };
}

export interface SyncRow extends SyncKey {
  model: string;
  status: 'idle' | 'running' | 'success' | 'error';
  paused: boolean;
  run_id: string | null;
  lease_until: string | null;
  started_at: string | null;
  finished_at: string | null;
  /** How often the sync runs on its own (null: only when triggered). */
  frequency_ms: number | null;
  /** When it runs next on its own, in ms since the epoch. */
  next_run_ms: number | null;
  checkpoint: unknown;
  resume: Resume | null;
  last_cursor: number;
  records_count: number;
  error: string | null;
  last_run: RunSummary | null;
}

/**
 * Where an unfinished full run stopped (its process died, or a rate limit ended it): the next run
 * carries on from there as the same run, so that what the first part saw is not deleted.
 */
export interface Resume {
  run: string;
  position: unknown;
  pages: number;
}

export interface StoredRecord {
  id: string;
  data: string;
  first_seen_at: string;
  last_modified_at: string;
  last_action: 'added' | 'updated' | 'deleted';
  deleted_at: string | null;
  cursor: number;
}

/** The run no longer holds its sync (given as the sync, or as the message of one that crossed threads). */
export class RunLost extends Error {
  constructor(key: SyncKey | string) {
    super(typeof key === 'string' ? key : `sync "${key.sync}" of connection "${key.connection}" was taken over by another run (this one's lease ran out)`);
  }
}

export class ConnectionGone extends Error {
  constructor(key: SyncKey | string) {
    super(typeof key === 'string' ? key : `connection "${key.connection}" of integration "${key.integration}" was deleted during the run: nothing more is stored`);
  }
}

const TABLES = (bigint: string) => [
  `CREATE TABLE IF NOT EXISTS terapi_records (
    integration TEXT NOT NULL,
    connection TEXT NOT NULL,
    model TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    hash TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    last_modified_at TEXT NOT NULL,
    last_action TEXT NOT NULL,
    deleted_at TEXT,
    cursor ${bigint} NOT NULL,
    run TEXT NOT NULL,
    PRIMARY KEY (integration, connection, model, id)
  )`,
  `CREATE INDEX IF NOT EXISTS terapi_records_by_cursor ON terapi_records (integration, connection, model, cursor)`,
  `CREATE TABLE IF NOT EXISTS terapi_syncs (
    integration TEXT NOT NULL,
    connection TEXT NOT NULL,
    sync TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'idle',
    paused SMALLINT NOT NULL DEFAULT 0,
    run_id TEXT,
    lease_until TEXT,
    started_at TEXT,
    finished_at TEXT,
    frequency_ms ${bigint},
    next_run_ms ${bigint},
    checkpoint TEXT,
    resume TEXT,
    last_cursor ${bigint} NOT NULL DEFAULT 0,
    records_count ${bigint} NOT NULL DEFAULT 0,
    error TEXT,
    last_run TEXT,
    pending_event TEXT,
    PRIMARY KEY (integration, connection, sync)
  )`,
  `CREATE INDEX IF NOT EXISTS terapi_syncs_due ON terapi_syncs (next_run_ms)`,
];

const KEY = 'integration = $1 AND connection = $2';
/** Records marked deleted per statement at the end of a full run. */
const DELETE_BATCH = 5000;
const json = (v: unknown) => (v === undefined ? null : JSON.stringify(v));
const parse = <T>(v: unknown): T | null => (typeof v === 'string' ? (JSON.parse(v) as T) : null);

export class SyncStore {
  constructor(readonly sql: Sql) {}

  /** Creates the tables where they are missing; safe to run from every process at once. */
  async migrate(): Promise<void> {
    await createTables(this.sql, TABLES(this.sql.dialect === 'postgres' ? 'BIGINT' : 'INTEGER'));
  }

  async get(key: SyncKey): Promise<SyncRow | undefined> {
    const rows = await this.sql.query(`SELECT * FROM terapi_syncs WHERE ${KEY} AND sync = $3`, [key.integration, key.connection, key.sync]);
    return rows.length ? row(rows[0]) : undefined;
  }

  /** Every sync's row, of one integration, one connection id, or both when named, by integration, connection and sync. */
  async list(integration?: string, connection?: string): Promise<SyncRow[]> {
    const where: string[] = [];
    const params: string[] = [];
    for (const [column, value] of [['integration', integration], ['connection', connection]] as const) {
      if (value !== undefined) where.push(`${column} = $${params.push(value)}`);
    }
    // GET /syncs reads nothing else first: an outage here is its 503.
    const rows = await guarded(() => this.sql.query(`SELECT * FROM terapi_syncs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY integration, connection, sync`, params));
    return rows.map(row);
  }

  /**
   * Takes the sync for a new run, unless a run holds it and its lease is still good: of any number
   * of concurrent claims, across processes, one wins. Answers the run to carry out, or undefined.
   */
  async claim(key: SyncKey, model: string, runId: string, leaseMs: number, full: boolean): Promise<{ handle: RunHandle; row: SyncRow } | undefined> {
    const now = new Date().toISOString();
    const params = [key.integration, key.connection, key.sync];
    return this.sql.transaction(async (tx) => {
      await tx.query(`INSERT INTO terapi_syncs (integration, connection, sync, model) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, [...params, model]);
      const lock = tx.dialect === 'postgres' ? ' FOR UPDATE' : '';
      const [current] = (await tx.query(`SELECT * FROM terapi_syncs WHERE ${KEY} AND sync = $3${lock}`, params)).map(row);
      if (current.status === 'running' && current.lease_until && current.lease_until > now) return undefined;
      const resume = full && current.resume ? current.resume : null;
      const before = current.last_run;
      const resumes = before && (before.outcome === 'interrupted' || before.outcome === 'rate_limited') ? { run_id: before.run_id, outcome: before.outcome, ...(before.error ? { error: before.error } : {}) } : undefined;
      const summary: RunSummary = { run_id: runId, started_at: now, outcome: 'running', pages: 0, added: 0, updated: 0, deleted: 0, unchanged: 0, invalid: { count: 0, examples: [] }, ...(resumes ? { resumes } : {}) };
      await tx.query(
        `UPDATE terapi_syncs SET status = 'running', model = $4, run_id = $5, lease_until = $6, started_at = $7, resume = $8, last_run = $9 WHERE ${KEY} AND sync = $3`,
        [...params, model, runId, new Date(Date.now() + leaseMs).toISOString(), now, json(resume), json(summary)],
      );
      const handle: RunHandle = { ...key, model, runId, run: resume?.run ?? runId };
      return { handle, row: { ...current, status: 'running', run_id: runId, resume, last_run: summary } };
    });
  }

  /** Extends a run's lease; false when the run no longer holds the sync. */
  async renew(handle: RunHandle, leaseMs: number): Promise<boolean> {
    const rows = await this.sql.query(
      `UPDATE terapi_syncs SET lease_until = $5 WHERE ${KEY} AND sync = $3 AND run_id = $4 AND status = 'running' RETURNING sync`,
      [handle.integration, handle.connection, handle.sync, handle.runId, new Date(Date.now() + leaseMs).toISOString()],
    );
    return rows.length > 0;
  }

  /**
   * Stores one page in one transaction: its records (one upsert, which leaves unchanged records as
   * they are and answers which ones it added or updated), the checkpoint after it and where an
   * unfinished run would resume. Refused when the run lost the sync or the connection was deleted
   * (a delete is final).
   */
  async writePage(handle: RunHandle, page: PreparedPage, state: { checkpoint?: unknown; resume?: Resume | null; full: boolean; summary: RunSummary }, leaseMs: number): Promise<PageCounts> {
    const now = new Date().toISOString();
    return this.sql.transaction(async (tx) => {
      // PostgreSQL runs transactions side by side: the rows are locked before anything is written.
      // SQLite's write lock already keeps every other writer out, so the check comes with the last
      // statement, one round trip fewer a page.
      if (tx.dialect === 'postgres') await this.hold(tx, handle);
      const counts = page.count ? await this.upsert(tx, handle, page, now) : { added: 0, updated: 0, unchanged: 0 };
      // A full run marks what it saw, so that what it did not see can be deleted at its end: the
      // upsert marked what it changed, this marks the rest.
      if (state.full && counts.unchanged) {
        await tx.query(`UPDATE terapi_records SET run = $4 WHERE ${KEY} AND model = $3 AND run <> $4 AND id IN (SELECT value ->> 0 FROM ${jsonRows(tx, '$5')})`, [handle.integration, handle.connection, handle.model, handle.run, bytes(page)]);
      }
      const held = await tx.query(
        `UPDATE terapi_syncs SET last_cursor = last_cursor + $5, records_count = records_count + $6, checkpoint = $7, resume = $8, lease_until = $9, last_run = ${withCounts(tx, '$10', '$6', '$12', '$13')}
         WHERE ${KEY} AND sync = $3 AND run_id = $4 AND EXISTS (SELECT 1 FROM keyv WHERE key = $11) RETURNING sync`,
        [handle.integration, handle.connection, handle.sync, handle.runId, page.count, counts.added, json(state.checkpoint), json(state.resume ?? null), new Date(Date.now() + leaseMs).toISOString(), json(state.summary), connectionKey(handle), counts.updated, counts.unchanged],
      );
      if (!held.length) await this.hold(tx, handle); // throws: says which of the two is gone
      return counts;
    });
  }

  /**
   * Ends a run. A complete, successful full run first marks every live record it did not see as
   * deleted (never after a failed or partial run).
   */
  async finish(handle: RunHandle, summary: RunSummary, result: { full: boolean; checkpoint?: unknown; nextRunMs?: number; resume?: Resume | null }): Promise<{ deleted: number; records_count: number }> {
    const now = new Date().toISOString();
    return this.sql.transaction(async (tx) => {
      const lastCursor = await this.hold(tx, handle);
      let deleted = 0;
      if (result.full && summary.outcome === 'success') deleted = await this.deleteUnseen(tx, handle, lastCursor, now);
      const done = { ...summary, deleted: summary.deleted + deleted, finished_at: now };
      const status = summary.outcome === 'success' ? 'success' : 'error';
      // What the app is told (core/jobs/webhooks.ts), written with the run's end: it is sent at least once.
      const event = runEvent(handle, done);
      const rows = await tx.query<{ records_count: number | string }>(
        `UPDATE terapi_syncs SET status = $4, run_id = NULL, lease_until = NULL, finished_at = $5, last_cursor = $6, records_count = records_count - $7,
           resume = $8, error = $9, last_run = $10, next_run_ms = COALESCE($11, next_run_ms), pending_event = COALESCE($12, pending_event)${result.checkpoint !== undefined ? ', checkpoint = $13' : ''}
         WHERE ${KEY} AND sync = $3 RETURNING records_count`,
        [handle.integration, handle.connection, handle.sync, status, now, lastCursor + deleted, deleted, json(result.resume ?? null), summary.error ?? null, json(done), result.nextRunMs ?? null, json(event), ...(result.checkpoint !== undefined ? [json(result.checkpoint)] : [])],
      );
      return { deleted, records_count: Number(rows[0].records_count) };
    });
  }

  /**
   * Puts a sync on a schedule (or changes its frequency); `startNow` makes it due at once. A
   * frequency of null takes it off the schedule: it runs only when triggered.
   */
  async schedule(key: SyncKey, model: string, frequencyMs: number | null, startNow: boolean): Promise<void> {
    const next = frequencyMs === null ? null : startNow ? Date.now() : Date.now() + frequencyMs;
    await this.sql.query(
      `INSERT INTO terapi_syncs (integration, connection, sync, model, frequency_ms, next_run_ms) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (integration, connection, sync) DO UPDATE SET frequency_ms = excluded.frequency_ms, next_run_ms = excluded.next_run_ms, paused = 0`,
      [key.integration, key.connection, key.sync, model, frequencyMs, next],
    );
  }

  /** Pauses or resumes a sync's schedule; a resumed sync is due at once. */
  async setPaused(key: SyncKey, model: string, paused: boolean, frequencyMs: number | null): Promise<void> {
    await this.sql.query(
      `INSERT INTO terapi_syncs (integration, connection, sync, model, paused, frequency_ms, next_run_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (integration, connection, sync) DO UPDATE SET paused = excluded.paused,
         frequency_ms = COALESCE(terapi_syncs.frequency_ms, excluded.frequency_ms), next_run_ms = ${paused ? 'terapi_syncs.next_run_ms' : 'excluded.next_run_ms'}`,
      [key.integration, key.connection, key.sync, model, paused ? 1 : 0, frequencyMs, paused ? null : Date.now()],
    );
  }

  /** A new frequency for one sync of every connection of an integration (PATCH /integration). */
  async setFrequency(integration: string, sync: string, frequencyMs: number): Promise<void> {
    const now = Date.now();
    // The next run moves no later than one new period from now.
    await this.sql.query(
      `UPDATE terapi_syncs SET frequency_ms = $3, next_run_ms = CASE WHEN next_run_ms IS NULL OR next_run_ms > $4 THEN $4 ELSE next_run_ms END
       WHERE integration = $1 AND sync = $2 AND frequency_ms IS NOT NULL`,
      [integration, sync, frequencyMs, now + frequencyMs],
    );
  }

  /**
   * Takes the syncs that are due (not paused), moves each one's next run a period on, and hands
   * them to `send` inside the same transaction: a due run is queued exactly when its schedule moves.
   * Of several processes doing this at once, each due sync goes to one (SKIP LOCKED).
   */
  async takeDue(limit: number, send: (due: (SyncKey & { due_ms: number })[], tx: SqlTx) => Promise<void>): Promise<number> {
    const now = Date.now();
    // A read first: most ticks find nothing due, and should not take the write lock for that.
    if (!(await this.sql.query(`SELECT 1 FROM terapi_syncs WHERE next_run_ms <= $1 AND paused = 0 LIMIT 1`, [now])).length) return 0;
    return this.sql.transaction(async (tx) => {
      const skip = tx.dialect === 'postgres' ? ' FOR UPDATE SKIP LOCKED' : '';
      const due = (
        await tx.query<SyncKey & { due_ms: number | string }>(
          `SELECT integration, connection, sync, next_run_ms AS due_ms FROM terapi_syncs WHERE next_run_ms <= $1 AND paused = 0 ORDER BY next_run_ms LIMIT $2${skip}`,
          [now, limit],
        )
      ).map((d) => ({ ...d, due_ms: Number(d.due_ms) }));
      if (!due.length) return 0;
      const keys = JSON.stringify(due.map((d) => [d.integration, d.connection, d.sync]));
      // Keep the cadence, but after a backlog (the server was down) the next run is a period from now.
      await tx.query(
        `UPDATE terapi_syncs SET next_run_ms = CASE WHEN frequency_ms IS NULL THEN NULL WHEN next_run_ms + frequency_ms > $1 THEN next_run_ms + frequency_ms ELSE $1 + frequency_ms END
         WHERE (integration, connection, sync) IN (SELECT value ->> 0, value ->> 1, value ->> 2 FROM ${tx.dialect === 'postgres' ? 'json_array_elements($2::json)' : 'json_each($2)'})`,
        [now, keys],
      );
      await send(due, tx);
      return due.length;
    });
  }

  /** When the longest-overdue sync that is not yet queued was due (ms since the epoch); undefined when none is overdue. */
  async earliestOverdue(now = Date.now()): Promise<number | undefined> {
    const [r] = await this.sql.query<{ due: number | string | null }>(`SELECT min(next_run_ms) AS due FROM terapi_syncs WHERE next_run_ms <= $1 AND paused = 0`, [now]);
    return r?.due === null || r?.due === undefined ? undefined : Number(r.due);
  }

  /** Hands the runs' pending events to `send` in one transaction with clearing them: each is sent once it is queued. */
  async takeEvents(limit: number, send: (events: (SyncKey & { event: SyncEvent })[], tx: SqlTx) => Promise<void>): Promise<number> {
    if (!(await this.sql.query(`SELECT 1 FROM terapi_syncs WHERE pending_event IS NOT NULL LIMIT 1`, [])).length) return 0;
    return this.sql.transaction(async (tx) => {
      const skip = tx.dialect === 'postgres' ? ' FOR UPDATE SKIP LOCKED' : '';
      const rows = await tx.query<SyncKey & { pending_event: string }>(
        `SELECT integration, connection, sync, pending_event FROM terapi_syncs WHERE pending_event IS NOT NULL LIMIT $1${skip}`,
        [limit],
      );
      if (!rows.length) return 0;
      await send(rows.map((r) => ({ integration: r.integration, connection: r.connection, sync: r.sync, event: JSON.parse(r.pending_event) as SyncEvent })), tx);
      for (const r of rows) await tx.query(`UPDATE terapi_syncs SET pending_event = NULL WHERE ${KEY} AND sync = $3`, [r.integration, r.connection, r.sync]);
      return rows.length;
    });
  }

  /**
   * Runs whose lease ran out while they were marked running: their process died (SIGKILL, a crash).
   * Each is marked interrupted, keeping what it stored and where a full run would resume.
   */
  async expireLeases(now = new Date()): Promise<SyncKey[]> {
    const at = now.toISOString();
    const rows = await this.sql.query<Record<string, unknown>>(`SELECT * FROM terapi_syncs WHERE status = 'running' AND (lease_until IS NULL OR lease_until < $1)`, [at]);
    const expired: SyncKey[] = [];
    for (const r of rows.map(row)) {
      const message = 'the run was interrupted (its process stopped before the run ended); the next run resumes from the last stored checkpoint';
      const summary = { ...(r.last_run ?? emptySummary(r.run_id ?? '', at)), outcome: 'interrupted' as const, finished_at: at, error: message };
      const done = await this.sql.query(
        `UPDATE terapi_syncs SET status = 'error', run_id = NULL, lease_until = NULL, finished_at = $5, error = $6, last_run = $7
         WHERE ${KEY} AND sync = $3 AND run_id = $4 AND status = 'running' RETURNING sync`,
        [r.integration, r.connection, r.sync, r.run_id, at, message, json(summary)],
      );
      if (done.length) expired.push({ integration: r.integration, connection: r.connection, sync: r.sync });
    }
    return expired;
  }

  /** A run this process stops before its end (shutdown): marked interrupted, to be resumed where it stopped. */
  async interrupt(handle: RunHandle, message: string): Promise<void> {
    const at = new Date().toISOString();
    const [r] = (await this.sql.query(`SELECT * FROM terapi_syncs WHERE ${KEY} AND sync = $3`, [handle.integration, handle.connection, handle.sync])).map(row);
    if (!r || r.run_id !== handle.runId) return;
    const summary = { ...(r.last_run ?? emptySummary(handle.runId, at)), outcome: 'interrupted' as const, finished_at: at, error: message };
    await this.sql.query(
      `UPDATE terapi_syncs SET status = 'error', run_id = NULL, lease_until = NULL, finished_at = $5, error = $6, last_run = $7 WHERE ${KEY} AND sync = $3 AND run_id = $4`,
      [handle.integration, handle.connection, handle.sync, handle.runId, at, message, json(summary)],
    );
  }

  /** Records of a connection and model in cursor order, for GET /records. */
  async read(q: { integration: string; connection: string; model: string; after: number; limit: number; modifiedAfter?: string; actions?: string[] }): Promise<StoredRecord[]> {
    const params: unknown[] = [q.integration, q.connection, q.model, q.after, q.limit];
    let where = `${KEY} AND model = $3 AND cursor > $4`;
    if (q.modifiedAfter) {
      params.push(q.modifiedAfter);
      where += ` AND last_modified_at > $${params.length}`;
    }
    if (q.actions?.length) {
      where += ` AND last_action IN (${q.actions.map((a) => (params.push(a), `$${params.length}`)).join(', ')})`;
    }
    const rows = await this.sql.query<StoredRecord>(
      `SELECT id, data, first_seen_at, last_modified_at, last_action, deleted_at, cursor FROM terapi_records WHERE ${where} ORDER BY cursor LIMIT $5`,
      params,
    );
    return rows.map((r) => ({ ...r, cursor: Number(r.cursor) }));
  }

  /** Everything stored for a connection: its records and its syncs' state. */
  async deleteConnection(integration: string, connection: string): Promise<void> {
    await this.sql.transaction(async (tx) => {
      await tx.query(`DELETE FROM terapi_records WHERE ${KEY}`, [integration, connection]);
      await tx.query(`DELETE FROM terapi_syncs WHERE ${KEY}`, [integration, connection]);
    });
  }

  async deleteIntegration(integration: string): Promise<void> {
    await this.sql.transaction(async (tx) => {
      await tx.query(`DELETE FROM terapi_records WHERE integration = $1`, [integration]);
      await tx.query(`DELETE FROM terapi_syncs WHERE integration = $1`, [integration]);
    });
  }

  /**
   * Inside a page's transaction: locks the sync's row (PostgreSQL; SQLite's write lock is already
   * held) and checks that this run still holds it and that its connection still exists, locking
   * the connection's row for share so that a delete waits for this page and then removes it too.
   */
  private async hold(tx: SqlTx, handle: RunHandle): Promise<number> {
    const pg = tx.dialect === 'postgres';
    const [sync] = await tx.query<{ run_id: string | null; last_cursor: number | string }>(
      `SELECT run_id, last_cursor FROM terapi_syncs WHERE ${KEY} AND sync = $3${pg ? ' FOR UPDATE' : ''}`,
      [handle.integration, handle.connection, handle.sync],
    );
    if (!sync || sync.run_id !== handle.runId) throw sync ? new RunLost(handle) : new ConnectionGone(handle);
    const connection = await tx.query(`SELECT 1 FROM keyv WHERE key = $1${pg ? ' FOR SHARE' : ''}`, [connectionKey(handle)]);
    if (!connection.length) throw new ConnectionGone(handle);
    return Number(sync.last_cursor);
  }

  /**
   * Adds or updates the page's records in one statement; a record whose hash is unchanged (and
   * that is not deleted) is left exactly as it is. Each record's cursor is the last one handed out
   * plus its place in the page: those left unchanged leave gaps, and cursors still increase in
   * commit order. What it changed is then counted by those cursors (cheaper than RETURNING a row
   * per record).
   */
  private async upsert(tx: SqlTx, handle: RunHandle, page: PreparedPage, now: string): Promise<PageCounts> {
    const place = tx.dialect === 'postgres' ? 'u.n' : 'u.key + 1';
    const lastCursor = `(SELECT last_cursor FROM terapi_syncs WHERE ${KEY} AND sync = $4)`;
    await tx.query(
      `INSERT INTO terapi_records (integration, connection, model, id, data, hash, first_seen_at, last_modified_at, last_action, deleted_at, cursor, run)
       SELECT $1, $2, $3, u.value ->> 0, u.value ->> 1, u.value ->> 2, $5, $5, 'added', NULL, ${lastCursor} + ${place}, $6 FROM ${jsonRows(tx, '$7')} WHERE true
       ON CONFLICT (integration, connection, model, id) DO UPDATE SET data = excluded.data, hash = excluded.hash, last_modified_at = excluded.last_modified_at,
         last_action = CASE WHEN terapi_records.deleted_at IS NULL THEN 'updated' ELSE 'added' END, deleted_at = NULL, cursor = excluded.cursor, run = excluded.run
       WHERE terapi_records.hash <> excluded.hash OR terapi_records.deleted_at IS NOT NULL`,
      [handle.integration, handle.connection, handle.model, handle.sync, now, handle.run, bytes(page)],
    );
    const changed = await tx.query<{ last_action: string; n: number | string }>(
      `SELECT last_action, count(*) AS n FROM terapi_records WHERE ${KEY} AND model = $3 AND cursor > ${lastCursor} GROUP BY last_action`,
      [handle.integration, handle.connection, handle.model, handle.sync],
    );
    const count = (action: string) => Number(changed.find((c) => c.last_action === action)?.n ?? 0);
    const counts = { added: count('added'), updated: count('updated') };
    return { ...counts, unchanged: page.count - counts.added - counts.updated };
  }

  private async deleteUnseen(tx: SqlTx, handle: RunHandle, lastCursor: number, now: string): Promise<number> {
    // Read first, then write by id: a join of the table with itself planned on fresh statistics
    // (none yet for rows just written) turned into a nested loop over every record, squared.
    const gone = await tx.query<{ id: string }>(
      `SELECT id FROM terapi_records WHERE ${KEY} AND model = $3 AND deleted_at IS NULL AND run <> $4 ORDER BY cursor`,
      [handle.integration, handle.connection, handle.model, handle.run],
    );
    // Each deleted record gets a cursor of its own, after every cursor handed out so far.
    for (let i = 0; i < gone.length; i += DELETE_BATCH) {
      const batch = gone.slice(i, i + DELETE_BATCH).map((g, j) => [g.id, lastCursor + i + j + 1] as const);
      const base = [handle.integration, handle.connection, handle.model, now];
      const set = `SET last_action = 'deleted', deleted_at = $4, last_modified_at = $4, cursor = u.cursor`;
      const match = `terapi_records.integration = $1 AND terapi_records.connection = $2 AND terapi_records.model = $3 AND terapi_records.id = u.id`;
      if (tx.dialect === 'postgres') {
        await tx.query(`UPDATE terapi_records ${set} FROM unnest($5::text[], $6::bigint[]) AS u(id, cursor) WHERE ${match}`, [...base, batch.map((b) => b[0]), batch.map((b) => b[1])]);
      } else {
        await tx.query(`UPDATE terapi_records ${set} FROM (SELECT value ->> 0 AS id, value ->> 1 AS cursor FROM json_each($5)) AS u WHERE ${match}`, [...base, JSON.stringify(batch)]);
      }
    }
    return gone.length;
  }
}

const connectionKey = (handle: SyncKey) => Store.key('connection', handle.integration, handle.connection);

/**
 * The run's summary as stored after a page: the run's own (`summary`, a JSON parameter) with the
 * counts of the stored one plus the page's. The run may send a page before the one before it is
 * answered, so its own counts can lag a page; the stored ones never do.
 */
function withCounts(tx: SqlTx, summary: string, added: string, updated: string, unchanged: string): string {
  const counts = { added, updated, unchanged };
  if (tx.dialect === 'postgres') {
    const sums = Object.entries(counts).map(([name, n]) => `'${name}', (last_run::jsonb ->> '${name}')::bigint + ${n}`);
    return `(${summary}::jsonb || jsonb_build_object(${sums.join(', ')}))::text`;
  }
  return `json_set(${summary}, ${Object.entries(counts).map(([name, n]) => `'$.${name}', (last_run ->> '${name}') + ${n}`).join(', ')})`;
}

/** The elements of a JSON array, given as UTF-8 bytes, as rows `u(value, n)`: PostgreSQL numbers them from 1 (n), SQLite from 0 (key). */
function jsonRows(tx: SqlTx, param: string): string {
  return tx.dialect === 'postgres' ? `json_array_elements(convert_from(${param}, 'UTF8')::json) WITH ORDINALITY AS u(value, n)` : `json_each(CAST(${param} AS TEXT)) AS u`;
}

/** A page's rows as the drivers take bytes (a Buffer over the same memory). */
const bytes = (page: PreparedPage) => Buffer.from(page.rows.buffer, page.rows.byteOffset, page.rows.byteLength);

/** A run's news for the app: changes to read, or an error; none for a run that changed nothing. */
export interface SyncEvent {
  type: 'sync.changed' | 'sync.error';
  sync: string;
  model: string;
  outcome: RunSummary['outcome'];
  added: number;
  updated: number;
  deleted: number;
  /** Read the changes with GET /records?modified_after=<this>: every change of the run is after it. */
  modified_after: string;
  error?: string;
}

function runEvent(handle: RunHandle, summary: RunSummary): SyncEvent | undefined {
  const changed = summary.added + summary.updated + summary.deleted > 0;
  const failed = summary.outcome !== 'success';
  if (!changed && !failed) return undefined;
  return {
    type: failed ? 'sync.error' : 'sync.changed',
    sync: handle.sync,
    model: handle.model,
    outcome: summary.outcome,
    added: summary.added,
    updated: summary.updated,
    deleted: summary.deleted,
    // A moment before the run's first write: last_modified_at of each change is later.
    modified_after: new Date(Date.parse(summary.started_at) - 1).toISOString(),
    ...(summary.error ? { error: summary.error } : {}),
  };
}

function emptySummary(runId: string, at: string): RunSummary {
  return { run_id: runId, started_at: at, outcome: 'running', pages: 0, added: 0, updated: 0, deleted: 0, unchanged: 0, invalid: { count: 0, examples: [] } };
}

function row(r: Record<string, unknown>): SyncRow {
  return {
    integration: r.integration as string,
    connection: r.connection as string,
    sync: r.sync as string,
    model: r.model as string,
    status: r.status as SyncRow['status'],
    paused: Number(r.paused) === 1,
    run_id: (r.run_id as string) ?? null,
    lease_until: (r.lease_until as string) ?? null,
    started_at: (r.started_at as string) ?? null,
    finished_at: (r.finished_at as string) ?? null,
    frequency_ms: r.frequency_ms === null || r.frequency_ms === undefined ? null : Number(r.frequency_ms),
    next_run_ms: r.next_run_ms === null || r.next_run_ms === undefined ? null : Number(r.next_run_ms),
    checkpoint: parse(r.checkpoint) ?? undefined,
    resume: parse<Resume>(r.resume),
    last_cursor: Number(r.last_cursor),
    records_count: Number(r.records_count),
    error: (r.error as string) ?? null,
    last_run: parse<RunSummary>(r.last_run),
  };
}

/** Record cursors as the API shows them: opaque, and checked when given back. */
export const recordCursor = idCursor('r', "pass back a next_cursor or a record's _terapi_metadata.cursor unchanged");
