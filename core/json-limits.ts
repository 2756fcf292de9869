import { badRequest } from './errors.ts';

/** How deep a JSON request body may nest: far beyond any real one, far below what recursion in the libraries that walk it can bear. */
export const MAX_JSON_DEPTH = 64;

/** The largest metadata kept on a connection or a connect session, as JSON. */
export const MAX_METADATA_BYTES = 64 * 1024;

/**
 * Whether a JSON value nests deeper than `limit` levels, found without recursion: metadata nested
 * thousands deep was once written, and then could never be read, listed or deleted.
 */
export function nestsDeeperThan(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    if (depth >= limit) return true;
    for (const child of Object.values(node)) if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
  }
  return false;
}

/**
 * Checks a JSON value given by a request before anything is done with it: its depth, and with
 * `maxBytes` its size as JSON. A 400 naming the field otherwise.
 */
export function checkJson(value: unknown, field: string, maxBytes?: number): void {
  if (nestsDeeperThan(value, MAX_JSON_DEPTH)) throw badRequest('invalid_request', `${field} is nested more than ${MAX_JSON_DEPTH} levels deep`);
  if (maxBytes !== undefined) {
    const bytes = Buffer.byteLength(JSON.stringify(value) ?? '');
    if (bytes > maxBytes) throw badRequest('invalid_request', `${field} is ${bytes} bytes as JSON; at most ${maxBytes} are kept`);
  }
}
