/**
 * The built-in catalogue's expressions (providers/*.yaml) under the compiler: each compiles, and on
 * generated records each gives exactly what JSONata's interpreter gives.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import jsonata from 'jsonata';
import { compileSource } from '../core/expression/compiler.ts';
import { Expression } from '../core/expression/expression.ts';
import { Limit } from '../core/expression/limits.ts';
import { BUILTIN_PROVIDERS_DIR, loadCatalog, providerFiles } from '../core/format/provider-loader.ts';
import { randomRecord, seeded, typicalRecord } from './expression-records.ts';
import { identical } from './jsonata-suite.ts';

/** Every expression of the catalogue, by its place: `github.syncs.issues.mapping`. */
function catalogueExpressions(): [string, Expression][] {
  const { providers, errors } = loadCatalog([providerFiles(BUILTIN_PROVIDERS_DIR)]);
  assert.deepEqual(errors, []);
  const found: [string, Expression][] = [];
  const walk = (value: unknown, path: string[]) => {
    if (value instanceof Expression) found.push([path.join('.'), value]);
    else if (value && typeof value === 'object') for (const [key, v] of Object.entries(value)) if (key !== 'sources') walk(v, [...path, key]);
  };
  for (const [name, provider] of providers) walk(provider, [name]);
  return found;
}

const expressions = catalogueExpressions();

test('every expression of the built-in catalogue compiles: none is left to the interpreter', () => {
  assert.ok(expressions.length > 100, `${expressions.length} expressions`);
  const left = expressions.filter(([, e]) => e.unsupported !== undefined).map(([where, e]) => `${where}: ${e.unsupported}`);
  assert.deepEqual(left, []);
});

type Outcome = { value: unknown } | { error: { code?: string; position?: number; token?: string; message?: string } };

const show = (o: Outcome) => ('value' in o ? JSON.stringify(o.value) : `error ${o.error.code} at ${o.error.position} (${o.error.token}): ${o.error.message}`);

/**
 * Compiled against interpreted, on records shaped as the expression reads them and on records of any JSON
 * at the fields it names (wrong types, missing fields, arrays where objects were meant): the same value,
 * prototypes and sequence flags included, or an error with the same code, position and token. Computed
 * outside the test: node:test tracks every promise the interpreter makes inside one, and slows it down.
 */
const RECORDS = 60;
const differences: string[] = [];
let compared = 0;
for (const [where, expression] of expressions) {
  const program = compileSource(expression.source);
  const interpreter = jsonata(expression.source);
  const r = seeded(where.length * 7919 + expression.source.length);
  for (let i = 0; i < RECORDS; i++) {
    const { input, bindings } = i % 2 ? randomRecord(expression.source, r) : typicalRecord(expression.source, r, i);
    let compiled: Outcome;
    let reference: Outcome;
    try {
      compiled = { value: program.run(input, bindings, program.resolve(bindings), new Limit(2000, () => where)) };
    } catch (error) {
      compiled = { error: error as { code?: string } };
    }
    try {
      reference = { value: await interpreter.evaluate(input, bindings) };
    } catch (error) {
      reference = { error: error as { code?: string } };
    }
    compared++;
    const same = 'value' in reference
      ? 'value' in compiled && identical(compiled.value, reference.value)
      : 'error' in compiled && compiled.error.code === reference.error.code && compiled.error.position === reference.error.position && compiled.error.token === reference.error.token;
    if (!same) differences.push(`${where} on ${JSON.stringify(input)} with ${JSON.stringify(bindings)}\n  interpreter ${show(reference)}\n  compiled    ${show(compiled)}`);
  }
}

test(`every expression of the catalogue, compiled, gives the interpreter's result on generated records (${RECORDS} each)`, () => {
  assert.ok(compared >= expressions.length * RECORDS);
  assert.deepEqual(differences.slice(0, 5), []);
});
