import Keyv from 'keyv';
import KeyvPostgres from '@keyv/postgres';
import KeyvSqlite from '@keyv/sqlite';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { ConfigError } from '../config.ts';
import { badRequest, TerapiError } from '../errors.ts';
import { ReadCache } from './read-cache.ts';
import { storable } from '../json-limits.ts';

/**
 * The pool inside @keyv/postgres has no 'error' listener, so an idle connection that PostgreSQL
 * drops (a restart, a network cut) would re-throw from the pool and end the process. The pool has
 * already discarded that connection when it re-throws; catching it here lets the next query open a
 * new one, which is how the server recovers by itself when the database returns.
 */
class SurvivingClient extends pg.Client {
  emit(event: string | symbol, ...args: unknown[]): boolean {
    try {
      return super.emit(event, ...args);
    } catch (e) {
      if (event === 'error') return true;
      throw e;
    }
  }
}

type Query = (sql: string, params: unknown[]) => Promise<Record<string, unknown>[]>;

/** Raised when the database cannot be reached: the API answers 503 and retries on the next call. */
export class StoreUnavailable extends TerapiError {
  constructor(cause: unknown) {
    super(503, 'store_unavailable', `the database cannot be reached (${(cause as Error)?.message ?? cause}); try again shortly`);
  }
}

/**
 * Whether an error means the database cannot be reached now (a 503 worth retrying), rather than a
 * mistake in what was asked of it (a bug, which must not pass for an outage): a socket that failed
 * or closed, a pool that could not connect in time, PostgreSQL's connection exceptions (class 08),
 * its shutdowns (57P0x) and insufficient resources (53), SQLite busy or unable to use its file.
 */
export function isUnreachable(e: unknown): boolean {
  const err = e as { code?: unknown; message?: unknown } | undefined;
  const code = typeof err?.code === 'string' ? err.code : '';
  const message = typeof err?.message === 'string' ? err.message : '';
  return (
    /^(08|57P0|53)/.test(code) ||
    /^(ECONNREFUSED|ECONNRESET|ECONNABORTED|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN)$/.test(code) ||
    /^SQLITE_(BUSY|LOCKED|CANTOPEN|IOERR|FULL)/.test(code) ||
    /Connection terminated|not queryable|timeout exceeded when trying to connect|connect ECONNREFUSED/i.test(message)
  );
}

/** Runs a read or write of the database: an outage becomes StoreUnavailable (503); any other error is a bug, and stays one. */
export async function guarded<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    if (!(e instanceof TerapiError) && isUnreachable(e)) throw new StoreUnavailable(e);
    throw e;
  }
}

/**
 * A row that must exist, holding `equals` in the field `field` of its value, for a write to happen:
 * a connection is written only while its integration is there and is the same one (not another of
 * the same key made since).
 */
export interface Requires {
  key: string;
  field: string;
  equals: string;
}

/** A field of a stored value that must still hold what the writer read, for its write to happen. */
export interface Expects {
  field: string;
  equals: string;
}

/**
 * keyv's stored format (JSON, with a string that starts with ':' escaped by one more ':'), written
 * as plain data: keyv's own serializer calls any `toJSON` it finds, so a field named toJSON in
 * metadata broke every write of it.
 */
const serialize = (data: unknown) => JSON.stringify(data, (_key, value) => (typeof value === 'string' && value.startsWith(':') ? `:${value}` : value));

/**
 * The read by key, a named statement: PostgreSQL parses and plans it once per connection rather
 * than on every read (pg passes a query config given in place of the text through @keyv/postgres).
 */
