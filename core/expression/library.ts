/**
 * JSONata's function library, as compiled expressions and the interpreter call it.
 *
 * The functions are JSONata 2.2.2's own: they are read out of a live evaluation environment (the
 * package exports no other handle on them), so a compiled `$string` is the very function the
 * interpreter calls, with the same results and errors. JSONata writes some of them as async functions
 * (the higher-order ones, and those that take a regular expression, because a matcher may be async);
 * compiled code is synchronous, so those are ported here without `await`, statement for statement
 * (JSONata is MIT-licensed; see node_modules/jsonata/jsonata.js, functions.js section).
 *
 * The builtins that can build a long string or array from a short expression ($pad, $join, $string,
 * $append, $split, $replace) and those that split a string into characters ($length, $substring) are
 * wrapped to respect the bounds of limits.ts; the quadratic ones ($distinct, and $sort without a
 * comparator, which JSONata merges by slicing) look at the clock as they go. The interpreter gets the same
 * bounded functions, bound over its own (`assign`), so both run under the same bounds.
 */
import jsonata from 'jsonata';
import { LimitError, MAX_LENGTH, type Limit } from './limits.ts';

/* eslint-disable @typescript-eslint/no-explicit-any */
export type Any = any;

/** A JSONata native function: its implementation and its parsed signature. */
export interface NativeFunction {
  _jsonata_function: true;
  implementation: (this: Focus, ...args: Any[]) => Any;
  signature?: { definition: string; validate(args: Any[], context: Any): Any[] };
  token?: string;
  position?: number;
}

/** What a native function gets as `this`, as in JSONata's applyInner. */
export interface Focus {
  environment: { lookup(name: string | symbol): Any; timestamp?: Date };
  input?: Any;
  createSequence: (...items: Any[]) => Any[];
}

/**
 * The binding under which an evaluation's Limit travels, in both the interpreter and compiled code. A
 * JSONata variable name ends at a space, so no expression can name it.
 */
export const LIMIT_KEY = 'terapi limit';

const ENTRY = Symbol.for('jsonata.__evaluate_entry');

const NAMES = [
  'sum', 'count', 'max', 'min', 'average', 'string', 'substring', 'substringBefore', 'substringAfter', 'lowercase',
  'uppercase', 'length', 'trim', 'pad', 'match', 'contains', 'replace', 'split', 'join', 'formatNumber', 'formatBase',
  'formatInteger', 'parseInteger', 'number', 'floor', 'ceil', 'round', 'abs', 'sqrt', 'power', 'random', 'boolean',
  'not', 'map', 'zip', 'filter', 'single', 'reduce', 'sift', 'keys', 'lookup', 'append', 'exists', 'spread', 'merge',
  'reverse', 'each', 'error', 'assert', 'type', 'sort', 'shuffle', 'distinct', 'base64encode', 'base64decode',
  'encodeUrlComponent', 'encodeUrl', 'decodeUrlComponent', 'decodeUrl', 'eval', 'toMillis', 'fromMillis', 'clone',
] as const;

/**
 * JSONata's builtins as its interpreter binds them. The entry hook of an evaluation receives the
 * environment before the first `await`, so it is read synchronously, once, at module load.
 */
export const JSONATA: Record<(typeof NAMES)[number], NativeFunction> = (() => {
  let environment: { lookup(name: string): NativeFunction } | undefined;
  const probe = jsonata('0');
  probe.assign(ENTRY as unknown as string, (_expr: unknown, _input: unknown, env: typeof environment) => {
    environment = env;
  });
  void probe.evaluate(undefined);
  if (!environment) throw new Error('jsonata no longer calls its entry hook synchronously: the function library cannot be read');
  return Object.fromEntries(NAMES.map((name) => [name, environment!.lookup(name)])) as Record<(typeof NAMES)[number], NativeFunction>;
})();

/** A signature parsed by JSONata's own parser (it is not exported: a lambda with that signature is parsed). */
export function parseSignature(signature: string): NonNullable<NativeFunction['signature']> {
  return (jsonata(`function($x)${signature}{$x}`).ast() as Any).signature;
}

export function defineFunction(implementation: NativeFunction['implementation'], signature: NativeFunction['signature']): NativeFunction {
  const definition: NativeFunction = { _jsonata_function: true, implementation };
  if (signature !== undefined) definition.signature = signature;
  return definition;
}

