import { Re2RegExp } from './regex.ts';
/**
 * What compiled expressions call at run time: JSONata 2.2.2's evaluator (node_modules/jsonata/jsonata.js,
 * jsonata.js section), synchronous. Each function mirrors the evaluator function named in its comment,
 * check for check and in the same order, down to the flags JSONata puts on arrays (`sequence`,
 * `keepSingleton`, `cons`, `outerWrapper`) and the errors it throws: compiled code must give exactly
 * the interpreter's results. What the compiler decides statically (which variable a name refers to,
 * where a path can skip its sequences) lives in compiler.ts; what depends on values lives here.
 *
 * Compiled code runs synchronously from start to end, so the evaluation in progress (its Limit, its
 * timestamp) is module state, set by `begin`.
 */
import jsonata from 'jsonata';
import {
  COMPILED_LIBRARY, JSONATA, NeedsInterpreter, boolean, defineFunction, getFunctionArity, isArrayOfNumbers, isArrayOfStrings,
  isDeepEqual, isFunction, isIterable, isLambda, isNumeric, isPromise, isSequence, isoMillis, mergeSort, objectKeys, parseSignature,
  plainTrim, string, tooLong, LIMIT_KEY, type Any, type Focus, type NativeFunction,
} from './library.ts';
import { Limit, MAX_LENGTH } from './limits.ts';

// The short ways of $trim and $toMillis, which the compiler writes in line (its INLINE).
export { boolean, isoMillis, plainTrim };

/** A variable of a frame that has not been bound (yet): lookups go on to the enclosing frame. */
export const UNBOUND: unique symbol = Symbol('unbound');

let limit: Limit = new Limit(0, () => 'an expression');
let timestamp: Date | undefined;

/**
 * The environment native functions see: the evaluation's Limit, and its timestamp ($now, $millis, and
 * $toMillis with a picture read it). JSONata takes the time when an evaluation starts; this takes it
 * when the evaluation first asks, microseconds later, so that evaluations that never ask never pay.
 */
const environment: Focus['environment'] = {
  lookup: (name) => (name === LIMIT_KEY ? limit : undefined),
  get timestamp() {
    return (timestamp ??= new Date());
  },
};

/** Sequences built by compiled code for JSONata's functions refuse to grow past MAX_LENGTH. */
function boundedPush(this: Any[], ...items: Any[]): number {
  if (this.length + items.length > MAX_LENGTH) throw tooLong('a sequence', this.length + items.length);
  return Array.prototype.push.apply(this, items);
}

/**
 * exec_env.createSequence, bounded: `push` is an own, non-enumerable property, as invisible to JSON,
 * to deep comparisons and to structured cloning as Array.prototype.push. The interpreter is given the
 * same function (expression.ts), so that its sequences are bounded too.
 */
export function createSequence(...items: Any[]): Any[] {
  const sequence: Any = [];
  Object.defineProperty(sequence, 'push', { value: boundedPush, writable: true, configurable: true });
  sequence.sequence = true;
  if (items.length === 1) sequence.push(items[0]);
  return sequence;
}

/**
 * The `this` of native functions: JSONata's focus without `input`, which only $eval reads (and $eval is
 * left to the interpreter). Compiled code calls library functions directly with it (the compiler's `direct`).
 */
export const focus: Focus = { environment, createSequence };

/** Starts an evaluation, under this Limit. */
export function begin(budget: Limit): void {
  limit = budget;
  next();
}

/** Starts the next evaluation under the same Limit (the next record of a page): its own budget and timestamp. */
export function next(): void {
  limit.allocated = 0;
  timestamp = undefined;
}

/** A sequence compiled code fills itself (its pushes are counted by the caller). */
function seq(): Any[] {
  const s: Any = [];
  s.sequence = true;
  return s;
}

export function seqOf(item: Any): Any[] {
  const s: Any = [item];
  s.sequence = true;
  return s;
}

/** Appends the elements of `from` (skipping holes, as forEach does) under the length bound. */
function pushAll(into: Any[], from: Any[]): void {
  if (into.length + from.length > MAX_LENGTH) throw tooLong('a sequence', into.length + from.length);
  for (let i = 0; i < from.length; i++) if (i in from) into.push(from[i]);
}

function fail(code: string, fields: Record<string, Any>): never {
  throw { code, stack: new Error().stack, ...fields };
}

/** evaluate(): what every node's result goes through last. */
export function norm(result: Any): Any {
  if (result && result.sequence === true && Array.isArray(result) && !(result as Any).tupleStream) {
    if (result.length === 0) return undefined;
    if (result.length === 1) return (result as Any).keepSingleton ? result : result[0];
  }
  return result;
}

/** evaluate() for a node marked keepArray (`[]`). */
export function normKeep(result: Any): Any {
  if (result && result.sequence === true && Array.isArray(result) && !(result as Any).tupleStream) {
    (result as Any).keepSingleton = true;
    if (result.length === 0) return undefined;
  }
  return result;
}

