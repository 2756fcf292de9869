import { LRUCache } from 'lru-cache';
import { deepFreeze } from '../deep-freeze.ts';

/**
 * The embedded store's copy of recently read values, kept in step by every write of this process.
 * Only for the embedded store, where one server process owns the database file (command-line tools
 * go through its API): with PostgreSQL, other servers write too, and nothing could keep it right.
 * Values are deep-frozen copies, shared by every reader: a caller that wants to change one must
 * copy it (and a caller that forgets gets a TypeError, not a cache silently out of step).
 */
export class ReadCache {
  /** Values are wrapped: lru-cache cannot hold undefined or null, a stored value can be null. */
  private readonly entries: LRUCache<string, { value: unknown }>;

  constructor(max = 10_000) {
    this.entries = new LRUCache({ max });
  }

  /** The value, or undefined when this key is not cached (or has expired). */
  get<T>(key: string): { value: T } | undefined {
    return this.entries.get(key) as { value: T } | undefined;
  }

  set(key: string, value: unknown, ttlMs?: number): void {
    // A ttl of 0 means "never expires" to lru-cache: a value already past its time is not kept.
    if (ttlMs !== undefined && ttlMs <= 0) this.entries.delete(key);
    else this.entries.set(key, { value: deepFreeze(structuredClone(value)) }, { ttl: ttlMs && Math.ceil(ttlMs) });
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  deletePrefix(prefix: string): void {
    for (const key of [...this.entries.keys()]) if (key.startsWith(prefix)) this.entries.delete(key);
  }
}