// ---- utils.js, ported (the module is not exported) ----

export function isNumeric(n: Any): boolean {
  let isNum = false;
  if (typeof n === 'number') {
    isNum = !isNaN(n);
    if (isNum && !isFinite(n)) throw { code: 'D1001', value: n, stack: new Error().stack };
  }
  return isNum;
}

export function isArrayOfStrings(arg: Any): boolean {
  return Array.isArray(arg) && arg.filter((item) => typeof item !== 'string').length === 0;
}

export function isArrayOfNumbers(arg: Any): boolean {
  return Array.isArray(arg) && arg.filter((item) => !isNumeric(item)).length === 0;
}

export function isSequence(value: Any): boolean {
  return value.sequence === true && Array.isArray(value);
}

export function isFunction(arg: Any): boolean {
  return (arg && (arg._jsonata_function === true || arg._jsonata_lambda === true)) || typeof arg === 'function';
}

export function isLambda(arg: Any): boolean {
  return arg && arg._jsonata_lambda === true;
}

export function getFunctionArity(func: Any): number {
  return typeof func.arity === 'number'
    ? func.arity
    : typeof func.implementation === 'function'
      ? func.implementation.length
      : typeof func.length === 'number'
        ? func.length
        : func.arguments.length;
}

export function isIterable(arg: Any): boolean {
  return typeof arg === 'object' && arg !== null && Symbol.iterator in arg && 'next' in arg && typeof arg.next === 'function';
}

export function isPromise(arg: Any): boolean {
  return typeof arg === 'object' && arg !== null && 'then' in arg && typeof arg.then === 'function';
}

export function isDeepEqual(lhs: Any, rhs: Any): boolean {
  if (lhs === rhs) return true;
  if (typeof lhs === 'object' && typeof rhs === 'object' && lhs !== null && rhs !== null) {
    if (Array.isArray(lhs) && Array.isArray(rhs)) {
      if (lhs.length !== rhs.length) return false;
      for (let ii = 0; ii < lhs.length; ii++) if (!isDeepEqual(lhs[ii], rhs[ii])) return false;
      return true;
    }
    let lkeys = Object.getOwnPropertyNames(lhs);
    let rkeys = Object.getOwnPropertyNames(rhs);
    if (lkeys.length !== rkeys.length) return false;
    lkeys = lkeys.sort();
    rkeys = rkeys.sort();
    for (let ii = 0; ii < lkeys.length; ii++) if (lkeys[ii] !== rkeys[ii]) return false;
    for (const key of lkeys) if (!isDeepEqual(lhs[key], rhs[key])) return false;
    return true;
  }
  return false;
}

export const boolean: (arg: Any) => boolean | undefined = JSONATA.boolean.implementation as Any;
export const string: (arg: Any, prettify?: boolean) => string | undefined = JSONATA.string.implementation as Any;

// ---- bounds ----

/**
 * Where an evaluation's budget is: JSONata passes a function the environment it was called in, and
 * the Limit is bound at the top of it (compiled code gives a stand-in environment that answers the same).
 */
function limitOf(focus: Focus | undefined): Limit | undefined {
  return focus?.environment?.lookup?.(LIMIT_KEY);
}

export function tooLong(what: string, n: number): LimitError {
  return new LimitError(`an expression built ${what} of ${n} elements or characters, more than the ${MAX_LENGTH} an expression may build`);
}

/** Accounts for a string or array a builtin built. */
function built<T>(focus: Focus, name: string, result: T): T {
  const n = typeof result === 'string' || Array.isArray(result) ? result.length : 0;
  if (n > MAX_LENGTH) throw tooLong(`with $${name} a result`, n);
  limitOf(focus)?.build(n, `with $${name} a result`);
  return result;
}

/** V8 refuses a string past 2^29 characters with a RangeError: that is a bound broken, not a bug. */
function sized<T>(name: string, run: () => T): T {
  try {
    return run();
  } catch (e) {
    if (e instanceof RangeError) throw new LimitError(`$${name} would build a value larger than an expression may build (${e.message})`);
    throw e;
  }
}

function checkedLength(str: Any, name: string): void {
  if (typeof str === 'string' && str.length > MAX_LENGTH) throw new LimitError(`$${name} splits its string into characters, and this one has ${str.length}: more than ${MAX_LENGTH}`);
}


