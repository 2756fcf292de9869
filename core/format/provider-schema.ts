import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import ajvFormats from 'ajv-formats';
import { pointerPath, type SourceError, type YamlSource } from './yaml-source.ts';
import { ajvRegExp, compileRegex } from '../expression/regex.ts';

export const PROVIDER_SCHEMA_PATH = new URL('../../schemas/provider.schema.json', import.meta.url);

/** What the schema marks with `x-kind`: strings that are compiled at load, not used as they are. */
export type Kind = 'expression' | 'template' | 'regexp' | 'json-schema';
export interface Marked {
  kind: Kind;
  path: string[];
  value: unknown;
}

let marked: Marked[] = [];

function makeAjv(): Ajv {
  const ajv = new Ajv({ allErrors: true, discriminator: true, verbose: true, strict: false });
  ajvFormats.default(ajv);
  // The schema says which strings are expressions and templates; validation collects them, so
  // no second walk of the file has to know the format's shape.
  ajv.addKeyword({
    keyword: 'x-kind',
    schemaType: 'string',
    errors: false,
    validate: (kind: Kind, data: unknown, _parent?: unknown, cxt?: { instancePath: string }) => {
      marked.push({ kind, path: pointerPath(cxt?.instancePath ?? ''), value: data });
      return true;
    },
  });
  return ajv;
}

const schema = JSON.parse(readFileSync(PROVIDER_SCHEMA_PATH, 'utf8'));
const ajv = makeAjv();
const full = ajv.compile(schema);
// A file in TERAPI_PROVIDERS_DIR that shares a built-in's name only adds to it: nothing is required.
const partial = ajv.compile({ ...schema, $id: `${schema.$id}#partial`, required: [] });

// Input schemas run on end-user input: their patterns run on RE2 (core/expression/regex.ts).
const jsonSchemaAjv = new Ajv({ allErrors: true, strict: false, code: { regExp: ajvRegExp } });
ajvFormats.default(jsonSchemaAjv);

/**
 * Checks an action's input schema against the JSON Schema meta-schema: at load, where compiling
 * every input schema would cost more than all the rest of loading (bench/load.ts). Compiling
 * happens on the action's first run.
 */
