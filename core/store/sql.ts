import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import sqlite3 from 'sqlite3';

/**
 * Plain SQL on the store's database, for what a key-value store cannot express: synced records
 * (ordered cursor reads, batch upserts with change detection) and sync state written in the same
 * transaction (PRODUCT.md, "Storage"). The driver is the one keyv's adapter already brings.
 *
 * SQL is written once, PostgreSQL style: `$1`, `$2` parameters, which SQLite reads as `?1`, `?2`
 * (the same numbered binding, a parameter used twice is one value).
 */
export interface Sql {
  readonly dialect: 'sqlite' | 'postgres';
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Runs `fn` in one transaction: all of it commits, or none of it. */
  transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export type SqlTx = Pick<Sql, 'dialect' | 'query'>;

export function openSql(options: { databaseUrl?: string; dataDir: string; poolSize?: number }): Sql {
  if (options.databaseUrl) return new PostgresSql(options.databaseUrl, options.poolSize ?? 10);
  mkdirSync(options.dataDir, { recursive: true });
  return new SqliteSql(join(options.dataDir, 'terapi.sqlite'));
}

/** Runs CREATE ... IF NOT EXISTS statements; safe from every process at once. */
export async function createTables(sql: Sql, statements: string[]): Promise<void> {
  if (sql.dialect === 'sqlite') {
    for (const statement of statements) await sql.query(statement);
    return;
  }
  // Two servers starting together would race on CREATE TABLE IF NOT EXISTS: one lock serialises them.
  await sql.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(hashtext('terapi_migrate'))`);
    for (const statement of statements) await tx.query(statement);
  });
}

class PostgresSql implements Sql {
  readonly dialect = 'postgres';
  private readonly pool: pg.Pool;

  constructor(url: string, max: number) {
    this.pool = new pg.Pool({ connectionString: url, max });
    // An idle client that PostgreSQL drops is discarded by the pool; without a listener the
    // pool would re-throw and end the process. The next query opens a new connection.
    this.pool.on('error', () => {});
  }

  async query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return (await this.pool.query(sql, params)).rows as T[];
  }

  async transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    // A link cut while the client is checked out is an 'error' event on the client itself.
    const onError = () => {};
    client.on('error', onError);
    let broken = false;
    try {
      await client.query('BEGIN');
      const result = await fn({ dialect: 'postgres', query: async (sql, params = []) => (await client.query(sql, params)).rows as any });
      await client.query('COMMIT');
      return result;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => (broken = true));
      throw e;
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Prepared statements an SQLite handle keeps. */
const MAX_STATEMENTS = 200;

/**
 * One SQLite handle. Statements on a handle share its transaction, so everything that goes
 * through this one is queued: a transaction holds the queue until it ends, and no other caller's
 * statement can slip into it. Other handles (keyv's) wait for the write lock (busy timeout) rather
 * than fail. One statement at a time also means one of libuv's pool threads at most, waiting for
 * the lock included: keyv's handle is kept to one as well (store.ts, oneAtATime), so the holder of
 * the lock always finds a thread to release it on.
 */
class SqliteSql implements Sql {
  readonly dialect = 'sqlite';
  private readonly db: sqlite3.Database;
  /**
   * Statements prepared once and kept, by text: a sync page's statements run thousands of times,
   * and preparing one costs about as much as running it. The texts are the program's own (values
   * are always parameters), so they are few; the bound only guards against a caller that varies them.
   */
  private readonly statements = new Map<string, sqlite3.Statement>();
  private tail: Promise<unknown> = Promise.resolve();
  private readonly ready: Promise<void>;

  constructor(file: string) {
    this.db = new sqlite3.Database(file);
    this.ready = (async () => {
      await this.raw('PRAGMA busy_timeout = 30000');
      await this.raw('PRAGMA journal_mode = WAL');
      await this.raw('PRAGMA synchronous = NORMAL');
    })();
  }

  private raw<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return new Promise((resolve, reject) => {
      const statement = this.prepared(sql);
      statement.all(params, (err: Error | null, rows: unknown[]) => {
        if (!err) return resolve(rows as T[]);
        // Rare (bad SQL, a constraint, a busy database): the statement is prepared afresh next time.
        this.forget(sql);
        reject(err);
      });
    });
  }

  private prepared(sql: string): sqlite3.Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      if (this.statements.size >= MAX_STATEMENTS) this.forget(this.statements.keys().next().value!);
      statement = this.db.prepare(sql.replace(/\$(\d+)/g, '?$1'));
      // A statement that does not prepare also answers its run with the error: that is where it is reported.
      statement.on('error', () => {});
      this.statements.set(sql, statement);
    }
    return statement;
  }

  private forget(sql: string): void {
    this.statements.get(sql)?.finalize();
    this.statements.delete(sql);
  }

  private queued<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(() => this.ready).then(fn);
    this.tail = run.catch(() => {});
    return run;
  }

  query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return this.queued(() => this.raw<T>(sql, params));
  }

  transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T> {
    return this.queued(async () => {
      // IMMEDIATE: take the write lock now, so the reads inside see what the writes will build on.
      await this.raw('BEGIN IMMEDIATE');
      try {
        const result = await fn({ dialect: 'sqlite', query: (sql, params) => this.raw(sql, params) });
        await this.raw('COMMIT');
        return result;
      } catch (e) {
        await this.raw('ROLLBACK').catch(() => {});
        throw e;
      }
    });
  }

  close(): Promise<void> {
    return this.queued(() => {
      // SQLite will not close a database that still has statements.
      for (const sql of [...this.statements.keys()]) this.forget(sql);
      return new Promise<void>((resolve, reject) => this.db.close((err) => (err ? reject(err) : resolve())));
    });
  }
}