/** A function's own `length` and parameter list matter to JSONata (arity of HOF arguments, partial application). */
function sameShape<F extends (...args: Any[]) => Any>(fn: F, like: (...args: Any[]) => Any): F {
  if (fn.length !== like.length) throw new Error(`${fn.name} must take ${like.length} parameters like JSONata's`);
  return fn;
}

/**
 * Raised where compiled code meets a value it can only handle asynchronously (a promise returned by a
 * function from the bindings): the evaluation is run again on the interpreter.
 */
export class NeedsInterpreter extends Error {}

function settled<T>(value: T): T {
  if (isPromise(value)) throw new NeedsInterpreter('a function returned a promise');
  return value;
}

// ---- synchronous ports of JSONata's async functions ----

function hofFuncArgs(func: Any, arg1: Any, arg2: Any, arg3: Any): Any[] {
  const funcArgs = [arg1];
  const length = getFunctionArity(func);
  if (length >= 2) funcArgs.push(arg2);
  if (length >= 3) funcArgs.push(arg3);
  return funcArgs;
}

function evaluateMatcher(this: Any, matcher: Any, str?: Any): Any {
  const result = settled(matcher.apply(this, [str]));
  if (result && !(typeof result.start === 'number' || result.end === 'number' || Array.isArray(result.groups) || isFunction(result.next))) {
    throw { code: 'T1010', stack: new Error().stack };
  }
  return result;
}

function contains(this: Focus, str: Any, token: Any): Any {
  if (typeof str === 'undefined' || typeof token === 'undefined') return undefined;
  if (typeof token === 'string') return str.indexOf(token) !== -1;
  const matches = evaluateMatcher.call(this, token, str);
  return typeof matches !== 'undefined';
}

function match(this: Focus, str: Any, regex: Any, limit: Any): Any {
  if (typeof str === 'undefined') return undefined;
  if (limit < 0) throw { stack: new Error().stack, value: limit, code: 'D3040', index: 3 };
  const result = this.createSequence();
  const budget = limitOf(this);
  if (typeof limit === 'undefined' || limit > 0) {
    let count = 0;
    let matches = evaluateMatcher.call(this, regex, str);
    if (typeof matches !== 'undefined') {
      while (typeof matches !== 'undefined' && (typeof limit === 'undefined' || count < limit)) {
        budget?.tick();
        result.push({ match: matches.match, index: matches.start, groups: matches.groups });
        matches = evaluateMatcher.call(this, matches.next);
        count++;
      }
    }
  }
  return result;
}

function replace(this: Focus, str: Any, pattern: Any, replacement: Any, limit: Any): Any {
  if (typeof str === 'undefined') return undefined;
  const self = this;
  if (pattern === '') throw { code: 'D3010', stack: new Error().stack, value: pattern, index: 2 };
  if (limit < 0) throw { code: 'D3011', stack: new Error().stack, value: limit, index: 4 };
  let replacer: Any;
  if (typeof replacement === 'string') {
    replacer = function (regexMatch: Any) {
      let substitute = '';
      let position = 0;
      let index = replacement.indexOf('$', position);
      while (index !== -1 && position < replacement.length) {
        substitute += replacement.substring(position, index);
        position = index + 1;
        const dollarVal = replacement.charAt(position);
        if (dollarVal === '$') {
          substitute += '$';
          position++;
        } else if (dollarVal === '0') {
          substitute += regexMatch.match;
          position++;
        } else {
          let maxDigits;
          if (regexMatch.groups.length === 0) maxDigits = 1;
          else maxDigits = Math.floor(Math.log(regexMatch.groups.length) * Math.LOG10E) + 1;
          index = parseInt(replacement.substring(position, position + maxDigits), 10);
          if (maxDigits > 1 && index > regexMatch.groups.length) index = parseInt(replacement.substring(position, position + maxDigits - 1), 10);
          if (!isNaN(index)) {
            if (regexMatch.groups.length > 0) {
              const submatch = regexMatch.groups[index - 1];
              if (typeof submatch !== 'undefined') substitute += submatch;
            }
            position += index.toString().length;
          } else {
            substitute += '$';
          }
        }
        index = replacement.indexOf('$', position);
      }
      substitute += replacement.substring(position);
      return substitute;
    };
  } else {
    replacer = replacement;
  }
  let result = '';
  let position = 0;
  const budget = limitOf(this);
  if (typeof limit === 'undefined' || limit > 0) {
    let count = 0;
    if (typeof pattern === 'string') {
      let index = str.indexOf(pattern, position);
      while (index !== -1 && (typeof limit === 'undefined' || count < limit)) {
        budget?.tick();
        result += str.substring(position, index);
        result += replacement;
        position = index + pattern.length;
        count++;
        index = str.indexOf(pattern, position);
      }
      result += str.substring(position);
    } else {
      let matches = evaluateMatcher.call(this, pattern, str);
      if (typeof matches !== 'undefined') {
        while (typeof matches !== 'undefined' && (typeof limit === 'undefined' || count < limit)) {
          budget?.tick();
          result += str.substring(position, matches.start);
          const replacedWith = settled(replacer.apply(self, [matches]));
          if (typeof replacedWith === 'string') result += replacedWith;
          else throw { code: 'D3012', stack: new Error().stack, value: replacedWith };
          position = matches.start + matches.match.length;
          count++;
          matches = evaluateMatcher.call(this, matches.next);
        }
        result += str.substring(position);
      } else {
        result = str;
      }
    }
  } else {
    result = str;
  }
  return result;
}

