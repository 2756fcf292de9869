import pg from 'pg';

/** Runs `fn` while holding a named lock; for refreshing one connection at a time. */
export interface Lock {
  run<T>(name: string, fn: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** One process: a queue per name. The embedded store serves one server process. */
export class LocalLock implements Lock {
  private tails = new Map<string, Promise<unknown>>();

  async run<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(name) ?? Promise.resolve();
    const mine = before.catch(() => {}).then(fn);
    this.tails.set(name, mine);
    try {
      return await mine;
    } finally {
      if (this.tails.get(name) === mine) this.tails.delete(name);
    }
  }

  async close() {}
}

/**
 * Every server sharing one PostgreSQL: a session advisory lock, held on one pooled client for the
 * length of `fn`. Released explicitly, and by PostgreSQL itself if the server dies holding it.
 */
export class PostgresLock implements Lock {
  private readonly pool: pg.Pool;

  constructor(url: string) {
    this.pool = new pg.Pool({ connectionString: url, max: 10 });
    this.pool.on('error', () => {}); // an idle client dropped by the server: the pool replaces it
  }

  async run<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [name]);
      try {
        return await fn();
      } finally {
        await client.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [name]);
      }
    } finally {
      client.release();
    }
  }

  async close() {
    await this.pool.end();
  }
}