// ---- paths ----

/** evaluateName: fn.lookup */
export function lookup(input: Any, key: string): Any {
  if (Array.isArray(input)) {
    const result = seq();
    for (let ii = 0; ii < input.length; ii++) {
      const res = lookup(input[ii], key);
      if (res !== undefined) {
        if (Array.isArray(res)) pushAll(result, res);
        else result.push(res);
      }
    }
    return result;
  }
  if (input !== null && typeof input === 'object' && Object.prototype.hasOwnProperty.call(input, key) && !isFunction(input)) return input[key];
  return undefined;
}

/**
 * evaluatePath for a path of plain names (`a.b.c`): while each step meets one object, the sequences
 * JSONata builds around it hold one item and come to nothing; the first array met continues in the
 * general way, from that step on.
 */
export function names(input: Any, keys: string[]): Any {
  if (Array.isArray(input)) return namesFrom(input, keys, 0);
  let current = input;
  for (let i = 0; i < keys.length; i++) {
    if (current === null || typeof current !== 'object' || !Object.prototype.hasOwnProperty.call(current, keys[i]) || isFunction(current)) return undefined;
    const value = current[keys[i]];
    if (Array.isArray(value)) {
      const res = norm(value);
      return res === undefined ? undefined : namesFrom(flattenStep(seqOf(res), i === keys.length - 1), keys, i + 1);
    }
    if (value === undefined) return undefined;
    current = value;
  }
  return current;
}

/**
 * The end of the test for an ordinary object, one whose own properties are all a name step can see:
 * not an array, not a JSONata function (compiled code tests those in line, see the compiler's
 * ordinaryTest), inheriting from Object.prototype or from nothing.
 */
export function plainPrototype(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** `names` for a path of one name (`id`): the object's own field, when it is not an array. */
export function name(input: Any, key: string): Any {
  if (input !== null && typeof input === 'object' && !Array.isArray(input)) {
    if (!Object.prototype.hasOwnProperty.call(input, key) || isFunction(input)) return undefined;
    const value = input[key];
    if (!Array.isArray(value)) return value;
  }
  return names(input, [key]);
}

/** evaluatePath for a path whose first step is a variable (without predicates) followed by plain names (`$x.a.b`). */
export function namesAfter(value: Any, keys: string[]): Any {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) return names(value, keys);
  return namesFrom(flattenStep(seqOf(value), false), keys, 0);
}

/** The name steps of a path from step `from` on, over the sequence the previous step gave. */
function namesFrom(input: Any, keys: string[], from: number): Any {
  let rs = input;
  for (let i = from; i < keys.length; i++) {
    const key = keys[i];
    const result = seq();
    for (let ii = 0; ii < input.length; ii++) {
      limit.tick();
      const res = norm(lookup(input[ii], key));
      if (res !== undefined) result.push(res);
    }
    rs = flattenStep(result, i === keys.length - 1);
    if (rs.length === 0) break;
    input = rs;
  }
  return norm(rs);
}

/**
 * The end of evaluateStep: the last step keeps a single array as it is, other results are flattened one
 * level (arrays made by a constructor, `cons`, stay whole).
 */
function flattenStep(result: Any[], lastStep: boolean): Any {
  if (lastStep && result.length === 1 && Array.isArray(result[0]) && !isSequence(result[0])) return result[0];
  // With nothing to flatten, JSONata's new sequence would hold the same items as this fresh one.
  if (!result.some((res) => Array.isArray(res) && !(res as Any).cons)) return result;
  const rs = seq();
  for (let i = 0; i < result.length; i++) {
    const res = result[i];
    if (!Array.isArray(res) || (res as Any).cons) rs.push(res);
    else pushAll(rs, res);
  }
  return rs;
}

/** evaluateStep: `step` evaluates the step (and its stages) against one item. */
export function step(input: Any, stepOne: (item: Any) => Any, lastStep: boolean): Any {
  const result = seq();
  for (let ii = 0; ii < input.length; ii++) {
    limit.tick();
    const res = stepOne(input[ii]);
    if (typeof res !== 'undefined') result.push(res);
  }
  return flattenStep(result, lastStep);
}

/** The end of evaluatePath for a path marked keepSingletonArray (a step with `[]`). */
export function keepSingleton(resultSequence: Any): Any {
  if (Array.isArray(resultSequence) && (resultSequence as Any).cons && !(resultSequence as Any).sequence) resultSequence = seqOf(resultSequence);
  resultSequence.keepSingleton = true;
  return resultSequence;
}

/** evaluateFilter with a number literal as predicate (`[0]`, `[-1]`). */
export function at(input: Any, value: number): Any {
  let results: Any = seq();
  if (input && input.tupleStream) results.tupleStream = true;
  if (!Array.isArray(input)) input = seqOf(input);
  let index = Math.floor(value);
  if (index < 0) index = input.length + index;
  const item = input[index];
  if (typeof item !== 'undefined') {
    if (Array.isArray(item)) results = item;
    else results.push(item);
  }
  return results;
}

