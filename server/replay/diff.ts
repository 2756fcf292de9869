import { stringify } from 'yaml';

/** A value as the YAML a recording or snapshot shows it: what diffs are made of. */
export const toYaml = (value: unknown): string => (value === undefined ? '' : stringify(value, { lineWidth: 0, aliasDuplicateObjects: false }));

/** Deep equality of JSON values; the order of an object's keys does not count. */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === (b as unknown[]).length && a.every((v, i) => sameJson(v, (b as unknown[])[i]));
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  return ka.length === kb.length && ka.every((k) => sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/**
 * A line diff of two texts (longest common subsequence), `-` for what was expected and `+` for what
 * came, with `context` unchanged lines around each change and `...` between distant changes.
 */
export function diffLines(expected: string, actual: string, context = 3): string {
  const a = expected.replace(/\n$/, '').split('\n');
  const b = actual.replace(/\n$/, '').split('\n');
  // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
  const lcs = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  }
  const lines: { mark: ' ' | '-' | '+'; text: string }[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) lines.push({ mark: ' ', text: a[i++] }), j++;
    else if (i < a.length && (j === b.length || lcs[i + 1][j] >= lcs[i][j + 1])) lines.push({ mark: '-', text: a[i++] });
    else lines.push({ mark: '+', text: b[j++] });
  }
  const near = lines.map((_, k) => lines.slice(Math.max(0, k - context), k + context + 1).some((l) => l.mark !== ' '));
  const out: string[] = [];
  lines.forEach((l, k) => {
    if (near[k]) out.push(`${l.mark} ${l.text}`);
    else if (near[k - 1] || (k === 0 && !near[0])) out.push('  ...');
  });
  return out.join('\n');
}

/** `{ $match: "<regular expression>" }` in a recording: any string it matches, for values that change on every run (a nonce, a signed JWT). */
export const isMatcher = (v: unknown): v is { $match: string } =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 1 && typeof (v as { $match?: unknown }).$match === 'string';

/**
 * The expected value with each `$match` that the actual value satisfies replaced by that value: what
 * is left different is a real difference, and a diff shows only that.
 */
export function unify(expected: unknown, actual: unknown): unknown {
  if (isMatcher(expected)) return typeof actual === 'string' && new RegExp(expected.$match).test(actual) ? actual : expected;
  if (Array.isArray(expected)) return expected.map((v, i) => unify(v, Array.isArray(actual) ? actual[i] : undefined));
  if (expected && typeof expected === 'object') {
    const other = actual && typeof actual === 'object' && !Array.isArray(actual) ? (actual as Record<string, unknown>) : {};
    return Object.fromEntries(Object.entries(expected).map(([k, v]) => [k, unify(v, other[k])]));
  }
  return expected;
}
