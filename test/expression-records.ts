/**
 * Records for an expression, generated from the fields its AST reads: `typical` ones, shaped the way the
 * expression uses them (a field given to $toMillis holds an ISO timestamp, one multiplied holds a number,
 * one whose fields are read holds an object, or an array of objects when a constructor runs over it),
 * for the mapping bench; and `random` ones, any JSON at any of those fields, for the property tests.
 * Both are deterministic for a seed.
 */
import jsonata from 'jsonata';
import { LIBRARY } from '../core/expression/runtime.ts';
import { JSONATA } from '../core/expression/library.ts';

export type Random = () => number;

/** A seeded generator (mulberry32). */
export function seeded(seed: number): Random {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * What a field's value is used as; `picture:…` is a timestamp in that $toMillis picture, `is:…` a value
 * (JSON) it is compared with.
 */
type Hint = 'date' | 'number' | 'string' | 'boolean' | 'strings' | 'any' | `picture:${string}` | `is:${string}`;

/** What the expression reads under one field: its own fields, whether it is a list, what its value is used as. */
interface Shape {
  fields: Map<string, Shape>;
  /** Read through a step that runs over a list (a constructor or wildcard after it, `[]`). */
  list: boolean;
  /** Read at the start of a path in an array constructor (`[labels.name]`), and elsewhere (`fields.summary`). */
  inMember: boolean;
  alone: boolean;
  hint?: Hint;
}

const shape = (): Shape => ({ fields: new Map(), list: false, inMember: false, alone: false });

function child(parent: Shape, name: string): Shape {
  let s = parent.fields.get(name);
  if (!s) parent.fields.set(name, (s = shape()));
  return s;
}

const HINTS: Record<string, Hint> = { toMillis: 'date', string: 'number', join: 'strings', trim: 'string', substringAfter: 'string', substringBefore: 'string', lowercase: 'string', uppercase: 'string', split: 'string', contains: 'string', length: 'string' };

const shapes = new Map<string, { input: Shape; bindings: Map<string, Shape> }>();

/** The shape of the input an expression reads (`$` for the context, `$$` for the root, bindings apart). */
export function shapeOf(source: string): { input: Shape; bindings: Map<string, Shape> } {
  let known = shapes.get(source);
  if (!known) shapes.set(source, (known = readShape(source)));
  return known;
}

function readShape(source: string): { input: Shape; bindings: Map<string, Shape> } {
  const root = shape();
  const bindings = new Map<string, Shape>();
  // Walks a node evaluated with `context` as its input; gives the shape its value comes from, if a field.
  // `member`: the node is an item of an array constructor, where a path usually runs over a list.
  const walk = (node: any, context: Shape, hint?: Hint, member = false): Shape | undefined => {
    if (!node || typeof node !== 'object') return undefined;
    const filters = (list: any[] | undefined, items: Shape) => list?.forEach((f) => f.type === 'filter' && walk(f.expr, items));
    switch (node.type) {
      case 'path': {
        let current: Shape | undefined = context;
        node.steps.forEach((step: any, i: number) => {
          const last = i === node.steps.length - 1;
          if (step.type === 'name' && current) {
            current = child(current, step.value);
            if (!last && (node.steps[i + 1].type !== 'name' || node.keepSingletonArray)) current.list = true;
            if (member && i === 0) current.inMember = true;
            else current.alone = true;
            if (member && last) current.hint ??= 'strings';
          } else if (step.type === 'variable' && i === 0) {
            current = step.value === '' ? context : step.value === '$' ? root : bindingShape(step.value);
          } else if (step.type === 'wildcard' && current) {
            current = child(current, '*');
          } else {
            walk(step, current ?? shape());
            current = undefined;
          }
          if (current) filters(step.stages ?? step.predicate, current);
        });
        if (node.group && current) node.group.lhs.forEach(([k, v]: any[]) => (walk(k, current!), walk(v, current!)));
        if (current && hint && !current.fields.size) current.hint ??= hint;
        return current;
      }
      case 'variable':
        return node.value === '' ? context : node.value === '$' ? root : node.value in LIBRARY ? undefined : bindingShape(node.value);
      case 'function': {
        const name = node.procedure.type === 'variable' ? node.procedure.value : undefined;
        const picture = name === 'toMillis' && node.arguments[1]?.type === 'string' ? `picture:${node.arguments[1].value}` : undefined;
        node.arguments.forEach((arg: any, i: number) => walk(arg, context, i === 0 && name ? (picture as Hint) ?? HINTS[name] : undefined));
        walk(node.procedure, context);
        return undefined;
      }
      case 'unary':
        if (node.value === '[') {
          node.expressions.forEach((item: any) => walk(item, context, undefined, true));
          return undefined;
        }
        break;
      case 'binary':
        if (['+', '-', '*', '/', '%'].includes(node.value)) {
          walk(node.lhs, context, 'number');
          walk(node.rhs, context, 'number');
        } else if (node.value === 'and' || node.value === 'or') {
          walk(node.lhs, context, 'boolean');
          walk(node.rhs, context, 'boolean');
        } else {
          const literal = (n: any) => (['string', 'number', 'value'].includes(n.type) ? (`is:${JSON.stringify(n.value)}` as Hint) : undefined);
          walk(node.lhs, context, literal(node.rhs));
          walk(node.rhs, context, literal(node.lhs));
        }
        return undefined;
      case 'condition': {
        const tested = walk(node.condition, context);
        if (tested && !tested.fields.size) tested.hint ??= 'any';
        walk(node.then, context, hint);
        walk(node.else, context, hint);
        return undefined;
      }
    }
    for (const [key, value] of Object.entries(node)) {
      if (key === 'predicate' || key === 'group') continue;
      if (Array.isArray(value)) value.forEach((v) => (Array.isArray(v) ? v.forEach((w) => walk(w, context)) : walk(v, context)));
      else if (value && typeof value === 'object' && (value as any).type) walk(value, context);
    }
    filters(node.predicate, context);
    return undefined;
  };
  const bindingShape = (name: string) => {
    let s = bindings.get(name);
    if (!s) bindings.set(name, (s = shape()));
    return s;
  };
  walk(jsonata(source).ast(), root);
  return { input: root, bindings };
}

const WORDS = ['alpha', 'Beta', 'gamma delta', '  padded  ', 'naïve', 'x', 'open', 'closed', 'In Progress', 'ünïcode ✓'];

function typicalLeaf(hint: Hint | undefined, r: Random, i: number): unknown {
  const millis = Date.UTC(2020, 0, 1) + Math.floor(r() * 4 * 365 * 86400000);
  if (hint?.startsWith('picture:')) return JSONATA.fromMillis.implementation.call(undefined as any, millis, hint.slice('picture:'.length));
  if (hint?.startsWith('is:')) return r() < 0.5 ? JSON.parse(hint.slice('is:'.length)) : typicalLeaf(undefined, r, i);
  switch (hint) {
    case 'date':
      return new Date(millis).toISOString();
    case 'number':
      return Math.floor(r() * 1e6);
    case 'boolean':
      return r() < 0.5;
    case 'strings':
      return [WORDS[i % WORDS.length], WORDS[(i + 3) % WORDS.length]];
    default:
      return `${WORDS[Math.floor(r() * WORDS.length)]} ${i}`;
  }
}

function typical(s: Shape, r: Random, i: number): unknown {
  if (!s.fields.size) return typicalLeaf(s.hint, r, i);
  const one = () => {
    const o: Record<string, unknown> = {};
    for (const [name, f] of s.fields) o[name === '*' ? `field${i % 3}` : name] = typical(f, r, i);
    return o;
  };
  return s.list || (s.inMember && !s.alone) ? [one(), one()] : one();
}

/** A record shaped as the expression reads it, with plausible values. */
export function typicalRecord(source: string, r: Random, i: number): { input: unknown; bindings: Record<string, unknown> } {
  const { input, bindings } = shapeOf(source);
  return { input: typical(input, r, i), bindings: Object.fromEntries([...bindings].map(([name, s]) => [name, typical(s, r, i)])) };
}

const LEAVES: (() => unknown)[] = [
  () => 'plain', () => '', () => '  two  spaces\tand tab ', () => '2024-02-29T23:59:59.123Z', () => '2024-01-01T00:00:00+05:30', () => 'not a date',
  () => 0, () => -1, () => 42, () => 3.14159, () => 1e21, () => 1.0000000000000002, () => true, () => false, () => null, () => 'a@b.c', () => '123',
];

function random(names: string[], r: Random, depth: number): unknown {
  const pick = r();
  if (depth > 2 || pick < 0.55) return LEAVES[Math.floor(r() * LEAVES.length)]();
  if (pick < 0.75) return Array.from({ length: Math.floor(r() * 4) }, () => random(names, r, depth + 1));
  const o: Record<string, unknown> = {};
  for (const name of names) if (r() < 0.6) o[name] = random(names, r, depth + 1);
  return o;
}

/** Every field name the expression reads, anywhere. */
export function namesOf(source: string): { fields: string[]; bindings: string[] } {
  const fields = new Set<string>();
  const bindings = new Set<string>();
  const walk = (node: any) => {
    if (!node || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach(walk);
    if (node.type === 'name' || (node.type === 'string' && typeof node.value === 'string')) fields.add(node.value);
    if (node.type === 'variable' && node.value && node.value !== '$' && !(node.value in LIBRARY)) bindings.add(node.value);
    for (const [key, value] of Object.entries(node)) if (key !== 'signature' && key !== 'ancestor' && key !== 'slot') walk(value);
  };
  walk(jsonata(source).ast());
  return { fields: [...fields], bindings: [...bindings] };
}

const names = new Map<string, { fields: string[]; bindings: string[] }>();

/** A record of any JSON at the fields the expression reads (and at the bindings it names). */
export function randomRecord(source: string, r: Random): { input: unknown; bindings: Record<string, unknown> } {
  let known = names.get(source);
  if (!known) names.set(source, (known = namesOf(source)));
  const { fields, bindings } = known;
  const record: Record<string, unknown> = {};
  for (const name of fields) if (r() < 0.8) record[name] = random(fields, r, 1);
  return { input: r() < 0.05 ? [record, record] : record, bindings: Object.fromEntries(bindings.map((name) => [name, random(fields, r, 1)])) };
}