/** evaluateFilter with an expression as predicate. */
export function where(input: Any, predicate: (item: Any) => Any): Any {
  const results: Any = seq();
  if (input && input.tupleStream) results.tupleStream = true;
  if (!Array.isArray(input)) input = seqOf(input);
  for (let index = 0; index < input.length; index++) {
    limit.tick();
    const item = input[index];
    let res = predicate(item);
    if (isNumeric(res)) res = [res];
    if (isArrayOfNumbers(res)) {
      (res as Any[]).forEach((ires) => {
        let ii = Math.floor(ires);
        if (ii < 0) ii = input.length + ii;
        if (ii === index) results.push(item);
      });
    } else if (boolean(res)) {
      results.push(item);
    }
  }
  return results;
}

/** evaluateWildcard */
export function wildcard(input: Any): Any {
  let results = seq();
  if (Array.isArray(input) && (input as Any).outerWrapper && input.length > 0) input = input[0];
  if (input !== null && typeof input === 'object' && !isFunction(input)) {
    for (const key of objectKeys(input)) {
      limit.tick();
      let value = input[key];
      if (Array.isArray(value)) {
        value = flatten(value, []);
        results = append(results, value);
        if (results.length > MAX_LENGTH) throw tooLong('a sequence', results.length);
      } else {
        results.push(value);
      }
    }
  }
  return results;
}

function flatten(arg: Any, flattened: Any[]): Any[] {
  if (Array.isArray(arg)) {
    arg.forEach((item) => flatten(item, flattened));
  } else {
    if (flattened.length >= MAX_LENGTH) throw tooLong('a sequence', flattened.length + 1);
    flattened.push(arg);
  }
  return flattened;
}

/** evaluateDescendants */
export function descendants(input: Any): Any {
  let result;
  const resultSequence = seq();
  if (typeof input !== 'undefined') {
    recurseDescendants(input, resultSequence);
    result = resultSequence.length === 1 ? resultSequence[0] : resultSequence;
  }
  return result;
}

function recurseDescendants(input: Any, results: Any[]): void {
  limit.tick();
  if (!Array.isArray(input)) {
    if (results.length >= MAX_LENGTH) throw tooLong('a sequence', results.length + 1);
    results.push(input);
  }
  if (Array.isArray(input)) {
    input.forEach((member) => recurseDescendants(member, results));
  } else if (input !== null && typeof input === 'object' && !isFunction(input)) {
    for (const key of objectKeys(input)) recurseDescendants(input[key], results);
  }
}

/** fn.append, for the evaluator's own use (the `$append` compiled code calls is bounded in library.ts). */
function append(arg1: Any, arg2: Any): Any {
  return JSONATA.append.implementation.call(focus, arg1, arg2);
}

// ---- constructors ----

/** evaluateUnary '[': one member's value added to the array under construction. */
export function member(result: Any[], value: Any, nested: boolean): Any[] {
  if (typeof value === 'undefined') return result;
  if (nested) result.push(value);
  else result = append(result, value);
  if (result.length > MAX_LENGTH) throw tooLong('an array', result.length);
  return result;
}

/** evaluateUnary '[' for a constructor flagged consarray: a non-enumerable `cons`. */
export function cons(result: Any[]): Any[] {
  Object.defineProperty(result, 'cons', { enumerable: false, configurable: false, value: true });
  return result;
}

/**
 * The keys of an object constructor with literal keys, as the objects it builds: V8 turns an object
 * filled key by key into a slow dictionary past about sixteen keys, but a copy (spread) of a fast object
 * stays fast. So for each set of defined values (a bit each in `mask`) a template holding those keys in
 * order, parsed from JSON once, is copied; its keys are own data properties, so that even `__proto__`
 * is then set as a plain value. A constructor that meets more than 64 sets of keys, or has more than
 * 30, builds the rest key by key on an object that has a null prototype from the start.
 *
 * The copy is made by the compiled code (`template` gives what to copy): a spread's inline cache then
 * belongs to one expression and sees its few templates, where one spread here, shared by every object
 * constructor of the process, would go megamorphic as soon as a few mappings had run.
 */
export class Shape {
  private readonly templates = new Map<number, object>();
  /** The last set of keys met and its template: records of a page mostly have the same keys defined. */
  private lastMask = NaN;
  private last: object | undefined;

  constructor(private readonly keys: string[]) {}

  /** The template for this set of keys, or undefined when the object is to be built key by key (see `bare`). */
  template(mask: number): object | undefined {
    if (mask === this.lastMask) return this.last;
    let template = this.templates.get(mask);
    if (!template) {
      if (mask < 0 || this.templates.size >= 64) return undefined;
      template = JSON.parse(`{${this.keys.filter((_, i) => mask & (2 ** i)).map((key) => `${JSON.stringify(key)}:null`).join(',')}}`) as object;
      this.templates.set(mask, template);
    }
    this.lastMask = mask;
    this.last = template;
    return template;
  }
}

