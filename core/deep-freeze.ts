/**
 * A value frozen through and through, for values shared by every reader (the store's read cache,
 * opened credentials): a reader that changes one by mistake gets a TypeError, rather than changing
 * what every other reader sees.
 */
export function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