function split(this: Focus, str: Any, separator: Any, limit: Any): Any {
  if (typeof str === 'undefined') return undefined;
  if (limit < 0) throw { code: 'D3020', stack: new Error().stack, value: limit, index: 3 };
  let result: Any[] = [];
  const budget = limitOf(this);
  if (typeof limit === 'undefined' || limit > 0) {
    if (typeof separator === 'string') {
      result = str.split(separator, limit);
    } else {
      let count = 0;
      let matches = evaluateMatcher.call(this, separator, str);
      if (typeof matches !== 'undefined') {
        let start = 0;
        while (typeof matches !== 'undefined' && (typeof limit === 'undefined' || count < limit)) {
          budget?.tick();
          result.push(str.substring(start, matches.start));
          start = matches.end;
          matches = evaluateMatcher.call(this, matches.next);
          count++;
        }
        if (typeof limit === 'undefined' || count < limit) result.push(str.substring(start));
      } else {
        result.push(str);
      }
    }
  }
  return result;
}

function map(this: Focus, arr: Any, func: Any): Any {
  if (typeof arr === 'undefined') return undefined;
  const result = this.createSequence();
  for (let i = 0; i < arr.length; i++) {
    const res = settled(func.apply(this, hofFuncArgs(func, arr[i], i, arr)));
    if (typeof res !== 'undefined') result.push(res);
  }
  return result;
}

function filter(this: Focus, arr: Any, func: Any): Any {
  if (typeof arr === 'undefined') return undefined;
  const result = this.createSequence();
  for (let i = 0; i < arr.length; i++) {
    const entry = arr[i];
    const res = settled(func.apply(this, hofFuncArgs(func, entry, i, arr)));
    if (boolean(res)) result.push(entry);
  }
  return result;
}

function single(this: Focus, arr: Any, func: Any): Any {
  if (typeof arr === 'undefined') return undefined;
  let hasFoundMatch = false;
  let result;
  for (let i = 0; i < arr.length; i++) {
    const entry = arr[i];
    let positiveResult: Any = true;
    if (typeof func !== 'undefined') {
      const res = settled(func.apply(this, hofFuncArgs(func, entry, i, arr)));
      positiveResult = boolean(res);
    }
    if (positiveResult) {
      if (!hasFoundMatch) {
        result = entry;
        hasFoundMatch = true;
      } else {
        throw { stack: new Error().stack, code: 'D3138', index: i };
      }
    }
  }
  if (!hasFoundMatch) throw { stack: new Error().stack, code: 'D3139' };
  return result;
}

function foldLeft(this: Focus, sequence: Any, func: Any, init: Any): Any {
  if (typeof sequence === 'undefined') return undefined;
  let result;
  const arity = getFunctionArity(func);
  if (arity < 2) throw { stack: new Error().stack, code: 'D3050', index: 1 };
  let index;
  if (typeof init === 'undefined' && sequence.length > 0) {
    result = sequence[0];
    index = 1;
  } else {
    result = init;
    index = 0;
  }
  while (index < sequence.length) {
    const args: Any[] = [result, sequence[index]];
    if (arity >= 3) args.push(index);
    if (arity >= 4) args.push(sequence);
    result = settled(func.apply(this, args));
    index++;
  }
  return result;
}

