/**
 * The provider format's schema as the one contract: the loaded provider's types
 * (core/format/provider-types.generated.ts) and the format's reference (schemas/provider-format.md)
 * are generated from schemas/provider.schema.json. `npm run generate` writes both; a test fails
 * when either is out of date. Run it again after any change to the schema.
 *
 * Written for this schema's subset of JSON Schema (draft-07): type (or a list of types), properties,
 * required, additionalProperties, items, enum, const, $ref to #/definitions, oneOf, anyOf, allOf,
 * with description and default for the words. Validation-only keywords (pattern, minimum, if/then,
 * propertyNames, ...) shape no type; the reference lists them. A keyword it does not know changes
 * nothing in the types, so keys added to the schema never break the generator.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface Schema {
  $ref?: string;
  type?: string | string[];
  title?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  propertyNames?: Schema;
  items?: Schema;
  oneOf?: Schema[];
  anyOf?: Schema[];
  allOf?: Schema[];
  definitions?: Record<string, Schema>;
  'x-kind'?: string;
  pattern?: string;
  format?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  minLength?: number;
  minItems?: number;
  uniqueItems?: boolean;
  [keyword: string]: unknown;
}

/** What a string marked x-kind is once loaded: expressions compiled, templates parsed. */
const LOADED: Record<string, { type: string; words: string }> = {
  expression: { type: 'Expression', words: 'JSONata expression' },
  template: { type: 'Template', words: 'template' },
  regexp: { type: 'string', words: 'regular expression (RE2)' },
  'json-schema': { type: 'object', words: 'JSON Schema' },
};

/**
 * Type names that differ from the definition's name in PascalCase: the names the engine's code
 * already used (`Request` would also shadow the fetch API's global type).
 */
const TYPE_NAMES: Record<string, string> = {
  request: 'RequestSpec',
  authOAuth2: 'OAuth2Auth',
  authClientCredentials: 'ClientCredentialsAuth',
  authApiKey: 'ApiKeyAuth',
  authBasic: 'BasicAuth',
  authNone: 'NoAuth',
};

const ROOT_TYPE = 'ProviderFile';
const pascal = (name: string) => name.replace(/(^|[-_])([a-z0-9])/g, (_m, _s, c: string) => c.toUpperCase());
export const typeName = (definition: string) => TYPE_NAMES[definition] ?? pascal(definition);
const refName = (ref: string) => {
  const m = /^#\/definitions\/(.+)$/.exec(ref);
  if (!m) throw new Error(`only references to #/definitions/... are supported, not ${ref}`);
  return m[1];
};

/**
 * Whether a definition gets a type of its own: objects with keys, unions and enumerations do;
 * a scalar, a map or a string compiled at load is written where it is used.
 */
function named(s: Schema): boolean {
  if (s['x-kind']) return false;
  if (s.oneOf || s.anyOf || s.allOf) return true;
  if (s.enum) return true;
  return s.properties !== undefined;
}

class Types {
  constructor(private readonly root: Schema) {}

  definition(name: string): Schema {
    const s = this.root.definitions?.[name];
    if (!s) throw new Error(`#/definitions/${name} is referenced but not defined`);
    return s;
  }

  /** The TypeScript type of a schema, as written where it is used. */
  of(s: Schema, indent: string): string {
    if (s.$ref) {
      const name = refName(s.$ref);
      const target = this.definition(name);
      return named(target) ? typeName(name) : this.of(target, indent);
    }
    const kind = s['x-kind'];
    if (kind) return LOADED[kind]?.type ?? 'unknown';
    if (s.const !== undefined) return literal(s.const);
    if (s.enum) return s.enum.map(literal).join(' | ');
    const union = s.oneOf ?? s.anyOf;
    if (union) return union.map((m) => this.of(m, indent)).join(' | ');
    if (s.allOf) return s.allOf.map((m) => this.of(m, indent)).join(' & ');
    const types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : s.properties ? ['object'] : [];
    if (!types.length) return 'unknown';
    return types.map((t) => this.scalar(t, s, indent)).join(' | ');
  }