/** An object to fill key by key, with a null prototype from the start (so that `__proto__` is a plain key). */
export function bare(): Any {
  return Object.setPrototypeOf({}, null);
}

/** The checks evaluateUnary '[' leaves to the caller: the finished array counts against the budget. */
export function built(result: Any[]): Any[] {
  limit.build(result.length, 'an array');
  return result;
}

/** evaluateGroupExpression (object constructors and group-by), for one array of [key, value] functions. */
export function group(input: Any, pairs: [(item: Any) => Any, (context: Any) => Any][], position: number): Any {
  const result = Object.create(null);
  const groups = Object.create(null);
  if (!Array.isArray(input)) input = createSequence(input);
  if (input.length === 0) input.push(undefined);
  for (let itemIndex = 0; itemIndex < input.length; itemIndex++) {
    limit.tick();
    const item = input[itemIndex];
    for (let pairIndex = 0; pairIndex < pairs.length; pairIndex++) {
      const key = pairs[pairIndex][0](item);
      if (typeof key !== 'string' && key !== undefined) fail('T1003', { position, value: key });
      if (key !== undefined) {
        if (key === '_jsonata_lambda' || key === '_jsonata_function') fail('D1013', { position, value: key });
        if (Object.prototype.hasOwnProperty.call(groups, key)) {
          if (groups[key].exprIndex !== pairIndex) fail('D1009', { position, value: key });
          groups[key].data = append(groups[key].data, item);
        } else {
          groups[key] = { data: item, exprIndex: pairIndex };
        }
      }
    }
  }
  for (const key of objectKeys(groups)) {
    const entry = groups[key];
    const value = pairs[entry.exprIndex][1](entry.data);
    if (typeof value !== 'undefined') result[key] = value;
  }
  return result;
}

// ---- operators ----

/** The catch of evaluateBinary: an error from an operator carries its position and token. */
export function located(err: Any, position: number, token: string): Any {
  err.position = position;
  err.token = token;
  return err;
}

/** evaluateNumericExpression */
export function numeric(lhs: Any, rhs: Any, op: string, position: number): Any {
  try {
    if (typeof lhs !== 'undefined' && !isNumeric(lhs)) fail('T2001', { value: lhs });
    if (typeof rhs !== 'undefined' && !isNumeric(rhs)) fail('T2002', { value: rhs });
  } catch (err) {
    throw located(err, position, op);
  }
  if (typeof lhs === 'undefined' || typeof rhs === 'undefined') return undefined;
  switch (op) {
    case '+': return lhs + rhs;
    case '-': return lhs - rhs;
    case '*': return lhs * rhs;
    case '/': return lhs / rhs;
    default: return lhs % rhs;
  }
}

/** evaluateEqualityExpression */
export function equal(lhs: Any, rhs: Any): boolean {
  if (typeof lhs === 'undefined' || typeof rhs === 'undefined') return false;
  return isDeepEqual(lhs, rhs);
}

/** fn.substringBefore for two strings. */
export function substringBefore(str: string, chars: string): string {
  const pos = str.indexOf(chars);
  return pos > -1 ? str.substr(0, pos) : str;
}

/** fn.substringAfter for two strings. */
export function substringAfter(str: string, chars: string): string {
  const pos = str.indexOf(chars);
  return pos > -1 ? str.substr(pos + chars.length) : str;
}

/** evaluateComparisonExpression */
export function compare(lhs: Any, rhs: Any, op: string, position: number): Any {
  const ltype = typeof lhs;
  const rtype = typeof rhs;
  const lcomparable = ltype === 'undefined' || ltype === 'string' || ltype === 'number';
  const rcomparable = rtype === 'undefined' || rtype === 'string' || rtype === 'number';
  if (!lcomparable || !rcomparable) fail('T2010', { value: !(ltype === 'string' || ltype === 'number') ? lhs : rhs, position, token: op });
  if (ltype === 'undefined' || rtype === 'undefined') return undefined;
  if (ltype !== rtype) fail('T2009', { value: lhs, value2: rhs, position, token: op });
  switch (op) {
    case '<': return lhs < rhs;
    case '<=': return lhs <= rhs;
    case '>': return lhs > rhs;
    default: return lhs >= rhs;
  }
}

/** evaluateIncludesExpression */
export function includes(lhs: Any, rhs: Any): boolean {
  if (typeof lhs === 'undefined' || typeof rhs === 'undefined') return false;
  if (!Array.isArray(rhs)) rhs = [rhs];
  for (let i = 0; i < rhs.length; i++) if (rhs[i] === lhs) return true;
  return false;
}

/** boolize, for `and` and `or` */
export function truthy(value: Any): boolean {
  const booledValue = boolean(value);
  return typeof booledValue === 'undefined' ? false : booledValue;
}

