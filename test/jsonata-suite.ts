/**
 * JSONata 2.2.2's test suite (test/fixtures/jsonata-test-suite, described in its TESTSUITE.md), read as
 * cases, and the comparisons the differential tests need.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';

const ROOT = new URL('./fixtures/jsonata-test-suite/', import.meta.url).pathname;

export interface SuiteCase {
  name: string;
  expr: string;
  input: unknown;
  bindings: Record<string, unknown>;
  /** What the suite expects: a result (undefined for `undefinedResult`), or an error with a code. */
  expected: { result: unknown } | { code: string; token?: string; message?: string };
  timelimit?: number;
  depth?: number;
}

export function suiteCases(): SuiteCase[] {
  const datasets = new Map<string, unknown>();
  for (const file of readdirSync(join(ROOT, 'datasets'))) datasets.set(file.replace(/\.json$/, ''), JSON.parse(readFileSync(join(ROOT, 'datasets', file), 'utf8')));
  const cases: SuiteCase[] = [];
  for (const group of readdirSync(join(ROOT, 'groups')).sort()) {
    for (const file of readdirSync(join(ROOT, 'groups', group)).filter((f) => f.endsWith('.json')).sort()) {
      const spec = JSON.parse(readFileSync(join(ROOT, 'groups', group, file), 'utf8'));
      (Array.isArray(spec) ? spec : [spec]).forEach((c: Record<string, any>, i: number) => {
        const expr = c['expr-file'] ? readFileSync(join(ROOT, 'groups', group, c['expr-file']), 'utf8') : c.expr;
        const input = 'data' in c ? c.data : c.dataset === null ? undefined : datasets.get(c.dataset);
        const expected =
          'undefinedResult' in c ? { result: undefined }
          : 'result' in c ? { result: c.result }
          : 'error' in c ? { code: c.error.code, token: c.error.token, message: c.error.message }
          : { code: c.code, token: c.token };
        cases.push({ name: `${group}/${file}${Array.isArray(spec) ? `#${i}` : ''}`, expr, input, bindings: c.bindings ?? {}, expected, timelimit: c.timelimit, depth: c.depth });
      });
    }
  }
  return cases;
}

/** The suite's own comparison (chai's deep equality): values and keys, not prototypes or flags on arrays. */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a === 'number' && typeof b === 'number') return Object.is(a, b) || a === b;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return ka.length === kb.length && ka.every((k, i) => k === kb[i] && sameJson((a as any)[k], (b as any)[k]));
  }
  return false;
}

/** Exactly the same value: prototypes, and the flags JSONata puts on arrays (`sequence`, `keepSingleton`...). */
export function identical(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(a, b) && sameFlags(a, b);
}

/** isDeepStrictEqual skips non-enumerable properties; JSONata's `cons` is one. */
function sameFlags(a: any, b: any): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return !!(a as any).cons === !!(b as any).cons && a.every((x, i) => sameFlags(x, b[i]));
  if (a && b && typeof a === 'object' && typeof b === 'object') return Object.keys(a).every((k) => sameFlags(a[k], b[k]));
  return true;
}
