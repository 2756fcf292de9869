import { storable } from './json-limits.ts';
import type { Logger } from './logger.ts';
import { idCursor } from './store/cursor.ts';
import { createTables, type Sql } from './store/sql.ts';
import { guarded } from './store/store.ts';

/** What the operations log records (README, "The operations log"). */
export const OPERATION_TYPES = ['connect', 'refresh', 'sync_run', 'action', 'proxy'] as const;
export type OperationType = (typeof OPERATION_TYPES)[number];
export type OperationOutcome = 'success' | 'error' | 'needs_reauth' | 'interrupted' | 'rate_limited';

/**
 * One thing Terapi did for a connection, as the log keeps it. Never a secret: messages are the
 * already scrubbed ones that the API answers or logs, a proxy call keeps its path without the query,
 * an action none of its input.
 */
export interface Operation {
  type: OperationType;
  provider_config_key?: string;
  connection_id?: string;
  /** The sync or action; the method and path of a proxy call; how a connection was made (oauth, credentials, api). */
  name?: string;
  outcome: OperationOutcome;
  duration_ms?: number;
  /** The error code, when it failed. */
  error?: string;
  /** What went wrong, in words (provider text scrubbed of the connection's secrets). */
  message?: string;
  request_id?: string;
  /** A few facts by type: a run's record counts, the provider's HTTP status of a proxy call. */
  detail?: Record<string, unknown>;
}

export interface OperationView extends Operation {
  /** Opaque, increasing: the log's order. */
  id: string;
  /** When it ended. */
  at: string;
}

export interface OperationsQuery {
  provider_config_key?: string;
  connection_id?: string;
  type?: OperationType;
  limit?: number;
  cursor?: string;
}

/** How long a text field may be: a log line, not a transcript. */
const MAX_TEXT = 1000;
/** How often the buffer is written, and at what size sooner. */
const FLUSH_MS = 200;
const FLUSH_AT = 500;
/** How long a failed write waits before the next try. */
const RETRY_MS = 2000;

const TABLE = (pg: boolean) => [
  `CREATE TABLE IF NOT EXISTS terapi_operations (
    id ${pg ? 'BIGSERIAL' : 'INTEGER'} PRIMARY KEY,
    at TEXT NOT NULL,
    type TEXT NOT NULL,
    integration TEXT,
    connection TEXT,
    name TEXT,
    outcome TEXT NOT NULL,
    duration_ms INTEGER,
    error TEXT,
    message TEXT,
    request_id TEXT,
    detail TEXT
  )`,
  `CREATE INDEX IF NOT EXISTS terapi_operations_by_connection ON terapi_operations (integration, connection, id)`,
];
const COLUMNS = ['at', 'type', 'integration', 'connection', 'name', 'outcome', 'duration_ms', 'error', 'message', 'request_id', 'detail'] as const;

const cursor = idCursor('o', 'pass back a next_cursor unchanged');

const clip = (text: string | undefined, max = MAX_TEXT) => (text === undefined ? null : text.length > max ? `${text.slice(0, max - 1)}…` : text);

/**
 * The log of recent operations (connects, refreshes, sync runs, actions, proxy calls) with their
 * outcome, for the operator's dashboard and GET /operations: a table in the store's database that
 * keeps the last `size` of them. Recording is off the request's path: an operation is pushed to
 * a buffer in memory, written a batch at a time (every 200 ms, or at 500); while the database is
 * unreachable the buffer keeps the newest `size` and the rest are counted as dropped.
 */
export class OperationLog {
  private buffer: (Operation & { at: string })[] = [];
  private tail: Promise<void> = Promise.resolve();
  /** A write is queued and has not started: what is recorded now goes with it. */
  private queued = false;
  private timer: NodeJS.Timeout | undefined;
  private dropped = 0;
  private closed = false;

  constructor(
    private readonly sql: Sql,
    readonly size: number,
    private readonly log: Logger,
  ) {}

  async migrate(): Promise<void> {
    await createTables(this.sql, TABLE(this.sql.dialect === 'postgres'));
  }

  /** Records an operation; returns at once (the write happens within FLUSH_MS). */
  record(op: Operation): void {
    if (this.closed) return;
    this.buffer.push({ ...op, at: new Date().toISOString() });
    this.trim();
    if (this.buffer.length >= FLUSH_AT) {
      if (!this.queued) void this.flush();
    } else this.timer ??= setTimeout(() => void this.flush(), FLUSH_MS).unref();
  }