  private scalar(type: string, s: Schema, indent: string): string {
    switch (type) {
      case 'string':
        return 'string';
      case 'integer':
      case 'number':
        return 'number';
      case 'boolean':
        return 'boolean';
      case 'null':
        return 'null';
      case 'array': {
        const item = s.items ? this.of(s.items, indent) : 'unknown';
        return /[ |&]/.test(item) ? `(${item})[]` : `${item}[]`;
      }
      case 'object':
        if (!s.properties) {
          if (s.additionalProperties && typeof s.additionalProperties === 'object') return `Record<string, ${this.of(s.additionalProperties, indent)}>`;
          return s.additionalProperties === false ? 'Record<string, never>' : 'Record<string, unknown>';
        }
        return this.object(s, indent);
      default:
        return 'unknown';
    }
  }

  /** An object's keys, each with its description as a comment. */
  object(s: Schema, indent: string): string {
    const inner = `${indent}  `;
    const required = new Set(s.required ?? []);
    const lines = ['{'];
    for (const [key, property] of Object.entries(s.properties ?? {})) {
      lines.push(...comment(this.words(property), inner));
      const name = /^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key);
      lines.push(`${inner}${name}${required.has(key) ? '' : '?'}: ${this.of(property, inner)};`);
    }
    if (s.additionalProperties && typeof s.additionalProperties === 'object') lines.push(`${inner}[key: string]: ${this.of(s.additionalProperties, inner)};`);
    lines.push(`${indent}}`);
    return lines.join('\n');
  }

  /**
   * A key's words: its description and its default. `inherit`: a key without a description takes
   * that of the scalar it refers to (`urlTemplate`), but never a kind's (every expression would
   * repeat what an expression is).
   */
  words(s: Schema, inherit = false): string {
    const name = s.$ref ? refName(s.$ref) : undefined;
    const target = name ? this.definition(name) : undefined;
    const borrowed = inherit && target && !named(target) && target['x-kind'] !== name ? target.description : undefined;
    const fallback = s.default ?? target?.default;
    return [s.description ?? borrowed, fallback !== undefined ? `Default: ${JSON.stringify(fallback)}.` : undefined].filter(Boolean).join(' ');
  }

  /** `export interface` or `export type` for a definition (or the root). */
  declaration(name: string, s: Schema): string {
    const head = comment(s.description ?? '', '');
    const body = this.of({ ...s, $ref: undefined }, '');
    const isObject = s.properties && !s.oneOf && !s.anyOf && !s.allOf && !s.enum;
    return [...head, isObject ? `export interface ${name} ${body}` : `export type ${name} = ${body};`].join('\n');
  }
}

/** A TypeScript literal type, quoted as the code base quotes. */
const literal = (v: unknown) => (typeof v === 'string' ? `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'` : JSON.stringify(v));