/** evaluateStringConcat */
export function concat(lhs: Any, rhs: Any, position: number): string {
  let lstr = '';
  let rstr = '';
  try {
    if (typeof lhs !== 'undefined') lstr = string(lhs)!;
    if (typeof rhs !== 'undefined') rstr = string(rhs)!;
  } catch (err) {
    throw located(err, position, '&');
  }
  if (lstr.length + rstr.length > MAX_LENGTH) throw tooLong('with & a string', lstr.length + rstr.length);
  limit.build(lstr.length + rstr.length, 'a string');
  return lstr.concat(rstr);
}

/** evaluateRangeExpression */
export function range(lhs: Any, rhs: Any, position: number): Any {
  try {
    if (typeof lhs !== 'undefined' && !Number.isInteger(lhs)) fail('T2003', { value: lhs });
    if (typeof rhs !== 'undefined' && !Number.isInteger(rhs)) fail('T2004', { value: rhs });
    if (typeof lhs === 'undefined' || typeof rhs === 'undefined') return undefined;
    if (lhs > rhs) return undefined;
    const size = rhs - lhs + 1;
    if (size > 1e7) fail('D2014', { value: size });
    limit.build(size, 'a range');
    const result: Any = new Array(size);
    for (let item = lhs, index = 0; item <= rhs; item++, index++) result[index] = item;
    result.sequence = true;
    return result;
  } catch (err) {
    throw located(err, position, '..');
  }
}

/** evaluateUnary '-' */
export function negate(value: Any, position: number): Any {
  if (typeof value === 'undefined') return undefined;
  if (isNumeric(value)) return -value;
  fail('D1002', { position, token: '-', value });
}

/** evaluateVariable for `$`, the context: the wrapper around an array input is not visible. */
export function context(input: Any): Any {
  return input && input.outerWrapper ? input[0] : input;
}

/** evaluate(): the input of an evaluation, an array wrapped into a sequence of one. */
export function wrapInput(input: Any): Any {
  if (Array.isArray(input) && !isSequence(input)) {
    const wrapped: Any = seqOf(input);
    wrapped.outerWrapper = true;
    return wrapped;
  }
  return input;
}

// ---- functions ----

/** A lambda of compiled code: JSONata's lambda object, with the compiled body as `invoke`. */
export interface Lambda {
  _jsonata_lambda: true;
  input: Any;
  environment: Any;
  arguments: Any[];
  signature?: NativeFunction['signature'];
  body: Any;
  thunk?: true;
  apply?: (self: Any, args: Any[]) => Any;
  invoke: (args: Any[]) => Any;
  token?: string;
  position?: number;
}

/** evaluateLambda: the properties JSONata's lambda has, in its order; `invoke` is not enumerable. */
export function lambda(node: Any, input: Any, invoke: (args: Any[]) => Any): Lambda {
  const procedure: Any = {
    _jsonata_lambda: true,
    input,
    environment: undefined,
    arguments: node.arguments,
    signature: node.signature,
    body: node.body,
  };
  procedure.apply = (_self: Any, args: Any[]) => apply(procedure, args, input);
  Object.defineProperty(procedure, 'invoke', { value: invoke });
  return procedure;
}

/**
 * A tail call (the parser's thunk lambda): the procedure and arguments are evaluated by the trampoline
 * in `apply`, after the calling function has returned, as JSONata does.
 */
export function thunk(next: () => [Any, Any[]]): Any {
  const procedure: Any = { _jsonata_lambda: true, thunk: true };
  Object.defineProperty(procedure, 'next', { value: next });
  return procedure;
}

/** The function argument wrapper of evaluateFunction. */
export function argument(arg: Any): Any {
  if (((typeof arg === 'object' && arg !== null) || typeof arg === 'function') && isFunction(arg)) {
    const closure: Any = (...params: Any[]) => apply(arg, params, null);
    closure.arity = getFunctionArity(arg);
    return closure;
  }
  return arg;
}

/** evaluateFunction, once the procedure and arguments are evaluated. */
export function call(proc: Any, args: Any[], input: Any, position: number, token: string): Any {
  try {
    if (typeof proc === 'object') {
      proc.token = token;
      proc.position = position;
    }
    return apply(proc, args, input);
  } catch (err) {
    const e = err as Any;
    if (!e.position) e.position = position;
    if (!e.token) e.token = token;
    throw err;
  }
}

/** apply: a call, and the trampoline that runs the tail calls it returns. */
export function apply(proc: Any, args: Any[], input: Any): Any {
  let result = applyInner(proc, args, input);
  while (typeof result === 'object' && result !== null && result._jsonata_lambda === true && result.thunk === true) {
    limit.tick();
    const [next, evaluatedArgs] = result.next();
    result = applyInner(next, evaluatedArgs, input);
  }
  return result;
}

