import { badRequest } from './errors.ts';

/** How deep a JSON request body may nest: far beyond any real one, far below what recursion in the libraries that walk it can bear. */
export const MAX_JSON_DEPTH = 64;

/** The largest metadata kept on a connection or a connect session, as JSON. */
export const MAX_METADATA_BYTES = 64 * 1024;

/**
 * Text PostgreSQL's JSON functions cannot read back: a NUL character, or a lone surrogate (a string
 * that is not well-formed Unicode, which JSON.stringify writes as an escape PostgreSQL refuses).
 */
const UNSTORABLE = /[\p{Cs}\u0000]/u;
const UNSTORABLE_ALL = /[\p{Cs}\u0000]/gu;

/**
 * What is wrong with a JSON value, found without recursion (metadata nested thousands deep was once
 * written, and then could never be read, listed or deleted): nesting deeper than `limit`, or with
 * `storable`, text that could not be read back from the store.
 */
export function jsonProblem(value: unknown, limit: number, storable: boolean): 'depth' | 'unstorable' | undefined {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length) {
    const [node, depth] = stack.pop()!;
    if (typeof node === 'string') {
      if (storable && UNSTORABLE.test(node)) return 'unstorable';
      continue;
    }
    if (node === null || typeof node !== 'object') continue;
    if (depth >= limit) return 'depth';
    for (const [key, child] of Object.entries(node)) {
      if (storable && UNSTORABLE.test(key)) return 'unstorable';
      stack.push([child, depth + 1]);
    }
  }
  return undefined;
}

/**
 * Checks a JSON value given by a request before anything is done with it: its depth, with
 * `maxBytes` its size as JSON, and with `storable` (a value that may be stored) no NUL character.
 * A 400 naming the field otherwise.
 */
export function checkJson(value: unknown, field: string, options: { maxBytes?: number; storable?: boolean } = {}): void {
  const problem = jsonProblem(value, MAX_JSON_DEPTH, options.storable ?? false);
  if (problem === 'depth') throw badRequest('invalid_request', `${field} is nested more than ${MAX_JSON_DEPTH} levels deep`);
  if (problem === 'unstorable') throw badRequest('invalid_request', `${field} holds a NUL character or a lone surrogate (text that is not well-formed Unicode), which cannot be stored: remove it`);
  if (options.maxBytes !== undefined) {
    const bytes = Buffer.byteLength(JSON.stringify(value) ?? '');
    if (bytes > options.maxBytes) throw badRequest('invalid_request', `${field} is ${bytes} bytes as JSON; at most ${options.maxBytes} are kept`);
  }
}

/**
 * A value made storable: each NUL character and lone surrogate replaced by U+FFFD. Requests are
 * refused such text before this (checkJson); this keeps what providers give (an error message, a
 * metadata value) from making a row the database cannot read. The same value when nothing changes.
 */
export function storable<T>(value: T): T {
  if (jsonProblem(value, Infinity, true) !== 'unstorable') return value;
  const clean = (v: unknown): unknown => {
    if (typeof v === 'string') return v.replace(UNSTORABLE_ALL, '\ufffd');
    if (Array.isArray(v)) return v.map(clean);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [clean(k), clean(x)]));
    return v;
  };
  return clean(value) as T;
}