function comment(text: string, indent: string): string[] {
  if (!text) return [];
  const words = text.replace(/\*\//g, '*\\/').split(/\s+/);
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    if (line && line.length + w.length > 100 - indent.length) {
      lines.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(line);
  return lines.length === 1 ? [`${indent}/** ${lines[0]} */`] : [`${indent}/**`, ...lines.map((l) => `${indent} * ${l}`), `${indent} */`];
}

/** core/format/provider-types.generated.ts from the schema. */
export function generateTypes(schema: Schema): string {
  const types = new Types(schema);
  const used = new Set<string>();
  const scan = (node: unknown): void => {
    if (!node || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach(scan);
    for (const [k, v] of Object.entries(node)) {
      if (k === 'x-kind' && typeof v === 'string') used.add(LOADED[v]?.type ?? '');
      else scan(v);
    }
  };
  scan(schema);
  const out = [
    '// Generated from schemas/provider.schema.json by `npm run generate`: do not edit, change the schema',
    '// and run it again. A test fails while this file is out of date.',
    ...(used.has('Expression') ? ["import type { Expression } from '../expression/expression.ts';"] : []),
    ...(used.has('Template') ? ["import type { Template } from './template.ts';"] : []),
    '',
    types.declaration(ROOT_TYPE, { ...schema, definitions: undefined }),
  ];
  for (const [name, s] of Object.entries(schema.definitions ?? {})) {
    if (named(s)) out.push('', types.declaration(typeName(name), s));
  }
  return `${out.join('\n')}\n`;
}

/** schemas/provider-format.md: every key of the format with its description, type, default and allowed values. */
export function generateReference(schema: Schema): string {
  const types = new Types(schema);
  const sections: string[] = [];
  const pending: { title: string; anchor: string; schema: Schema }[] = [];
  const anchor = (title: string) => title.toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^-|-$/g, '');
  const link = (title: string) => `[${title}](#${anchor(title)})`;
  const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n+/g, ' ');

  /** A type in words, with links to the sections of named parts (an inline object gets a section named by its path). */
  const words = (s: Schema, path: string): string => {
    if (s.$ref) {
      const name = refName(s.$ref);
      const target = types.definition(name);
      return named(target) || target['x-kind'] ? link(name) : words(target, path);
    }
    const kind = s['x-kind'];
    if (kind) return LOADED[kind]?.words ?? kind;
    if (s.const !== undefined) return `\`${JSON.stringify(s.const)}\``;
    if (s.enum) return 'string';
    const union = s.oneOf ?? s.anyOf;
    if (union) return union.map((m) => words(m, path)).join(' or ');
    if (s.allOf) return s.allOf.map((m) => words(m, path)).join(' and ');
    const list = Array.isArray(s.type) ? s.type : s.type ? [s.type] : s.properties ? ['object'] : [];
    return list.map((t) => {
      if (t === 'array') return `list of ${s.items ? words(s.items, `${path}[]`) : 'anything'}`;
      if (t !== 'object') return t;
      if (s.properties) {
        pending.push({ title: path, anchor: anchor(path), schema: s });
        return link(path);
      }
      if (s.additionalProperties && typeof s.additionalProperties === 'object') return `map of name to ${words(s.additionalProperties, `${path}.*`)}`;
      return 'object';
    }).join(' or ');
  };

  /** Allowed values and limits, in words. */
  const allowed = (s: Schema): string => {
    const target = s.$ref ? types.definition(refName(s.$ref)) : undefined;
    const t = target && !named(target) ? { ...target, ...s } : target?.enum ? { ...s, enum: target.enum } : s;
    const parts: string[] = [];
    if (t.enum) parts.push(t.enum.map((v) => `\`${v}\``).join(', '));
    if (t.pattern) parts.push(`matches \`${t.pattern}\``);
    if (t.format) parts.push(`format ${t.format}`);
    if (t.minimum !== undefined) parts.push(`at least ${t.minimum}`);
    if (t.exclusiveMinimum !== undefined) parts.push(`more than ${t.exclusiveMinimum}`);
    if (t.maximum !== undefined) parts.push(`at most ${t.maximum}`);
    if (t.minLength) parts.push('not empty');
    if (t.minItems) parts.push(`at least ${t.minItems} item${t.minItems === 1 ? '' : 's'}`);
    if (t.uniqueItems) parts.push('no duplicates');
    if (t.items && typeof t.items === 'object' && !t.items.$ref && (t.items.pattern || t.items.enum)) parts.push(`each ${allowed(t.items)}`);
    if (t.propertyNames) parts.push(`names: ${allowed(t.propertyNames) || types.words(t.propertyNames)}`);
    return parts.join('; ');
  };

  const table = (s: Schema, path: string): string[] => {
    const required = new Set(s.required ?? []);
    const rows = ['| key | type | required | default | allowed values | description |', '|---|---|---|---|---|---|'];
    for (const [key, property] of Object.entries(s.properties ?? {})) {
      const fallback = property.default ?? (property.$ref ? types.definition(refName(property.$ref)).default : undefined);
      const prefix = path ? `${path}.${key}` : key;
      rows.push(`| \`${key}\` | ${cell(words(property, prefix))} | ${required.has(key) ? 'yes' : ''} | ${fallback === undefined ? '' : cell(`\`${JSON.stringify(fallback)}\``)} | ${cell(allowed(property))} | ${cell(types.words({ ...property, default: undefined }, true))} |`);
    }
    if (s.additionalProperties && typeof s.additionalProperties === 'object') {
      rows.push(`| *any other name* | ${cell(words(s.additionalProperties, `${path}.*`))} |  |  | ${cell(allowed(s.additionalProperties))} | ${cell(types.words(s.additionalProperties, true))} |`);
    }
    return rows;
  };

  const section = (title: string, s: Schema, path: string): void => {
    const lines = [`## ${title}`, ''];
    if (s.description) lines.push(s.description, '');
    const union = s.oneOf ?? s.anyOf;
    if (union) {
      const tag = (s.discriminator as { propertyName?: string } | undefined)?.propertyName;
      lines.push(`One of${tag ? `, by \`${tag}\`` : ''}:`, '');
      for (const m of union) {
        const target = m.$ref ? types.definition(refName(m.$ref)) : m;
        const value = tag ? target.properties?.[tag]?.const : undefined;
        lines.push(`- ${words(m, path)}${value !== undefined ? ` (\`${tag}: ${value}\`)` : ''}`);
      }
      lines.push('');
    } else if (s.enum) {
      lines.push(`A string: ${allowed(s)}.`, '');
    }
    const kind = s['x-kind'];
    if (kind && !s.properties) {
      const limits = allowed(s);
      lines.push(`A ${LOADED[kind]?.words ?? kind}${limits ? `: ${limits}` : ''}.`, '');
    }
    if (s.properties) lines.push(...table(s, path), '');
    lines.push(...conditions(s));
    sections.push(lines.join('\n'));
  };

  /** `if: {properties: {k: {const: v}}}, then: {required: [...]}`, in words. */
  const conditions = (s: Schema): string[] => {
    const when = (s.if as Schema | undefined)?.properties;
    const then = s.then as Schema | undefined;
    if (!when || !then?.required) return [];
    const test = Object.entries(when).map(([k, v]) => `\`${k}\` is \`${v.const ?? JSON.stringify(v.enum)}\``).join(' and ');
    return [`When ${test}, also required: ${then.required.map((k) => `\`${k}\``).join(', ')}.`, ''];
  };

  section('The file', { ...schema, description: undefined, definitions: undefined }, '');
  for (const [name, s] of Object.entries(schema.definitions ?? {})) {
    if (named(s) || s['x-kind']) section(name, s, name);
    while (pending.length) {
      const next = pending.shift()!;
      section(next.title, next.schema, next.title);
    }
  }
  const kinds = Object.entries(LOADED).map(([k, v]) => `*${v.words}* (\`x-kind: ${k}\`)`).join(', ');
  return [
    '# The provider format',
    '',
    '<!-- Generated from schemas/provider.schema.json by `npm run generate`: do not edit, change the schema and run it again. -->',
    '',
    schema.description ?? '',
    '',
    `A provider file is YAML; \`schemas/provider.schema.json\` is the contract, and this page lists every key it allows. Strings of the kinds ${kinds} are checked when the file loads. CONTRIBUTING.md shows a whole file and the rules the loader checks beyond the schema.`,
    '',
    ...sections,
  ].join('\n').replace(/\n+$/, '\n');
}

export const SCHEMA_FILE = fileURLToPath(new URL('../../schemas/provider.schema.json', import.meta.url));
export const TYPES_FILE = fileURLToPath(new URL('./provider-types.generated.ts', import.meta.url));
export const REFERENCE_FILE = fileURLToPath(new URL('../../schemas/provider-format.md', import.meta.url));

/** What `npm run generate` writes: file to text. */
export function generated(schema: Schema = JSON.parse(readFileSync(SCHEMA_FILE, 'utf8'))): Record<string, string> {
  return { [TYPES_FILE]: generateTypes(schema), [REFERENCE_FILE]: generateReference(schema) };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  for (const [file, text] of Object.entries(generated())) {
    writeFileSync(file, text);
    console.log(`wrote ${file}`);
  }
}