function applyInner(proc: Any, args: Any[], input: Any): Any {
  let result;
  try {
    let validatedArgs = args;
    if (proc) validatedArgs = typeof proc.signature === 'undefined' ? args : validate(proc.signature, args, input);
    limit.tick();
    if (isLambda(proc)) {
      result = proc.invoke(validatedArgs);
    } else if (proc && proc._jsonata_function === true) {
      result = proc.implementation.apply(focus, validatedArgs);
      if (isIterable(result)) result = result.next().value;
      if (isPromise(result)) throw new NeedsInterpreter('a function returned a promise');
    } else if (typeof proc === 'function') {
      result = proc.apply(input, validatedArgs);
      if (isPromise(result)) throw new NeedsInterpreter('a function returned a promise');
    } else {
      fail('T1006', {});
    }
  } catch (err) {
    if (proc) {
      const e = err as Any;
      if (typeof e.token == 'undefined' && typeof proc.token !== 'undefined') e.token = proc.token;
      e.position = proc.position || e.position;
    }
    throw err;
  }
  return result;
}

/**
 * A signature's parameters, as parseSignature reads them: the symbols each accepts (its regex's
 * character class), and its modifiers.
 */
export interface Param {
  symbols: string;
  /** The same, as a bit per symbol (SYMBOLS' order), for the short way of `native`. */
  mask: number;
  type: string;
  context: boolean;
  optional: boolean;
  variadic: boolean;
  subtype?: string;
}

/** The parameters, and from which one on all are plain optional ones (a call may stop there). */
type Params = Param[] & { optionalFrom: number };

const PARAMS = Symbol('parameters');

function parameters(definition: string): Params {
  const params = [] as unknown as Params;
  const closing = (start: number, open: string, close: string) => {
    let depth = 1;
    let position = start;
    while (position < definition.length) {
      position++;
      const symbol = definition.charAt(position);
      if (symbol === close) {
        if (--depth === 0) break;
      } else if (symbol === open) depth++;
    }
    return position;
  };
  for (let position = 1; position < definition.length; position++) {
    const symbol = definition.charAt(position);
    if (symbol === ':') break;
    const prev = params[params.length - 1];
    const add = (symbols: string, type: string) => params.push({ symbols, mask: maskOf(symbols), type, context: false, optional: false, variadic: false });
    if ('snblo'.includes(symbol)) add(symbol + 'm', symbol);
    else if (symbol === 'a' || symbol === 'x') add('asnblfom', symbol);
    else if (symbol === 'f') add('f', symbol);
    else if (symbol === 'j') add('asnblom', symbol);
    else if (symbol === '-') prev.context = prev.optional = true;
    else if (symbol === '?') prev.optional = true;
    else if (symbol === '+') prev.variadic = true;
    else if (symbol === '(') {
      const end = closing(position, '(', ')');
      add(definition.substring(position + 1, end) + 'm', '(');
      position = end;
    } else if (symbol === '<') {
      const end = closing(position, '<', '>');
      prev.subtype = definition.substring(position + 1, end);
      position = end;
    }
  }
  params.optionalFrom = params.length;
  while (params.optionalFrom > 0 && params[params.optionalFrom - 1].optional && !params[params.optionalFrom - 1].context && !params[params.optionalFrom - 1].variadic) params.optionalFrom--;
  return params;
}

const SYMBOLS = 'snbflaom';

function maskOf(symbols: string): number {
  let mask = 0;
  for (const symbol of symbols) mask |= 1 << SYMBOLS.indexOf(symbol);
  return mask;
}

export function paramsOf(signature: Any): Params {
  return (signature[PARAMS] ??= parameters(signature.definition));
}

/** getSymbol of parseSignature, as its index in SYMBOLS. */
function symbolIndex(value: Any): number {
  switch (typeof value) {
    case 'string': return 0;
    case 'number': return 1;
    case 'boolean': return 2;
    case 'function': return 3;
    case 'object': return value === null ? 4 : isFunction(value) ? 3 : Array.isArray(value) ? 5 : 6;
    default: return 7;
  }
}

function symbolOf(value: Any): string {
  return SYMBOLS[symbolIndex(value)];
}

const MISFIT = Symbol('misfit');

/**
 * What signature.validate makes of an argument given to the parameter at its position, or MISFIT when
 * it does not fit there plainly (a function, a `+` parameter, a type error to report).
 */
function fit(param: Param, arg: Any): Any {
  const index = symbolIndex(arg);
  if (param.variadic || index === 3 || (param.mask & (1 << index)) === 0) return MISFIT;
  if (param.type !== 'a') return arg;
  const symbol = SYMBOLS[index];
  if (symbol === 'm') return undefined;
  if (param.subtype !== undefined) {
    if (symbol !== 'a' && symbol !== param.subtype) return MISFIT;
    if (symbol === 'a' && arg.length > 0) {
      const itemType = symbolOf(arg[0]);
      if (itemType !== param.subtype.charAt(0)) return MISFIT;
      for (let j = 1; j < arg.length; j++) if (symbolOf(arg[j]) !== itemType) return MISFIT;
    }
  }
  return symbol === 'a' ? arg : [arg];
}