export function checkInputSchema(schema: object): void {
  if (!jsonSchemaAjv.validateSchema(schema)) throw new Error(jsonSchemaAjv.errorsText(jsonSchemaAjv.errors, { dataVar: 'input' }));
  // What the meta-schema cannot see but compiling would refuse: local references and patterns.
  const walk = (node: unknown): void => {
    if (!node || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach(walk);
    for (const [key, value] of Object.entries(node)) {
      if (VALUES.has(key)) continue;
      if (key === 'pattern' && typeof value === 'string') compileRegex(value, 'u');
      else if (key === 'patternProperties' && value && typeof value === 'object') {
        for (const [pattern, schema] of Object.entries(value)) {
          compileRegex(pattern, 'u');
          walk(schema);
        }
      } else if (key === '$ref' && typeof value === 'string' && resolvePointer(schema, value) === undefined) {
        throw new Error(`can't resolve reference ${value} from id #`);
      } else walk(value);
    }
  };
  walk(schema);
}

/** Keywords whose values are data, not schemas. */
const VALUES = new Set(['enum', 'const', 'default', 'examples']);

function resolvePointer(root: object, ref: string): unknown {
  if (!ref.startsWith('#')) return undefined;
  let node: unknown = root;
  for (const part of ref.slice(1).split('/').filter(Boolean)) {
    const key = decodeURIComponent(part).replace(/~1/g, '/').replace(/~0/g, '~');
    node = node && typeof node === 'object' ? (node as Record<string, unknown>)[key] : undefined;
  }
  return node;
}

/**
 * Compiles an action's input schema. The schema is dropped from Ajv's registry at once: the returned
 * function keeps working, and a reload (or another action) may use the same $id again.
 */
export function compileInputSchema(schema: object): ValidateFunction {
  try {
    return jsonSchemaAjv.compile(schema);
  } finally {
    jsonSchemaAjv.removeSchema(schema);
  }
}

export function validateProvider(source: YamlSource, data: unknown, isOverride: boolean): { errors: SourceError[]; marked: Marked[] } {
  const validate: ValidateFunction = isOverride ? partial : full;
  marked = [];
  validate(data);
  const found = marked;
  marked = [];
  const errors = schemaErrors(source, validate.errors);
  // A value the schema already refused is not compiled too: one mistake, one error.
  const refused = new Set((validate.errors ?? []).map((e) => e.instancePath));
  return { errors, marked: found.filter((m) => !refused.has(m.path.map((p) => `/${p}`).join(''))) };
}

/** Ajv's errors for a YAML file, each at the key or value it is about and saying what to change (recordings use it too). */
export function schemaErrors(source: YamlSource, errors: ErrorObject[] | null | undefined): SourceError[] {
  return dedupe((errors ?? []).flatMap((e) => describe(source, e)));
}

const TAGS: Record<string, string[]> = {
  mode: ['oauth2', 'oauth1', 'oauth2_client_credentials', 'api_key', 'basic', 'jwt_bearer', 'none'],
  type: ['cursor', 'next_url', 'offset', 'page'],
};

function describe(source: YamlSource, e: ErrorObject): SourceError[] {
  const path = pointerPath(e.instancePath);
  const where = path.length ? `"${path.join('.')}"` : 'the file';
  const p = e.params as Record<string, any>;
  const at = (pos: { file: string; line: number; col: number }, message: string): SourceError[] => [{ ...pos, message }];
  const propertyName = (e as ErrorObject & { propertyName?: string }).propertyName;

  if (e.keyword === 'propertyNames') return []; // its inner error, with the name, says it better
  if (propertyName !== undefined) {
    const hint = (e.parentSchema as { description?: string } | undefined)?.description;
    return at(source.keyAt([...path, propertyName]), `name "${propertyName}" in ${where} is not allowed: use ${hint ?? `a name matching ${p.pattern}`}`);
  }
  switch (e.keyword) {
    case 'additionalProperties': {
      const allowed = Object.keys((e.parentSchema as { properties?: object })?.properties ?? {});
      const guess = closest(p.additionalProperty, allowed);
      const suggestion = guess ? `did you mean "${guess}"? ` : '';
      return at(source.keyAt([...path, p.additionalProperty]), `unknown key "${p.additionalProperty}" in ${where}: ${suggestion}allowed keys are ${allowed.join(', ')}`);
    }
    case 'required':
      return at(source.keyAt(path), `${where} is missing the required key "${p.missingProperty}": add it`);
    case 'type':
      return at(source.valueAt(path), `${where} must be ${article(p.type)}, not ${typeOf(e.data)}`);
    case 'enum':
      return at(source.valueAt(path), `${where} must be one of ${(p.allowedValues as unknown[]).join(', ')}; got ${JSON.stringify(e.data)}`);
    case 'const':
      return at(source.valueAt(path), `${where} must be ${JSON.stringify(p.allowedValue)}`);
    case 'discriminator': {
      const tagPath = [...path, p.tag];
      if (p.error === 'tag' && (e.data as Record<string, unknown>)?.[p.tag] === undefined) {
        return at(source.keyAt(path), `${where} is missing the required key "${p.tag}": add it`);
      }
      return at(source.valueAt(tagPath), `"${tagPath.join('.')}" must be one of ${(TAGS[p.tag] ?? []).join(', ')}; got ${JSON.stringify(p.tagValue)}`);
    }
    case 'pattern': {
      const hint = (e.parentSchema as { description?: string } | undefined)?.description;
      return at(source.valueAt(path), `${where} must match ${p.pattern}${hint ? ` (${hint})` : ''}; got ${JSON.stringify(e.data)}`);
    }
    case 'format':
      return at(source.valueAt(path), `${where} must be a valid ${p.format}; got ${JSON.stringify(e.data)}`);
    case 'minItems':
      return at(source.valueAt(path), `${where} must have at least ${p.limit} item${p.limit === 1 ? '' : 's'}`);
    case 'minLength':
      return at(source.valueAt(path), `${where} must not be empty`);
    case 'uniqueItems':
      // At the second occurrence, as for a key given twice.
      return at(source.valueAt([...path, Math.max(p.i, p.j)]), `${where} lists ${JSON.stringify((e.data as unknown[])[p.i])} twice: remove one`);
    case 'minimum':
    case 'maximum':
      return at(source.valueAt(path), `${where} must be ${e.keyword === 'minimum' ? 'at least' : 'at most'} ${p.limit}; got ${JSON.stringify(e.data)}`);
    case 'if':
    case 'oneOf':
      // The branch's own errors say what is wrong; these only repeat that a branch failed.
      return [];
    default:
      return at(source.valueAt(path), `${where} ${e.message}`);
  }
}

function dedupe(errors: SourceError[]): SourceError[] {
  const seen = new Set<string>();
  return errors.filter((e) => {
    const k = `${e.line}:${e.col}:${e.message}`;
    return seen.has(k) ? false : (seen.add(k), true);
  });
}

const article = (t: string) => (/^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`);

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  return `${article(typeof v)} (${JSON.stringify(v)})`;
}

/** The allowed key nearest to a misspelt one, if it is near enough to be a likely typo. */
function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    const d = distance(word, c);
    if (d < bestDistance) [best, bestDistance] = [c, d];
  }
  return best;
}

function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length];
}
