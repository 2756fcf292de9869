/**
 * The forms the compiler writes in line rather than calling (its INLINE, and `=` / `!=` against a
 * literal) give exactly what JSONata's interpreter gives, on values of every type and on the edge
 * cases of each form: the same value with the same prototype, or the same error code, position and token.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import jsonata from 'jsonata';
import { compileSource } from '../core/expression/compiler.ts';
import { Limit } from '../core/expression/limits.ts';
import { identical } from './jsonata-suite.ts';

type Outcome = { value: unknown } | { error: { code?: string; position?: number; token?: string } };

const catching = async (run: () => unknown): Promise<Outcome> => {
  try {
    return { value: await run() };
  } catch (error) {
    return { error: error as { code?: string } };
  }
};

const show = (o: Outcome) => ('value' in o ? JSON.stringify(o.value) ?? 'undefined' : `error ${o.error.code} at ${o.error.position} (${o.error.token})`);

/** Values for `x` and `y`: strings the forms treat apart (case, spaces, the separator, ISO dates), and every other type. */
const VALUES: unknown[] = [
  undefined, null, true, false, 0, -0, 1, -1, 42, 1.5, 1e21, 2 ** 53 + 2, 0.1 + 0.2, NaN, Infinity, -Infinity,
  '', ' ', 'a', 'Abc', 'ÉTÉ', 'ß', '  Customer 1  ', 'a  b', ' a\tb ', '\n', 'x@y.com', '@', 'a@b@c', '@@',
  'active', 'Active', '2026-01-01T00:00:01.000Z', '2024-02-30T10:00:00+02:00', '2024-01-01', 'not a date', '9999-12-31T23:59:59.999Z',
  [], ['a'], ['a', 'b'], [1, 2], {}, { a: 1 },
];

const FORMS = [
  '$string(x)', '$string(x, true)', '$lowercase(x)', '$uppercase(x)', '$trim(x)', '$toMillis(x)', '$toMillis(x, "[Y0001]")',
  '$substringBefore(x, y)', '$substringAfter(x, y)', '$substringAfter(x, "@")', '$substringBefore(x, "@")',
  'x = "active"', '"active" = x', 'x = 1', 'x = true', 'x = null', 'x != "active"', 'null != x', 'x != 0', 'x = y',
  '{ "v": $lowercase(x), "w": $substringAfter(x, "@"), "s": $string(x), "e": x = "active" }',
];

test('the forms the compiler writes in line give what the interpreter gives, for values of every type', async () => {
  const failures: string[] = [];
  let compared = 0;
  for (const form of FORMS) {
    const program = compileSource(form);
    const interpreter = jsonata(form);
    for (const x of VALUES) {
      for (const y of form.includes('y') ? VALUES : [undefined]) {
        const input: Record<string, unknown> = {};
        if (x !== undefined) input.x = x;
        if (y !== undefined) input.y = y;
        const compiled = await catching(() => program.run(input, {}, program.resolve({}), new Limit(1000, () => form)));
        const reference = await catching(() => interpreter.evaluate(input));
        const same = 'value' in reference
          ? 'value' in compiled && identical(compiled.value, reference.value)
          : 'error' in compiled && compiled.error.code === reference.error.code && compiled.error.position === reference.error.position && compiled.error.token === reference.error.token;
        if (!same) failures.push(`${form} with x=${JSON.stringify(x)} y=${JSON.stringify(y)}: interpreter ${show(reference)}, compiled ${show(compiled)}`);
        compared++;
      }
    }
  }
  assert.deepEqual(failures, []);
  assert.ok(compared > 6000, `${compared} compared`);
});

test('a function of the library rebound by the caller is called, not written in line', async () => {
  const program = compileSource('$lowercase(x) & $string(n)');
  const bindings = { lowercase: (s: string) => `<${s}>`, string: () => 'S' };
  assert.equal(program.run({ x: 'A', n: 1 }, bindings, program.resolve(bindings), new Limit(1000, () => '')), '<A>S');
});

test('an object constructor at the top, whose general way runs in a function of its own, on arrays and other inputs', async () => {
  const forms = [
    '{ "id": $string(id), "name": $trim(name), "e": status = "active", "n": $count($) }',
    '{ "a": $, "b": $$, "c": $string(x) }',
    '{ "k": $keys($), "r": $reduce([1, 2], function($a, $b) { $a + $b }) }',
  ];
  const inputs: unknown[] = [undefined, null, 1, 'x', [], [{ id: 1, name: ' a ', status: 'active' }, { id: 2 }], [[1], [2]], { id: 3, x: 4 }];
  for (const form of forms) {
    const program = compileSource(form);
    for (const input of inputs) {
      const compiled = await catching(() => program.run(input, {}, program.resolve({}), new Limit(1000, () => form)));
      const reference = await catching(() => jsonata(form).evaluate(input));
      assert.ok('value' in reference ? 'value' in compiled && identical(compiled.value, reference.value) : 'error' in compiled && compiled.error.code === reference.error.code, `${form} on ${JSON.stringify(input)}: interpreter ${show(reference)}, compiled ${show(compiled)}`);
    }
  }
});

test('object constructors copied from templates, and past them: more than 30 keys, more than 64 sets of keys, __proto__ as a key', async () => {
  const keys = (n: number) => Array.from({ length: n }, (_, i) => (i === 3 ? '__proto__' : `k${i}`));
  const wide = `{ ${keys(32).map((k, i) => `"${k}": f${i}`).join(', ')} }`;
  const narrow = `{ ${keys(8).map((k, i) => `"${k}": f${i}`).join(', ')} }`;
  for (const form of [wide, narrow]) {
    const program = compileSource(form);
    const interpreter = jsonata(form);
    // Every one of the 256 sets of the first eight fields defined: past the 64 templates of a Shape.
    for (let mask = 0; mask < 256; mask++) {
      const input: Record<string, unknown> = {};
      for (let i = 0; i < 32; i++) if (i >= 8 || mask & (1 << i)) input[`f${i}`] = i === 5 ? { nested: i } : `v${i}`;
      const compiled = program.run(input, {}, program.resolve({}), new Limit(1000, () => form));
      const reference = await interpreter.evaluate(input);
      assert.ok(identical(compiled, reference), `${form.slice(0, 40)} mask ${mask}: ${JSON.stringify(compiled)} against ${JSON.stringify(reference)}`);
      assert.equal(Object.getPrototypeOf(compiled), null);
    }
  }
});