/**
 * signature.validate, with a short way for the common call: each argument fits the parameter at its
 * position, and the parameters left over are plain optional ones (none to fill from the context). That
 * is the first assignment JSONata's signature regex tries, so it is the one it takes; any other call
 * goes to JSONata's own validate.
 */
export function validate(signature: Any, args: Any[], input: Any): Any[] {
  const params = paramsOf(signature);
  const n = args.length;
  if (n > params.length || n < params.optionalFrom) return signature.validate(args, input);
  const validated = new Array(params.length);
  for (let i = 0; i < n; i++) {
    const value = fit(params[i], args[i]);
    if (value === MISFIT) return signature.validate(args, input);
    validated[i] = value;
  }
  for (let i = n; i < params.length; i++) validated[i] = undefined;
  return validated;
}

/** Whether a value is not a function, JSONata's or JavaScript's (a signature's `f`). */
export function notFunction(value: Any): boolean {
  return typeof value !== 'function' && !(typeof value === 'object' && value !== null && (value._jsonata_function === true || value._jsonata_lambda === true));
}


/**
 * A call of a native function with one to three arguments, the short way when the arguments fit
 * (see validate): no arrays of arguments, no trampoline (a native returns no tail call). When they do
 * not fit, or the function throws, the call goes the long way (`call`), which gives JSONata's error.
 */
export function native(proc: Any, input: Any, position: number, token: string, count: number, a0?: Any, a1?: Any, a2?: Any): Any {
  if (typeof proc === 'object' && proc !== null && proc._jsonata_function === true && proc.signature !== undefined) {
    const params = paramsOf(proc.signature);
    if (count <= params.length && count >= params.optionalFrom) {
      const v0 = count > 0 ? fit(params[0], a0) : undefined;
      const v1 = count > 1 ? fit(params[1], a1) : undefined;
      const v2 = count > 2 ? fit(params[2], a2) : undefined;
      if (v0 !== MISFIT && v1 !== MISFIT && v2 !== MISFIT) {
        proc.token = token;
        proc.position = position;
        limit.tick();
        try {
          let result = proc.implementation.call(focus, v0, v1, v2);
          if (isIterable(result)) result = result.next().value;
          if (!isPromise(result)) return result;
        } catch {
          // the long way reports it
        }
      }
    }
  }
  const args = [a0, a1, a2].slice(0, count).map(argument);
  return call(proc, args, input, position, token);
}

/** The T1005 and T1007 checks: a path was called where the user probably forgot a `$`. */
export function notAFunction(code: 'T1005' | 'T1007', position: number, token: string): never {
  fail(code, { position, token });
}

/** evaluateApplyExpression (`~>`) when its right side is not a call. `chain` composes two functions. */
export function applyTo(lhs: Any, func: Any, position: number, chain: () => Any): Any {
  if (!isFunction(func)) fail('T2006', { position, value: func });
  if (isFunction(lhs)) return apply(chain(), [lhs, func], null);
  return apply(func, [lhs], null);
}

const PLACEHOLDER = (node: Any) => node && node.type === 'operator' && node.value === '?';

/** evaluatePartialApplication, once the arguments (`?` left as the AST's operator node) and procedure are evaluated. */
export function partial(proc: Any, args: Any[], position: number, token: string): Any {
  if (isLambda(proc)) return partialLambda(proc, args);
  if (proc && proc._jsonata_function === true) return partialNative(proc.implementation, args);
  if (typeof proc === 'function') return partialNative(proc, args);
  fail('T1008', { position, token });
}

/** partialApplyProcedure: a lambda of the parameters still unbound; it has no signature, so no validation. */
function partialLambda(proc: Lambda, args: Any[]): Lambda {
  const unbound: Any[] = [];
  proc.arguments.forEach((param, index) => {
    if (PLACEHOLDER(args[index])) unbound.push(param);
  });
  const procedure: Any = { _jsonata_lambda: true, input: proc.input, environment: undefined, arguments: unbound, body: proc.body };
  Object.defineProperty(procedure, 'invoke', {
    value: (given: Any[]) => {
      let next = 0;
      return proc.invoke(proc.arguments.map((_param, index) => (PLACEHOLDER(args[index]) ? given[next++] : args[index])));
    },
  });
  return procedure;
}

const nativeParameters = new WeakMap<object, Any[]>();

/**
 * partialApplyNativeFunction: JSONata reads the native function's parameter names from its source and
 * parses `function($a, $b){ _ }` to get them as lambda arguments; the same is done here, with its parser.
 */