function sift(this: Focus, arg: Any, func: Any): Any {
  let result: Any = Object.create(null);
  for (const item of objectKeys(arg)) {
    const entry = arg[item];
    const res = settled(func.apply(this, hofFuncArgs(func, entry, item, arg)));
    if (boolean(res)) result[item] = entry;
  }
  if (objectKeys(result).length === 0) result = undefined;
  return result;
}

function each(this: Focus, obj: Any, func: Any): Any {
  const result = this.createSequence();
  for (const key of objectKeys(obj)) {
    const val = settled(func.apply(this, hofFuncArgs(func, obj[key], key, obj)));
    if (typeof val !== 'undefined') result.push(val);
  }
  return result;
}

/** utils.keys */
export function objectKeys(arg: Any): string[] {
  return typeof arg === 'object' && arg !== null ? Object.keys(arg) : [];
}

/**
 * JSONata's stable merge sort, comparator call for comparator call. JSONata merges recursively,
 * slicing one element off per step (quadratic); this merges with indexes, in the same order.
 */
export function mergeSort(arr: Any[], comp: (a: Any, b: Any) => Any, budget: Limit | undefined): Any[] {
  const merge = (left: Any[], right: Any[]): Any[] => {
    const result = [];
    let l = 0;
    let r = 0;
    for (;;) {
      budget?.tick();
      if (l === left.length) {
        while (r < right.length) result.push(right[r++]);
        return result;
      }
      if (r === right.length) {
        while (l < left.length) result.push(left[l++]);
        return result;
      }
      if (comp(left[l], right[r])) result.push(right[r++]);
      else result.push(left[l++]);
    }
  };
  const msort = (array: Any): Any => {
    if (!Array.isArray(array) || array.length <= 1) return array;
    const middle = Math.floor(array.length / 2);
    return merge(msort(array.slice(0, middle)), msort(array.slice(middle)));
  };
  return msort(arr);
}

function sort(this: Focus, arr: Any, comparator: Any): Any {
  if (typeof arr === 'undefined') return undefined;
  if (arr.length <= 1) return arr;
  let comp;
  if (typeof comparator === 'undefined') {
    if (!isArrayOfNumbers(arr) && !isArrayOfStrings(arr)) throw { stack: new Error().stack, code: 'D3070', index: 1 };
    comp = (a: Any, b: Any) => a > b;
  } else {
    comp = (a: Any, b: Any) => settled(comparator(a, b));
  }
  return mergeSort(arr, comp, limitOf(this));
}

function distinct(this: Focus, arr: Any): Any {
  if (typeof arr === 'undefined') return undefined;
  if (!Array.isArray(arr) || arr.length <= 1) return arr;
  const results = isSequence(arr) ? this.createSequence() : [];
  const budget = limitOf(this);
  for (let ii = 0; ii < arr.length; ii++) {
    const value = arr[ii];
    let includes = false;
    for (let jj = 0; jj < results.length; jj++) {
      budget?.tick();
      if (isDeepEqual(value, results[jj])) {
        includes = true;
        break;
      }
    }
    if (!includes) results.push(value);
  }
  return results;
}

// ---- bounded functions, for compiled code and the interpreter alike ----

type Base = Record<'split' | 'replace' | 'sort', NativeFunction['implementation']>;