  /** Writes what is buffered (one statement), then drops what is past the log's size. Never throws. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    // One write at a time, in order. A write already queued takes everything buffered when it
    // starts, so it serves this flush too: a burst queues one write, not one per operation.
    if (!this.queued) {
      this.queued = true;
      this.tail = this.tail.then(() => this.write());
    }
    return this.tail;
  }

  private async write(): Promise<void> {
    this.queued = false;
    const batch = this.buffer.splice(0, this.buffer.length);
    if (!batch.length) return;
    const rows = batch.map((op) => storable([op.at, op.type, op.provider_config_key ?? null, op.connection_id ?? null, clip(op.name, 300), op.outcome, op.duration_ms === undefined ? null : Math.round(op.duration_ms), clip(op.error, 100), clip(op.message), op.request_id ?? null, op.detail ? JSON.stringify(op.detail) : null]));
    const elements = this.sql.dialect === 'postgres' ? 'json_array_elements($1::json)' : 'json_each($1)';
    const values = COLUMNS.map((c, i) => (c === 'duration_ms' ? `CAST(value ->> ${i} AS INTEGER)` : `value ->> ${i}`)).join(', ');
    try {
      await this.sql.transaction(async (tx) => {
        await tx.query(`INSERT INTO terapi_operations (${COLUMNS.join(', ')}) SELECT ${values} FROM ${elements}`, [JSON.stringify(rows)]);
        await tx.query(`DELETE FROM terapi_operations WHERE id <= (SELECT MAX(id) FROM terapi_operations) - $1`, [this.size]);
      });
      if (this.dropped) {
        this.log.warn({ dropped: this.dropped }, 'operations log: operations were dropped while the database could not be written');
        this.dropped = 0;
      }
    } catch (e) {
      // Kept for the next try, in order, within the bound.
      this.buffer.unshift(...batch);
      this.trim();
      this.log.warn({ err: (e as Error).message, pending: this.buffer.length }, 'operations log: could not write; retrying');
      if (!this.closed) this.timer ??= setTimeout(() => void this.flush(), RETRY_MS).unref();
    }
  }

  /**
   * While the database cannot be written, the buffer keeps the newest `size` operations; the older
   * ones are dropped (and counted) a tenth of the bound at a time, not one per operation recorded.
   */
  private trim(): void {
    const over = this.buffer.length - this.size;
    if (over < Math.max(1, this.size / 10)) return;
    this.dropped += over;
    this.buffer.splice(0, over);
  }

  /** GET /operations: newest first; this process's buffer is written first, so what it did is there. */
  async list(q: OperationsQuery): Promise<{ operations: OperationView[]; next_cursor: string | null }> {
    await this.flush();
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (clause: string, value: unknown) => {
      params.push(value);
      where.push(clause.replace('?', `$${params.length}`));
    };
    if (q.provider_config_key !== undefined) add('integration = ?', q.provider_config_key);
    if (q.connection_id !== undefined) add('connection = ?', q.connection_id);
    if (q.type !== undefined) add('type = ?', q.type);
    if (q.cursor !== undefined) add('id < ?', cursor.decode(q.cursor));
    const limit = q.limit ?? 50;
    params.push(limit + 1);
    // An outage is GET /operations' 503, as anywhere else.
    const rows = await guarded(() =>
      this.sql.query<Record<string, unknown>>(`SELECT * FROM terapi_operations ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT $${params.length}`, params),
    );
    const page = rows.slice(0, limit).map(view);
    return { operations: page, next_cursor: rows.length > limit ? page[page.length - 1].id : null };
  }

  /** Writes what is left and takes no more. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    clearTimeout(this.timer);
  }
}

function view(r: Record<string, unknown>): OperationView {
  const text = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const out: OperationView = { id: cursor.encode(Number(r.id)), at: r.at as string, type: r.type as OperationType, outcome: r.outcome as OperationOutcome };
  const optional = {
    provider_config_key: text(r.integration),
    connection_id: text(r.connection),
    name: text(r.name),
    duration_ms: r.duration_ms === null || r.duration_ms === undefined ? undefined : Number(r.duration_ms),
    error: text(r.error),
    message: text(r.message),
    request_id: text(r.request_id),
    detail: typeof r.detail === 'string' ? (JSON.parse(r.detail) as Record<string, unknown>) : undefined,
  };
  for (const [k, v] of Object.entries(optional)) if (v !== undefined) (out as unknown as Record<string, unknown>)[k] = v;
  return out;
}