function partialNative(native: Any, args: Any[]): Lambda {
  let params = nativeParameters.get(native);
  if (!params) {
    const sigArgs = /\(([^)]*)\)/.exec(native.toString())![1].split(',').map((sigArg) => '$' + sigArg.trim());
    params = (parse(`function(${sigArgs.join(', ')}){ _ }`) as Any).arguments as Any[];
    nativeParameters.set(native, params);
  }
  const target: Any = { _jsonata_lambda: true, arguments: params, body: native };
  Object.defineProperty(target, 'invoke', {
    value: (values: Any[]) => {
      const result = native.apply({ environment, createSequence }, params!.map((_param, index) => values[index]));
      if (isPromise(result)) throw new NeedsInterpreter('a function returned a promise');
      return result;
    },
  });
  return partialLambda(target, args);
}

/** evaluateRegex: the matcher closure, with its own lastIndex. */
export function regex(value: RegExp, position: number): Any {
  // On RE2, as the interpreter's (regex.ts): linear time whatever the pattern.
  const re = new Re2RegExp(value);
  const closure = (str: Any, fromIndex?: number): Any => {
    let result: Any;
    re.lastIndex = fromIndex || 0;
    const match = re.exec(str);
    if (match !== null) {
      result = { match: match[0], start: match.index, end: match.index + match[0].length, groups: [] };
      if (match.length > 1) for (let i = 1; i < match.length; i++) result.groups.push(match[i]);
      result.next = () => {
        if (re.lastIndex >= str.length) return undefined;
        const next = closure(str, re.lastIndex);
        if (next && next.match === '') fail('D1004', { position, value: value.source });
        return next;
      };
    }
    return result;
  };
  return closure;
}

const TRANSFORM_SIGNATURE = parseSignature('<(oa):o>');

/** evaluateTransformExpression: `clone` is the $clone in scope where the transform was written. */
export function transform(
  clone: () => Any,
  pattern: (input: Any) => Any,
  update: (match: Any) => Any,
  remove: ((match: Any) => Any) | undefined,
  position: number,
  updatePosition: number,
  deletePosition: number | undefined,
): NativeFunction {
  const transformer = (obj: Any): Any => {
    if (typeof obj === 'undefined') return undefined;
    const cloneFunction = clone();
    if (!isFunction(cloneFunction)) fail('T2013', { position });
    const result = apply(cloneFunction, [obj], null);
    let matches = pattern(result);
    if (typeof matches !== 'undefined') {
      if (!Array.isArray(matches)) matches = [matches];
      for (let ii = 0; ii < matches.length; ii++) {
        limit.tick();
        const match = matches[ii];
        const changes = update(match);
        const updateType = typeof changes;
        if (updateType !== 'undefined') {
          if (updateType !== 'object' || changes === null || Array.isArray(changes)) fail('T2011', { position: updatePosition, value: changes });
          for (const prop of objectKeys(changes)) match[prop] = changes[prop];
        }
        if (remove !== undefined) {
          let deletions = remove(match);
          if (typeof deletions !== 'undefined') {
            const val = deletions;
            if (!Array.isArray(deletions)) deletions = [deletions];
            if (!isArrayOfStrings(deletions)) fail('T2012', { position: deletePosition, value: val });
            for (const deletion of deletions) if (typeof match === 'object' && match !== null) delete match[deletion];
          }
        }
      }
    }
    return result;
  };
  return defineFunction(transformer, TRANSFORM_SIGNATURE);
}

/** evaluateSortExpression (order-by), for a sequence of items that are not tuples. */
export function orderBy(input: Any, terms: [(item: Any) => Any, boolean][], position: number): Any {
  const comparator = (a: Any, b: Any): boolean => {
    let comp = 0;
    for (let index = 0; comp === 0 && index < terms.length; index++) {
      const [term, descending] = terms[index];
      const aa = term(a);
      const bb = term(b);
      const atype = typeof aa;
      const btype = typeof bb;
      if (atype === 'undefined') {
        comp = btype === 'undefined' ? 0 : 1;
        continue;
      }
      if (btype === 'undefined') {
        comp = -1;
        continue;
      }
      if (!(atype === 'string' || atype === 'number') || !(btype === 'string' || btype === 'number')) {
        fail('T2008', { position, value: !(atype === 'string' || atype === 'number') ? aa : bb });
      }
      if (atype !== btype) fail('T2007', { position, value: aa, value2: bb });
      if (aa === bb) continue;
      comp = aa < bb ? -1 : 1;
      if (descending === true) comp = -comp;
    }
    return comp === 1;
  };
  // fn.sort with a comparator
  if (typeof input === 'undefined') return undefined;
  if (input.length <= 1) return input;
  return mergeSort(input, comparator, limit);
}

function parse(source: string): Any {
  return jsonata(source).ast();
}

/** The library compiled code resolves free names against, and the evaluation-bound $now and $millis. */
export const LIBRARY: Record<string, Any> = {
  ...COMPILED_LIBRARY,
  now: defineFunction(function (picture: Any, timezone: Any) {
    return JSONATA.fromMillis.implementation.call(focus, environment.timestamp!.getTime(), picture, timezone);
  }, parseSignature('<s?s?:s>')),
  millis: defineFunction(function () {
    return environment.timestamp!.getTime();
  }, parseSignature('<:n>')),
};