function bounded(base: Base): Record<string, NativeFunction> {
  const lib = JSONATA;
  const define = (name: keyof typeof JSONATA, implementation: NativeFunction['implementation']) =>
    defineFunction(sameShape(implementation, lib[name].implementation), lib[name].signature);
  const settle = (focus: Focus, name: string, result: Any) => (isPromise(result) ? result.then((r: Any) => built(focus, name, r)) : built(focus, name, result));
  return {
    pad: define('pad', function pad(this: Focus, str: Any, width: Any, char: Any) {
      checkedLength(str, 'pad');
      if (str !== undefined && Math.abs(Math.trunc(width)) > MAX_LENGTH) throw tooLong('with $pad a string', Math.abs(Math.trunc(width)));
      return built(this, 'pad', lib.pad.implementation.call(this, str, width, char));
    }),
    join: define('join', function join(this: Focus, strs: Any, separator: Any) {
      return built(this, 'join', sized('join', () => lib.join.implementation.call(this, strs, separator)));
    }),
    string: define('string', function string(this: Focus, arg: Any, prettify = false) {
      // What JSON.stringify, through JSONata's replacer, makes of a string, finite number, boolean or null.
      if (typeof arg === 'string') return arg;
      if (typeof arg === 'number' && isFinite(arg)) return String(Number.isInteger(arg) ? arg : Number(arg.toPrecision(15)));
      if (typeof arg === 'boolean' || arg === null) return String(arg);
      return built(this, 'string', sized('string', () => lib.string.implementation.call(this, arg, prettify)));
    }),
    append: define('append', function append(this: Focus, arg1: Any, arg2: Any) {
      const size = (Array.isArray(arg1) ? arg1.length : 1) + (Array.isArray(arg2) ? arg2.length : 1);
      if (size > MAX_LENGTH) throw tooLong('with $append an array', size);
      return built(this, 'append', lib.append.implementation.call(this, arg1, arg2));
    }),
    split: define('split', function split(this: Focus, str: Any, separator: Any, limit: Any) {
      return settle(this, 'split', base.split.call(this, str, separator, limit));
    }),
    replace: define('replace', function replace(this: Focus, str: Any, pattern: Any, replacement: Any, limit: Any) {
      return settle(this, 'replace', sized('replace', () => base.replace.call(this, str, pattern, replacement, limit)));
    }),
    length: define('length', function length(this: Focus, str: Any) {
      checkedLength(str, 'length');
      return lib.length.implementation.call(this, str);
    }),
    substring: define('substring', function substring(this: Focus, str: Any, start: Any, length: Any) {
      checkedLength(str, 'substring');
      return lib.substring.implementation.call(this, str, start, length);
    }),
    distinct: define('distinct', distinct),
    sort: define('sort', function sort(this: Focus, arr: Any, comparator: Any) {
      return base.sort.call(this, arr, comparator);
    }),
  };
}

/** The interpreter's functions that are bound over JSONata's own, so that it keeps to the same bounds. */
export const INTERPRETER_OVERRIDES: Record<string, NativeFunction> = bounded({
  split: JSONATA.split.implementation,
  replace: JSONATA.replace.implementation,
  // JSONata's sort slices its way through a merge: quadratic, and without a step between comparisons
  // when there is no comparator function. With one, each comparison is a step the time limit sees.
  sort(this: Focus, arr: Any, comparator: Any) {
    return comparator === undefined ? sort.call(this, arr, comparator) : JSONATA.sort.implementation.call(this, arr, comparator);
  },
});

/**
 * $trim: JSONata replaces each run of spaces, tabs and line breaks by one space, then drops one space
 * at each end. When the string between its first and last other character holds no tab, line break or
 * double space, that comes to cutting the runs at both ends; the regular expression is kept for others.
 */
function trim(this: Focus, str: Any): Any {
  if (typeof str === 'string') {
    const trimmed = plainTrim(str);
    if (trimmed !== undefined) return trimmed;
  }
  return JSONATA.trim.implementation.call(this, str);
}

/** The short way of $trim (see there), or undefined for a string it leaves to JSONata's. */
export function plainTrim(str: string): string | undefined {
  let start = 0;
  let end = str.length;
  let c;
  while (start < end && ((c = str.charCodeAt(start)) === 32 || c === 9 || c === 10 || c === 13)) start++;
  while (end > start && ((c = str.charCodeAt(end - 1)) === 32 || c === 9 || c === 10 || c === 13)) end--;
  for (let i = start, previous = 0; i < end; i++) {
    c = str.charCodeAt(i);
    if (c <= 32 && (c === 9 || c === 10 || c === 13 || (c === 32 && previous === 32))) return undefined;
    previous = c;
  }
  return start === 0 && end === str.length ? str : str.substring(start, end);
}

/**
 * $toMillis without a picture: JSONata checks the string against its ISO 8601 pattern and gives it to
 * Date.parse. The usual form, `2024-05-06T07:08:09.123Z` or with a `+hh:mm` offset and in-range fields,
 * is read here directly (a day past the month's end rolls over, as in Date.parse);
 * any other string, or a picture, goes to JSONata's function.
 */
function toMillis(this: Focus, timestamp: Any, picture: Any): Any {
  if (picture === undefined && typeof timestamp === 'string') {
    const millis = isoMillis(timestamp);
    if (millis !== undefined) return millis;
  }
  return JSONATA.toMillis.implementation.call(this, timestamp, picture);
}

