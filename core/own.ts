/**
 * A named entry of a record that comes from a provider file or a request (an action, a sync, a
 * connection_config field): only the record's own entries count. `provider.actions[name]` with the
 * name `constructor` found Object.prototype's and ran it.
 */
export function own<T>(record: Record<string, T> | undefined, name: string): T | undefined {
  return record !== undefined && Object.hasOwn(record, name) ? record[name] : undefined;
}
