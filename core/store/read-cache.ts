/**
 * The embedded store's copy of recently read values, kept in step by every write of this process.
 * Only for the embedded store, where one server process owns the database file (command-line tools
 * go through its API): with PostgreSQL, other servers write too, and nothing could keep it right.
 * Values are deep-frozen copies, shared by every reader: a caller that wants to change one must
 * copy it (and a caller that forgets gets a TypeError, not a cache silently out of step).
 */
export class ReadCache {
  private readonly entries = new Map<string, { value: unknown; expires?: number }>();

  constructor(private readonly max = 10_000) {}

  /** The value, or undefined when this key is not cached (or has expired). */
  get<T>(key: string): { value: T } | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    if (entry.expires !== undefined && entry.expires <= Date.now()) return undefined;
    this.entries.set(key, entry); // most recently used last
    return { value: entry.value as T };
  }

  set(key: string, value: unknown, ttlMs?: number): void {
    this.entries.delete(key);
    this.entries.set(key, { value: deepFreeze(structuredClone(value)), expires: ttlMs === undefined ? undefined : Date.now() + ttlMs });
    if (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value!);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  deletePrefix(prefix: string): void {
    for (const key of this.entries.keys()) if (key.startsWith(prefix)) this.entries.delete(key);
  }
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
