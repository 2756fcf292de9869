import jsonata from 'jsonata';
import { RE2JS } from 're2js';

/**
 * Every regular expression of a provider file (an api_key pattern, connection_config patterns,
 * action input schemas, JSONata regexes) runs on end-user input, so it runs on RE2 (re2js): time
 * linear in the input, whatever the pattern. With the backtracking engine, `(a+)+b` against a
 * 28-character key froze the whole server for 5.7 s, doubling with each character. What RE2
 * cannot run (backreferences, lookarounds) is refused when the file loads.
 */

/** A pattern JavaScript accepts but RE2 refuses (a lookaround, a backreference). */
export class LinearTimeError extends Error {}

const FLAGS: Record<string, number> = { i: RE2JS.CASE_INSENSITIVE, m: RE2JS.MULTILINE, s: RE2JS.DOTALL };

/** Compiled patterns, by flags and source: a provider file has few, each used on many requests. */
const compiled = new Map<string, RE2JS>();

/**
 * Compiles a pattern written for JavaScript on RE2. `\uXXXX` and `\u{X}` become RE2's `\x{X}`; the
 * JavaScript-only flags g, u and y mean nothing here (matching is by code point; callers say where
 * to start). Throws LinearTimeError saying what RE2 refused and what to do, or JavaScript's own
 * error for a pattern that is simply invalid.
 */
export function compileRegex(pattern: string, flags = ''): RE2JS {
  const key = `${flags}/${pattern}`;
  let re = compiled.get(key);
  if (re) return re;
  let bits = 0;
  for (const f of flags) bits |= FLAGS[f] ?? 0;
  try {
    re = RE2JS.compile(translate(pattern), bits);
  } catch (e) {
    // A pattern JavaScript refuses too is simply invalid: its own message says best what is wrong.
    new RegExp(pattern, flags.replace(/[^dgimsuvy]/g, ''));
    const why = (e as Error).message.replace(/^error parsing regexp: /, '');
    throw new LinearTimeError(`/${pattern}/: ${why}; rewrite it without lookarounds or backreferences`);
  }
  if (compiled.size >= 10_000) compiled.delete(compiled.keys().next().value!);
  compiled.set(key, re);
  return re;
}

/** Whether the whole value matches the pattern (a pattern "anchored for you"). */
export function fullMatch(pattern: string, value: string): boolean {
  return compileRegex(pattern).testExact(value);
}

function translate(pattern: string): string {
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c !== '\\') {
      out += c;
      continue;
    }
    const rest = pattern.slice(i + 1);
    const unicode = /^u([0-9a-fA-F]{4})/.exec(rest) ?? /^u\{([0-9a-fA-F]{1,6})\}/.exec(rest);
    if (unicode) {
      out += `\\x{${unicode[1]}}`;
      i += unicode[0].length;
    } else {
      out += c + (pattern[i + 1] ?? '');
      i++;
    }
  }
  return out;
}

/**
 * The RegexEngine JSONata is given (jsonata(source, { RegexEngine })): it is constructed with the
 * regex literal JSONata parsed, and used as JSONata uses a global RegExp: `lastIndex` says where
 * to search from, `exec` answers a match array (or null) and moves `lastIndex` past the match.
 */
export class Re2RegExp {
  lastIndex = 0;
  private readonly re: RE2JS;

  constructor(regex: RegExp | string, flags?: string) {
    this.re = typeof regex === 'string' ? compileRegex(regex, flags) : compileRegex(regex.source, regex.flags);
  }

  exec(text: string): (RegExpExecArray & string[]) | null {
    const m = this.re.matcher(text);
    if (this.lastIndex > text.length || !m.find(this.lastIndex)) {
      this.lastIndex = 0;
      return null;
    }
    const groups: (string | undefined)[] = [];
    for (let i = 0; i <= this.re.groupCount(); i++) groups.push(m.group(i) ?? undefined);
    this.lastIndex = m.end();
    return Object.assign(groups, { index: m.start(), input: text }) as RegExpExecArray;
  }

  test(text: string): boolean {
    return this.exec(text) !== null;
  }
}

/**
 * For Ajv's `code.regExp` option: the `pattern` and `patternProperties` of action input schemas,
 * on RE2. The string form is Ajv's cache key, so it must tell patterns apart.
 */
export const ajvRegExp = Object.assign(
  (pattern: string, flags: string): { test(text: string): boolean; toString(): string } => {
    const re = compileRegex(pattern);
    return { test: (text) => re.test(text), toString: () => `/${pattern}/${flags}` };
  },
  // What Ajv would write in standalone code (never generated here).
  { code: 'ajvRegExp' },
);

/**
 * The regex literals of a JSONata expression, each checked on RE2, for load errors: JSONata itself
 * builds its regexes only when it evaluates. Only an expression with a `/` can hold one.
 */
export function checkExpressionRegexes(source: string): void {
  if (!source.includes('/')) return;
  const seen = new WeakSet<object>();
  const walk = (node: unknown): void => {
    if (node instanceof RegExp) {
      compileRegex(node.source, node.flags);
      return;
    }
    if (!node || typeof node !== 'object' || seen.has(node)) return;
    seen.add(node);
    for (const child of Object.values(node)) walk(child);
  };
  walk(jsonata(source).ast());
}
