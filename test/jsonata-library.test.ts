/**
 * The short ways compiled code takes through JSONata's library give JSONata's own results: $trim and
 * $toMillis on the strings they read themselves, $string on scalars, and argument validation against
 * each function's signature.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { COMPILED_LIBRARY, JSONATA, isoMillis } from '../core/expression/library.ts';
import { validate } from '../core/expression/runtime.ts';
import { seeded } from './expression-records.ts';

const call = (fn: (...args: unknown[]) => unknown, ...args: unknown[]) => {
  try {
    return { value: fn.apply(undefined, args) };
  } catch (e) {
    return { error: (e as { code?: string }).code ?? String(e) };
  }
};

test('$trim: the same as JSONata for every string of up to 5 characters of spaces, tabs, line breaks and letters', () => {
  const mine = COMPILED_LIBRARY.trim.implementation as (s: unknown) => unknown;
  const theirs = JSONATA.trim.implementation as (s: unknown) => unknown;
  const chars = [' ', '\t', '\n', '\r', 'a', 'b', '\u00a0', '\v'];
  let n = 0;
  const visit = (s: string) => {
    assert.equal(mine(s), theirs(s), JSON.stringify(s));
    n++;
    if (s.length < 5) for (const c of chars) visit(s + c);
  };
  visit('');
  assert.equal(mine(undefined), undefined);
  assert.ok(n > 37000);
});

test('$toMillis reads the usual ISO form itself exactly as Date.parse does, and leaves every other string to JSONata', () => {
  const r = seeded(11);
  const two = (max: number) => String(Math.floor(r() * (r() < 0.9 ? max + 1 : 100))).padStart(2, '0');
  const pick = <T>(list: T[]) => list[Math.floor(r() * list.length)];
  let read = 0;
  for (let i = 0; i < 200_000; i++) {
    const s = `${pick(['0999', '1000', '1970', '2024', '9999', String(1000 + Math.floor(r() * 9000))])}-${two(12)}-${two(31)}T${two(24)}:${two(59)}:${two(60)}${pick(['', '.', '.1', '.12', '.123', '.1234', '.999999', '.5x'])}${pick(['Z', '+01:00', '-05:30', '+2400', '+23:59', '-00:00', '+24:00', 'z', '', 'ZZ', '+1:00'])}`;
    const millis = isoMillis(s);
    if (millis === undefined) continue;
    read++;
    assert.equal(millis, Date.parse(s), s);
  }
  assert.ok(read > 20_000, `${read} read directly`);
  const toMillis = COMPILED_LIBRARY.toMillis.implementation as (...a: unknown[]) => unknown;
  for (const s of ['2024-01-01', '2024-01-01T00:00:00', 'not a date', '2024-13-01T00:00:00Z', '0099-01-01T00:00:00Z']) {
    assert.deepEqual(call(toMillis, s), call(JSONATA.toMillis.implementation as (...a: unknown[]) => unknown, s), s);
  }
});

test('$fromMillis without a picture writes what JSONata writes, from year 0 to 9999 and around', () => {
  const mine = COMPILED_LIBRARY.fromMillis.implementation as (...a: unknown[]) => unknown;
  const theirs = JSONATA.fromMillis.implementation as (...a: unknown[]) => unknown;
  const r = seeded(13);
  const values: unknown[] = [0, -1, 1.5, -0.5, -62167219200000, -62167219200001, 253402300799999, 253402300800000, NaN, Infinity, -8.64e15];
  for (let i = 0; i < 20_000; i++) values.push(Math.floor((r() - 0.2) * 3.2e14), (r() - 0.5) * 1e13);
  for (const v of values) {
    assert.deepEqual(call(mine, v), call(theirs, v), String(v));
    assert.deepEqual(call(mine, v, '[Y0001]-[M01]-[D01]'), call(theirs, v, '[Y0001]-[M01]-[D01]'), String(v));
  }
});

test('$string of a scalar: the same as JSONata (JSON.stringify with its replacer for numbers)', () => {
  const mine = COMPILED_LIBRARY.string.implementation as (...a: unknown[]) => unknown;
  const theirs = JSONATA.string.implementation as (...a: unknown[]) => unknown;
  const r = seeded(3);
  const values: unknown[] = [0, -0, 1, -1, 1e21, 1e-7, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, 1 / 3, true, false, null, '', 'x', Infinity, NaN, undefined];
  for (let i = 0; i < 10_000; i++) values.push((r() - 0.5) * 10 ** Math.floor(r() * 40 - 20), Math.floor((r() - 0.5) * 2 ** 53));
  for (const v of values) {
    assert.deepEqual(call(mine.bind({ environment: { lookup: () => undefined } }), v), call(theirs, v), String(v));
    assert.deepEqual(call(mine.bind({ environment: { lookup: () => undefined } }), v, true), call(theirs, v, true), String(v));
  }
});

test("arguments are validated as each function's signature does, on arguments of every type and count", () => {
  const r = seeded(5);
  const lambda = { _jsonata_lambda: true, arguments: [] };
  const samples = [undefined, null, true, 'text', 3, 2.5, [], [1, 2], ['a', 'b'], [1, 'a'], [[1]], {}, { a: 1 }, lambda, () => 1];
  let n = 0;
  for (const [name, definition] of Object.entries(COMPILED_LIBRARY)) {
    if (!definition.signature) continue;
    assert.equal(definition.implementation.length, JSONATA[name as keyof typeof JSONATA].implementation.length, `$${name} takes as many parameters as JSONata's`);
    for (let i = 0; i < 300; i++) {
      const args = Array.from({ length: Math.floor(r() * 4) }, () => samples[Math.floor(r() * samples.length)]);
      const context = samples[Math.floor(r() * samples.length)];
      const theirs = call(() => definition.signature!.validate([...args], context));
      const mine = call(() => validate(definition.signature, [...args], context));
      assert.deepEqual(mine, theirs, `$${name}(${args.map((a) => JSON.stringify(a)).join(', ')})`);
      n++;
    }
  }
  assert.ok(n > 10_000);
});
