/**
 * The schema as the one contract: the loaded provider's types and the format's reference are
 * generated from schemas/provider.schema.json, and this test fails while either is out of date.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { generated, generateReference, generateTypes, type Schema } from '../core/format/schema-codegen.ts';
import { ROOT } from './support.ts';

test('the generated types and reference are those of the schema as it is (run npm run generate after changing it)', () => {
  for (const [file, text] of Object.entries(generated())) {
    assert.equal(readFileSync(file, 'utf8'), text, `${relative(ROOT, file)} is out of date with schemas/provider.schema.json: run npm run generate and commit the result`);
  }
});

/** A schema with the shapes the format uses, and some it may grow. */
const schema: Schema = {
  description: 'A thing.',
  type: 'object',
  required: ['kind', 'when'],
  properties: {
    kind: { $ref: '#/definitions/kind' },
    when: { $ref: '#/definitions/expression', description: 'When it runs.' },
    where: { $ref: '#/definitions/urlTemplate' },
    headers: { type: 'object', additionalProperties: { $ref: '#/definitions/template' } },
    pattern: { type: 'string', 'x-kind': 'regexp' },
    input: { type: 'object', 'x-kind': 'json-schema' },
    tries: { type: 'integer', minimum: 1, maximum: 10, default: 5 },
    mode: { type: 'string', enum: ['full', 'incremental'], default: 'full' },
    maybe: { type: ['string', 'null'] },
    steps: { type: 'array', items: { oneOf: [{ type: 'string' }, { type: 'number' }] } },
    both: { allOf: [{ $ref: '#/definitions/a' }, { $ref: '#/definitions/b' }] },
    either: { anyOf: [{ $ref: '#/definitions/a' }, { const: 'none' }] },
    nested: { type: 'object', required: ['x'], properties: { x: { type: 'boolean' }, 'page[size]': { type: 'number' } } },
    future: { type: 'string', 'x-kind': 'something-new', 'x-unheard-of': true, contentMediaType: 'text/plain' },
  },
  if: { properties: { mode: { const: 'incremental' } } },
  then: { required: ['tries'] },
  definitions: {
    expression: { type: 'string', minLength: 1, 'x-kind': 'expression', description: 'A JSONata expression.' },
    template: { type: 'string', 'x-kind': 'template', description: 'Text with placeholders.' },
    urlTemplate: { type: 'string', pattern: '^https://', 'x-kind': 'template', description: 'An absolute URL.' },
    kind: { type: 'object', discriminator: { propertyName: 'mode' }, oneOf: [{ $ref: '#/definitions/kindA' }, { $ref: '#/definitions/kindB' }] },
    kindA: { type: 'object', required: ['mode'], properties: { mode: { const: 'a' }, size: { type: 'number' } } },
    kindB: { type: 'object', required: ['mode', 'name'], properties: { mode: { const: 'b' }, name: { type: 'string' } } },
    a: { type: 'object', properties: { a: { type: 'string' } } },
    b: { type: 'object', properties: { b: { type: 'string' } } },
  },
};

test('types: strings marked x-kind become the loaded types, the rest follows the schema', () => {
  const out = generateTypes(schema);
  assert.match(out, /^import type \{ Expression \} from '\.\.\/expression\/expression\.ts';$/m);
  assert.match(out, /^import type \{ Template \} from '\.\/template\.ts';$/m);
  assert.match(out, /\/\*\* A thing\. \*\/\nexport interface ProviderFile \{\n {2}kind: Kind;\n {2}\/\*\* When it runs\. \*\/\n {2}when: Expression;\n {2}where\?: Template;\n {2}headers\?: Record<string, Template>;\n {2}pattern\?: string;\n {2}input\?: object;\n/);
  assert.match(out, /\/\*\* Default: 5\. \*\/\n {2}tries\?: number;\n {2}\/\*\* Default: "full"\. \*\/\n {2}mode\?: 'full' \| 'incremental';\n {2}maybe\?: string \| null;\n {2}steps\?: \(string \| number\)\[\];\n {2}both\?: A & B;\n {2}either\?: A \| 'none';\n/);
  assert.match(out, /nested\?: \{\n {4}x: boolean;\n {4}"page\[size\]"\?: number;\n {2}\};/);
  // A kind the generator does not know, or a keyword it does not, changes no more than that key.
  assert.match(out, /future\?: unknown;/);
  assert.match(out, /export type Kind = KindA \| KindB;/);
  assert.match(out, /export interface KindA \{\n {2}mode: 'a';\n {2}size\?: number;\n\}/);
  assert.match(out, /export interface KindB \{\n {2}mode: 'b';\n {2}name: string;\n\}/);
  // Scalars and strings compiled at load have no type of their own.
  assert.doesNotMatch(out, /export (type|interface) (Expression|Template|UrlTemplate)\b/);
});

test('types: a definition added to the schema gets its type, a key added to one its field', () => {
  const grown = structuredClone(schema);
  grown.definitions!.kindC = { type: 'object', required: ['mode'], properties: { mode: { const: 'c' }, token: { $ref: '#/definitions/expression' } } };
  (grown.definitions!.kind.oneOf as Schema[]).push({ $ref: '#/definitions/kindC' });
  grown.definitions!.kindA.properties!.region = { type: 'string', enum: ['us', 'eu'], description: 'Where the data lives.' };
  const out = generateTypes(grown);
  assert.match(out, /export type Kind = KindA \| KindB \| KindC;/);
  assert.match(out, /export interface KindC \{\n {2}mode: 'c';\n {2}token\?: Expression;\n\}/);
  assert.match(out, /\/\*\* Where the data lives\. \*\/\n {2}region\?: 'us' \| 'eu';/);
  assert.throws(() => generateTypes({ properties: { x: { $ref: '#/definitions/missing' } } }), /#\/definitions\/missing is referenced but not defined/);
});

test('reference: every key with its type, whether required, default, allowed values and description', () => {
  const out = generateReference(schema);
  assert.match(out, /^## The file\n\n\| key \| type \| required \| default \| allowed values \| description \|$/m);
  assert.match(out, /^\| `kind` \| \[kind\]\(#kind\) \| yes \| {2}\| {2}\| {2}\|$/m);
  assert.match(out, /^\| `when` \| \[expression\]\(#expression\) \| yes \| {2}\| not empty \| When it runs\. \|$/m);
  assert.match(out, /^\| `where` \| \[urlTemplate\]\(#urltemplate\) \| {2}\| {2}\| matches `\^https:\/\/` \| An absolute URL\. \|$/m);
  assert.match(out, /^\| `tries` \| integer \| {2}\| `5` \| at least 1; at most 10 \| {2}\|$/m);
  assert.match(out, /^\| `mode` \| string \| {2}\| `"full"` \| `full`, `incremental` \| {2}\|$/m);
  assert.match(out, /^\| `nested` \| \[nested\]\(#nested\) \|/m);
  assert.match(out, /^## nested\n\n\| key .*\n.*\n\| `x` \| boolean \| yes \|/m);
  assert.match(out, /^When `mode` is `incremental`, also required: `tries`\.$/m);
  assert.match(out, /^## kind\n\nOne of, by `mode`:\n\n- \[kindA\]\(#kinda\) \(`mode: a`\)\n- \[kindB\]\(#kindb\) \(`mode: b`\)$/m);
  assert.match(out, /^## expression\n\nA JSONata expression\.\n\nA JSONata expression: not empty\.$/m);
});
