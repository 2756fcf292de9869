/**
 * Provider regular expressions on RE2 (core/expression/regex.ts): JSONata's regex functions give
 * the same results as with JavaScript's engine, patterns written for JavaScript (\uXXXX) keep their
 * meaning, and what RE2 cannot run is refused with a message saying what to change.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import jsonata from 'jsonata';
import { compileInputSchema } from '../core/format/provider-schema.ts';
import { compileRegex, fullMatch, LinearTimeError, Re2RegExp } from '../core/expression/regex.ts';

const INPUT = { text: 'Order A-12, order b-7 and ORDER c-300; 😀 then x-1', path: '/repos/acme/app/issues/42', csv: 'a, b,c ,,d' };

test('JSONata regex functions answer the same on RE2 as on the JavaScript engine', async () => {
  const expressions = [
    '$match(text, /([a-z])-([0-9]+)/i)',
    '$match(text, /order/i, 2)',
    '$match(text, /zzz/)',
    '$replace(text, /([a-z])-([0-9]+)/i, "$2:$1")',
    '$replace(text, /o/i, "0", 2)',
    '$split(csv, /\\s*,\\s*/)',
    '$contains(text, /😀/)',
    '$contains(path, /^\\/repos\\/[^/]+\\/[^/]+\\/issues\\/[0-9]+$/)',
    '$match(path, /\\/([^/]+)/).groups',
    '(text ~> /order/i).start',
    '$match("line1\\nline2", /^line[0-9]$/m).match',
  ];
  for (const source of expressions) {
    const native = await jsonata(source).evaluate(INPUT);
    const re2 = await jsonata(source, { RegexEngine: Re2RegExp as unknown as RegExpConstructor }).evaluate(INPUT);
    assert.deepEqual(re2, native, source);
  }
});

test('patterns: anchored matching, \\uXXXX read as RE2 \\x{XXXX}, and refusals that say what to change', () => {
  assert.equal(fullMatch('[a-z]+', 'abc'), true);
  assert.equal(fullMatch('[a-z]+', 'abc!'), false, 'the whole value must match');
  assert.equal(fullMatch('a|b', 'ab'), false, 'alternatives are anchored as a group');
  assert.equal(fullMatch('\\u0041+', 'AAA'), true);
  assert.equal(fullMatch('[\\u0041-\\u005A]+', 'XYZ'), true);
  assert.equal(fullMatch('\\\\u0041', '\\u0041'), true, 'an escaped backslash before u stays a backslash');
  assert.throws(() => compileRegex('(?!x)y'), (e: Error) => e instanceof LinearTimeError && /rewrite it without lookarounds or backreferences/.test(e.message));
  assert.throws(() => compileRegex('(a)\\1'), LinearTimeError);
  assert.throws(() => compileRegex('[a-'), (e: Error) => !(e instanceof LinearTimeError) && /Invalid regular expression/.test(e.message), 'a pattern JavaScript refuses too keeps JavaScript\'s message');
});

test('action input schemas: pattern and patternProperties run on RE2, each with its own pattern', () => {
  const validate = compileInputSchema({
    type: 'object',
    properties: { a: { type: 'string', pattern: '^(a+)+$' }, b: { type: 'string', pattern: '^[0-9]+$' } },
    patternProperties: { '^x_': { type: 'number' } },
  });
  assert.equal(validate({ a: 'aaa', b: '12', x_n: 1 }), true);
  assert.equal(validate({ a: `${'a'.repeat(5000)}!` }), false);
  assert.equal(validate({ b: 'x' }), false, 'the second pattern is not mistaken for the first');
  assert.equal(validate({ x_n: 'one' }), false);
});