/** The number the two decimal digits at `i` spell, or a number above 99. */
function two(s: string, i: number): number {
  const a = s.charCodeAt(i) - 48;
  const b = s.charCodeAt(i + 1) - 48;
  return a >= 0 && a <= 9 && b >= 0 && b <= 9 ? a * 10 + b : 100;
}

/** `YYYY-MM-DDTHH:MM:SS[.f+](Z|±HH:MM)` with year ≥ 1000 and every field in range, else undefined. */
export function isoMillis(s: string): number | undefined {
  const n = s.length;
  if (n < 20 || s.charCodeAt(4) !== 45 || s.charCodeAt(7) !== 45 || s.charCodeAt(10) !== 84 || s.charCodeAt(13) !== 58 || s.charCodeAt(16) !== 58) return undefined;
  const century = two(s, 0);
  const decade = two(s, 2);
  const month = two(s, 5);
  const day = two(s, 8);
  const hour = two(s, 11);
  const minute = two(s, 14);
  const second = two(s, 17);
  if (century < 10 || century > 99 || decade > 99 || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59) return undefined;
  let i = 19;
  let ms = 0;
  let c = s.charCodeAt(i);
  if (c === 46) {
    const start = ++i;
    while (i < n && ((c = s.charCodeAt(i)) - 48) >>> 0 <= 9) {
      if (i - start < 3) ms = ms * 10 + (c - 48);
      i++;
    }
    if (i === start) return undefined;
    c = s.charCodeAt(i);
    for (let k = i - start; k < 3; k++) ms *= 10;
  }
  let offset = 0;
  if (c === 90 && i + 1 === n) {
    offset = 0;
  } else if ((c === 43 || c === 45) && i + 6 === n && s.charCodeAt(i + 3) === 58) {
    const oh = two(s, i + 1);
    const om = two(s, i + 4);
    if (oh > 23 || om > 59) return undefined;
    offset = (c === 43 ? 1 : -1) * (oh * 60 + om) * 60000;
  } else {
    return undefined;
  }
  return (daysFromCivil(century * 100 + decade, month) + day - 1) * 86400000 + hour * 3600000 + minute * 60000 + second * 1000 + ms - offset;
}

/** Days from 1970-01-01 to the first of a month, in the proleptic Gregorian calendar (year 1000 to 9999). */
function daysFromCivil(year: number, month: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = (y / 400) | 0;
  const yoe = y - era * 400;
  const doy = ((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) | 0;
  return era * 146097 + yoe * 365 + ((yoe / 4) | 0) - ((yoe / 100) | 0) + doy - 719468;
}

/**
 * $fromMillis without a picture or timezone: JSONata formats the ISO 8601 picture
 * `[Y0001]-[M01]-[D01]T[H01]:[m01]:[s01].[f001][Z01:01t]` in UTC, which for the years 0 to 9999 is what
 * Date.prototype.toISOString writes; other cases go to JSONata's function.
 */
function fromMillis(this: Focus, millis: Any, picture: Any, timezone: Any): Any {
  if (picture === undefined && timezone === undefined && typeof millis === 'number' && millis >= -62167219200000 && millis <= 253402300799999) {
    return new Date(millis).toISOString();
  }
  return JSONATA.fromMillis.implementation.call(this, millis, picture, timezone);
}

const SYNC_PORTS: Partial<Record<keyof typeof JSONATA, NativeFunction['implementation']>> = {
  match, contains, map, filter, single, reduce: foldLeft, sift, each, trim, toMillis, fromMillis,
};

/**
 * The functions compiled code calls: JSONata's own, the async ones ported, the bounded ones wrapped,
 * and $trim, $toMillis and $fromMillis with a short way for the common case.
 */
export const COMPILED_LIBRARY: Record<string, NativeFunction> = (() => {
  const library: Record<string, NativeFunction> = {};
  for (const name of NAMES) {
    if (name === 'eval') continue; // evaluates a string in the caller's environment: left to the interpreter
    const port = SYNC_PORTS[name];
    library[name] = port ? defineFunction(sameShape(port, JSONATA[name].implementation), JSONATA[name].signature) : JSONATA[name];
  }
  return Object.assign(library, bounded({ split, replace, sort }));
})();