const READ_BY_KEY = { name: 'terapi_read_by_key', text: 'SELECT value FROM keyv WHERE key = $1' };
/** Where a JSON text may hold a string value that starts with ':' (escaped by `serialize`); strings' own quotes are escaped, so none hides inside one. */
const ESCAPED_STRING = /[:,[]":/;
/** keyv's default deserializer's reviver (@keyv/serialize), for the texts that need it. */
const unescapeString = (_key: string, value: unknown) =>
  typeof value === 'string' && value.startsWith(':') ? (value.startsWith(':base64:') ? Buffer.from(value.slice(8), 'base64') : value.slice(1)) : value;

/**
 * Entities and state in keyv (PRODUCT.md, "Storage"): one table `keyv(key, value)` in SQLite or
 * PostgreSQL. Keys are `kind/part/part` with each part percent-encoded, so a `/` or `:` inside an
 * id can never make two keys collide. Listing and single-use reads go to the table through the
 * driver the adapter already holds: keyv has no prefix scan, and no atomic get-and-delete.
 */
export class Store {
  private constructor(
    private readonly keyv: Keyv,
    private readonly query: Query,
    readonly dialect: 'sqlite' | 'postgres',
    private readonly close: () => Promise<void>,
    /** Embedded store only: see ReadCache. Reads by key are behind every API request. */
    private readonly cache?: ReadCache,
  ) {
    // With throwOnErrors an outage reaches the caller as an error; the listener keeps keyv from
    // also raising it as an unhandled 'error' event.
    keyv.on('error', () => {});
  }

  /**
   * Opens the store and reaches it once, so that a start with a database it cannot use fails at
   * once with a ConfigError naming the setting, rather than answering 503 to every call.
   */
  static async open(options: { databaseUrl?: string; dataDir: string }): Promise<Store> {
    if (options.databaseUrl) {
      // A bounded connect: an address that drops packets would otherwise hold a start (or a call
      // during an outage) for the system's TCP timeout, minutes.
      const adapter = new KeyvPostgres({ uri: options.databaseUrl, keySize: 1024, iterationLimit: 500, max: 20, connectionTimeoutMillis: 10_000, Client: SurvivingClient } as any);
      const keyv = new Keyv({ store: adapter, namespace: '', throwOnErrors: true, serialize } as any);
      const store = new Store(keyv, (sql, params) => adapter.query(sql, params as any) as Promise<any>, 'postgres', () => adapter.disconnect());
      try {
        await store.query('SELECT 1', []);
      } catch (e) {
        await store.close().catch(() => {});
        throw new ConfigError(`TERAPI_DATABASE_URL: the database cannot be reached: ${(e as Error).message || (e as NodeJS.ErrnoException).code}`);
      }
      return store;
    }
    const file = join(options.dataDir, 'terapi.sqlite');
    try {
      mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
      privateFiles(file);
      const adapter = new KeyvSqlite({ uri: `sqlite://${file}`, busyTimeout: 30_000, keySize: 1024 } as any);
      const serial = oneAtATime(adapter);
      const run: Query = (sql, params) => (adapter as any).query(sql, ...params);
      // WAL lets readers and the writer work at once; the busy timeout makes a second handle wait
      // for a write lock instead of failing.
      await run('PRAGMA journal_mode=WAL', []);
      await run('PRAGMA synchronous=NORMAL', []);
      privateFiles(file);
      const keyv = new Keyv({ store: adapter, namespace: '', throwOnErrors: true, serialize } as any);
      return new Store(keyv, run, 'sqlite', () => serial(() => (adapter as any).close()), new ReadCache());
    } catch (e) {
      throw new ConfigError(`TERAPI_DATA_DIR: the embedded store ${file} cannot be opened: ${(e as Error).message}`);
    }
  }

  /** The first n parameter placeholders in this database's SQL, numbered: a statement may use them in any order. */
  private params(n: number): string[] {
    return Array.from({ length: n }, (_, i) => (this.dialect === 'postgres' ? `$${i + 1}` : `?${i + 1}`));
  }

  static key(...parts: string[]): string {
    return parts
      .map((part) => {
        // encodeURIComponent throws on a lone surrogate; no stored key can hold one (ids are checked
        // when made), so such an id names nothing, and the request asking for it is malformed.
        if (LONE_SURROGATE.test(part)) throw badRequest('invalid_request', `the id ${JSON.stringify(part)} is not well-formed Unicode (it holds a lone surrogate)`);
        return encodeURIComponent(part);
      })
      .join('/');
  }

  async get<T>(key: string): Promise<T | undefined> {
    const cached = this.cache?.get<T>(key);
    if (cached) return cached.value;
    if (!this.cache) return this.read<T>(key);
    const raw = (await this.guard(() => this.keyv.get(key, { raw: true }))) as { value: T; expires?: number | null } | undefined;
    if (raw === undefined) return undefined;
    this.cache.set(key, raw.value, typeof raw.expires === 'number' ? raw.expires - Date.now() : undefined);
    return this.cache.get<T>(key)?.value ?? raw.value;
  }

  /**
   * A read by key straight from the table (PostgreSQL: every API request reads its connection so),
   * in keyv's format but not through keyv, whose get parses the JSON with a reviver, a call per
   * value to unescape strings that start with ':' (a fifth of a token read's CPU time on
   * PostgreSQL, bench/api.ts): here the reviver runs only on a text that holds such a string. An
   * expired value goes through keyv, which deletes it.
   */
  private async read<T>(key: string): Promise<T | undefined> {
    const rows = await this.guard(() => this.query(READ_BY_KEY as unknown as string, [key]));
    const text = rows[0]?.value;
    if (typeof text !== 'string') return undefined;
    const data = (ESCAPED_STRING.test(text) ? JSON.parse(text, unescapeString) : JSON.parse(text)) as { value: T; expires?: number | null };
    if (typeof data.expires === 'number' && Date.now() > data.expires) return (await this.guard(() => this.keyv.get(key))) as T | undefined;
    return data.value;
  }

  async set<T>(key: string, given: T, ttlMs?: number): Promise<void> {
    const value = storable(given);
    this.cache?.delete(key);
    await this.guard(() => this.keyv.set(key, value, ttlMs));
    this.cache?.set(key, value, ttlMs);
  }

  /**
   * Writes a value only if the key is free, in one statement: of two concurrent creations of the
   * same integration or connection, one succeeds and the other learns the key is taken. With
   * `requires`, only while that other row exists and holds that value; on PostgreSQL the row is
   * locked for share until the insert commits, so a delete of it waits for the insert, and a
   * delete that came first leaves nothing to insert under.
   */
  async add<T>(key: string, given: T, requires?: Requires): Promise<boolean> {
    const value = storable(given);
    const p = this.params(requires ? 4 : 2);
    const raw = serialize({ value });
    let sql = `INSERT INTO keyv (key, value) VALUES (${p[0]}, ${p[1]}) ON CONFLICT (key) DO NOTHING RETURNING key`;
    if (requires) {
      const row = `SELECT 1 FROM keyv WHERE key = ${p[2]} AND ${this.field(requires.field, p[2])} = ${p[3]}`;
      sql =
        this.dialect === 'postgres'
          ? `WITH required AS (${row} FOR SHARE) INSERT INTO keyv (key, value) SELECT ${p[0]}, ${p[1]} FROM required ON CONFLICT (key) DO NOTHING RETURNING key`
          : `INSERT INTO keyv (key, value) SELECT ${p[0]}, ${p[1]} WHERE EXISTS (${row}) ON CONFLICT (key) DO NOTHING RETURNING key`;
    }
    const rows = await this.guard(() => this.query(sql, requires ? [key, raw, requires.key, requires.equals] : [key, raw]));
    if (rows.length) this.cache?.set(key, value);
    return rows.length > 0;
  }

  /**
   * Overwrites a value only if it is still there and its `expects.field` still holds what the
   * writer read, in one statement: a write that lost a race with a delete (or with another write)
   * touches nothing, and the caller learns it (false). A delete is final.
   */
  async replace<T>(key: string, given: T, expects: Expects): Promise<boolean> {
    const value = storable(given);
    const p = this.params(3);
    const raw = serialize({ value });
    this.cache?.delete(key);
    const rows = await this.guard(() => this.query(`UPDATE keyv SET value = ${p[1]} WHERE key = ${p[0]} AND ${this.field(expects.field, p[0])} = ${p[2]} RETURNING key`, [key, raw, expects.equals]));
    if (rows.length) this.cache?.set(key, value);
    return rows.length > 0;
  }

  async delete(key: string): Promise<boolean> {
    this.cache?.delete(key);
    return this.guard(() => this.keyv.delete(key));
  }

  /**
   * SQL reading one top-level field of the value stored at the key given by parameter `keyParam`, as
   * text ('' when absent). Only that row is ever parsed (CASE decides the order, whatever plan the
   * database picks), so no other row can make the statement fail. Field names come from this code,
   * never from a request; they are checked anyway, since they are put in the SQL.
   */
  private field(name: string, keyParam: string): string {
    if (!/^[a-z_]+$/.test(name)) throw new Error(`not a field name: ${name}`);
    const read = this.dialect === 'postgres' ? `(value::jsonb -> 'value' ->> '${name}')` : `json_extract(value, '$.value.${name}')`;
    return `coalesce(CASE WHEN key = ${keyParam} THEN ${read} END, '')`;
  }

  /** Every live value whose key starts with `prefix` (a key from Store.key plus '/'), in key order; the first `limit` only if given. */
  async list<T>(prefix: string, limit?: number): Promise<T[]> {
    const p = this.params(2);
    const rows = await this.guard(() =>
      this.query(`SELECT key, value FROM keyv WHERE substr(key, 1, ${p[0]}) = ${p[1]} ORDER BY key${limit === undefined ? '' : ` LIMIT ${Math.floor(limit)}`}`, [prefix.length, prefix]),
    );
    const values = await Promise.all(rows.map((r) => this.live<T>(r.value as string)));
    return values.filter((v) => v !== undefined) as T[];
  }

  /** How many values have keys starting with `prefix`; for prefixes whose values have no TTL (connections). */
  async count(prefix: string): Promise<number> {
    const p = this.params(2);
    const rows = await this.guard(() => this.query(`SELECT count(*) AS n FROM keyv WHERE substr(key, 1, ${p[0]}) = ${p[1]}`, [prefix.length, prefix]));
    return Number(rows[0].n);
  }

  /** Deletes every value whose key starts with `prefix`. */
  async deletePrefix(prefix: string): Promise<void> {
    const p = this.params(2);
    this.cache?.deletePrefix(prefix);
    await this.guard(() => this.query(`DELETE FROM keyv WHERE substr(key, 1, ${p[0]}) = ${p[1]}`, [prefix.length, prefix]));
  }

  /** Reads and deletes in one statement: of any number of concurrent callers, one gets the value. */
  async take<T>(key: string): Promise<T | undefined> {
    this.cache?.delete(key);
    const rows = await this.guard(() => this.query(`DELETE FROM keyv WHERE key = ${this.params(1)[0]} RETURNING value`, [key]));
    return rows.length ? this.live<T>(rows[0].value as string) : undefined;
  }

  /** Deletes every value whose key starts with `prefix`, in one statement, and answers what it deleted. */
  async takePrefix<T>(prefix: string): Promise<T[]> {
    const p = this.params(2);
    this.cache?.deletePrefix(prefix);
    const rows = await this.guard(() => this.query(`DELETE FROM keyv WHERE substr(key, 1, ${p[0]}) = ${p[1]} RETURNING value`, [prefix.length, prefix]));
    const values = await Promise.all(rows.map((r) => this.live<T>(r.value as string)));
    return values.filter((v) => v !== undefined) as T[];
  }

  /** One cheap round trip, for /health. */
  async ping(): Promise<void> {
    await this.guard(() => this.query('SELECT 1', []));
  }

  async disconnect(): Promise<void> {
    await this.close();
  }

  /** Reads a raw row as keyv wrote it: keyv's own serializer escapes some strings (a leading `:`). */
  private async live<T>(raw: string): Promise<T | undefined> {
    const data = (await this.keyv.deserialize!(raw)) as { value: T; expires?: number | null } | undefined;
    if (!data) return undefined;
    if (typeof data.expires === 'number' && data.expires < Date.now()) return undefined;
    return data.value;
  }

  private guard<T>(run: () => Promise<T>): Promise<T> {
    return guarded(run);
  }
}

const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Makes keyv's SQLite handle run one statement at a time, as the Sql handle does (sql.ts), and
 * answers the queue for other calls (the close). Each statement runs on a thread of libuv's pool
 * (4 threads: UV_THREADPOOL_SIZE cannot be raised from inside an ES module, the loader has started
 * the pool by then), and holds it while it waits for the file's write lock; so does every other
 * statement sent to the same handle meanwhile, waiting for the handle's mutex. A burst of writes
 * during a transaction of the Sql handle (the operations log's flush, a sync page) took every
 * thread, and the transaction's next statement, which would have released the lock, had none to
 * run on: each write waited out the busy timeout (30 s) in turn and failed, 503 store_unavailable.
 * Queued here, they wait in JavaScript, and the two handles hold at most one thread each.
 */
function oneAtATime(adapter: KeyvSqlite): <T>(fn: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn);
    tail = run.catch(() => {});
    return run;
  };
  // keyv's get, set and delete, and this store's own SQL, all go through the adapter's query.
  const query = (adapter as any).query as (...args: unknown[]) => Promise<unknown>;
  (adapter as any).query = (...args: unknown[]) => serial(() => query(...args));
  return serial;
}

/**
 * The embedded database and its -wal and -shm files, readable by this user only (like keys.json):
 * made 0600 before SQLite opens the file, since SQLite gives its -wal and -shm files the mode of the
 * database file; a file made by an earlier version is narrowed too.
 */
function privateFiles(file: string) {
  if (!existsSync(file)) closeSync(openSync(file, 'a', 0o600));
  for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
}
