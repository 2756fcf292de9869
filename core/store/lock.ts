import pg from 'pg';
import { StoreUnavailable } from './store.ts';

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
 * length of `fn`. Released explicitly, and by PostgreSQL itself if the server dies holding it, or
 * if the link to it drops: the session ends, and the lock with it.
 */
export class PostgresLock implements Lock {
  private readonly pool: pg.Pool;

  constructor(url: string) {
    this.pool = new pg.Pool({ connectionString: url, max: 10, connectionTimeoutMillis: 10_000 });
    this.pool.on('error', () => {}); // an idle client dropped by the server: the pool replaces it
  }

  async run<T>(name: string, fn: () => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (e) {
      throw new StoreUnavailable(e);
    }
    // While checked out, a client has no listener of the pool's: without this one, a link dropped
    // during `fn` (a slow token request) raised an unhandled 'error' and ended the process. The
    // lock went with the session; `fn` runs on, and its conditional write keeps a parallel
    // refresh on another server from doing harm.
    let lost: Error | undefined;
    const onError = (e: Error) => (lost = e);
    client.on('error', onError);
    try {
      try {
        await client.query('SELECT pg_advisory_lock(hashtextextended($1, 0))', [name]);
      } catch (e) {
        lost = e as Error;
        throw new StoreUnavailable(e);
      }
      try {
        return await fn();
      } finally {
        if (!lost) await client.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [name]).catch((e: Error) => (lost = e));
      }
    } finally {
      // A client whose link failed is destroyed, not put back; it keeps its listener, since a
      // destroyed client may still report its error.
      if (!lost) client.off('error', onError);
      client.release(lost);
    }
  }

  async close() {
    await this.pool.end();
  }
}
