/**
 * Compiles a JSONata expression's parsed form (`jsonata(source).ast()`) to a synchronous JavaScript
 * function with the interpreter's results.
 *
 * The code is generated from the AST, and nothing of the expression's text reaches it: field names,
 * variable names, literals and AST nodes go into a constants array `K` the code indexes; variables
 * become generated identifiers (`v3`), operators and positions come from a fixed set or are checked to be
 * integers. The generated function is built once per expression with `new Function` over that code.
 *
 * Each AST node compiles to statements that leave `evaluate(node, input)`'s value in a temporary: the
 * node's own evaluation (runtime.ts mirrors the evaluator function by function), then its predicates,
 * its grouping, and the sequence normalisation. Where the shape is known statically the code takes a
 * shorter way with the same result: a path of plain names read in line, an object constructor with
 * literal keys met with one object, a library function called directly when its arguments fit its
 * signature, variables resolved to the frame that binds them.
 *
 * Variables: a JSONata frame (the top, a block, a lambda's invocation) is a JavaScript scope. A name a
 * frame may bind (`:=` anywhere in its own region) is a `let` that starts UNBOUND, so a lookup falls
 * through to the enclosing frame exactly as long as JSONata's would; lambda parameters are always bound.
 * Names bound by no frame are resolved once per evaluation against the bindings and the function library.
 *
 * What it does not cover, the expression runs on the interpreter for (`unsupported` says why):
 * - the parent operator `%` and the focus and index bindings `@$v`, `#$i` (JSONata's tuple streams);
 * - `$eval` (it evaluates text in the caller's environment);
 * - `:=` inside a member of an array or object constructor, binding into the enclosing frame: JSONata
 *   evaluates the members concurrently, so which member sees the binding depends on its scheduling.
 */
import jsonata from 'jsonata';
import { LIBRARY, Shape, begin, next, paramsOf, wrapInput } from './runtime.ts';
import * as runtime from './runtime.ts';
import type { Any } from './library.ts';
import type { Limit } from './limits.ts';

type Node = Any;

export class Unsupported extends Error {}

/** A compiled expression. */
export class Program {
  constructor(
    private readonly body: (input: Any, root: Any, bindings: Record<string, Any>, free: Any[]) => Any,
    /** Names no frame of the expression binds: bindings or library functions. */
    readonly freeNames: string[],
  ) {}

  /** The values of the free names for these bindings: once per evaluation, or per page. */
  resolve(bindings: Record<string, Any>): Any[] {
    const own = (o: object, name: string) => Object.prototype.hasOwnProperty.call(o, name);
    return this.freeNames.map((name) => (own(bindings, name) ? bindings[name] : own(LIBRARY, name) ? LIBRARY[name] : undefined));
  }

  /** Evaluates against `input`, as the interpreter's `evaluate(input, bindings)` would. */
  run(input: Any, bindings: Record<string, Any>, free: Any[], limit: Limit): Any {
    begin(limit);
    return this.body(wrapInput(input), input, bindings, free);
  }

  /**
   * Evaluates `items[from]` and those after it into `out`, one evaluation each under one Limit, and
   * stops at the first that throws: gives its index and error, or the length when all went through.
   */
  each(items: Any[], bindings: Record<string, Any>, free: Any[], limit: Limit, out: Any[], from: number): { index: number; error?: unknown } {
    begin(limit);
    let i = from;
    try {
      for (; i < items.length; i++) {
        limit.tick();
        next();
        out[i] = this.body(wrapInput(items[i]), items[i], bindings, free);
      }
      return { index: i };
    } catch (error) {
      return { index: i, error };
    }
  }

  /** Runs inside an evaluation already begun (the function composition of `~>`). */
  nested(input: Any): Any {
    return this.body(wrapInput(input), input, {}, this.resolve({}));
  }
}

/** Compiles an AST, or throws Unsupported when it uses what the compiler leaves to the interpreter. */
export function compileAst(ast: Node): Program {
  check(ast);
  return new Generator().program(ast);
}

/** Compiles source text (for tests and benches: the Expression class compiles the AST it already has). */
export function compileSource(source: string): Program {
  return compileAst(jsonata(source).ast());
}

// ---- what the compiler covers ----

/** The nodes `evaluate` reaches from `node` without entering a new frame, with the frame boundaries flagged. */
function children(node: Node): { node: Node; frame: boolean }[] {
  const out: { node: Node; frame: boolean }[] = [];
  const add = (n: Node, frame = false) => n && typeof n === 'object' && out.push({ node: n, frame });
  const filters = (list: Node[] | undefined) => list?.forEach((f) => f.type === 'filter' && add(f.expr));
  const pairs = (list: Node[][] | undefined) => list?.forEach(([k, v]) => (add(k), add(v)));
  switch (node.type) {
    case 'path':
      node.steps.forEach(add);
      break;
    case 'binary':
    case 'apply':
      add(node.lhs);
      add(node.rhs);
      break;
    case 'bind':
      add(node.rhs);
      break;
    case 'unary':
      if (node.value === '[') node.expressions.forEach(add);
      else if (node.value === '{') pairs(node.lhs);
      else add(node.expression);
      break;
    case 'function':
    case 'partial':
      add(node.procedure);
      node.arguments.forEach(add);
      break;
    case 'lambda':
      add(node.body, !node.thunk);
      break;
    case 'condition':
      add(node.condition);
      add(node.then);
      add(node.else);
      break;
    case 'block':
      node.expressions.forEach((e: Node) => add(e, true));
      break;
    case 'transform':
      add(node.pattern);
      add(node.update);
      add(node.delete);
      break;
    case 'sort':
      node.terms.forEach((t: Node) => add(t.expression));
      break;
  }
  filters(node.predicate);
  filters(node.stages);
  pairs(node.group?.lhs);
  return out;
}

const TYPES = new Set(['path', 'binary', 'unary', 'name', 'string', 'number', 'value', 'wildcard', 'descendant', 'condition', 'block', 'bind', 'regex', 'function', 'variable', 'lambda', 'partial', 'apply', 'transform', 'sort']);

/** Throws Unsupported for what the compiler leaves to the interpreter (see the module comment). */
function check(node: Node, inMember = false): void {
  if (!TYPES.has(node.type)) {
    throw new Unsupported(node.type === 'parent' ? 'the parent operator %' : `a ${node.type} node`);
  }
  if (node.tuple || node.focus !== undefined || node.ancestor !== undefined || node.seekingParent !== undefined || typeof node.index === 'string' || node.stages?.some((s: Node) => s.type !== 'filter')) {
    throw new Unsupported('a focus (@), index (#) or parent (%) binding');
  }
  if (node.type === 'variable' && node.value === 'eval') throw new Unsupported('$eval');
  if (node.type === 'bind' && inMember) throw new Unsupported('a := inside a member of an array or object constructor');
  // The members JSONata evaluates concurrently (Promise.all): array items, object and group values.
  const members = new Set<Node>();
  if (node.type === 'unary' && node.value === '[') node.expressions.forEach((m: Node) => members.add(m));
  if (node.type === 'unary' && node.value === '{') node.lhs.forEach((pair: Node[]) => members.add(pair[1]));
  node.group?.lhs.forEach((pair: Node[]) => members.add(pair[1]));
  for (const child of children(node)) {
    if (node.type === 'partial' && child.node.type === 'operator' && child.node.value === '?') continue;
    check(child.node, !child.frame && (inMember || members.has(child.node)));
  }
}

/** The names `:=` binds in the frame a region of code evaluates in (not in the frames it opens). */
function bindsOf(region: Node[]): string[] {
  const names = new Set<string>();
  const walk = (node: Node) => {
    if (node.type === 'bind') names.add(node.lhs.value);
    for (const child of children(node)) if (!child.frame) walk(child.node);
  };
  region.forEach(walk);
  return [...names];
}

// ---- code generation ----

interface Frame {
  parent?: Frame;
  vars: Map<string, { js: string; certain: boolean }>;
}

const OPERATORS = new Set(['+', '-', '*', '/', '%', '=', '!=', '<', '<=', '>', '>=', '&', '..', 'in', 'and', 'or']);

class Generator {
  private readonly constants: Any[] = [];
  private readonly free = new Map<string, number>();
  private counter = 0;
  private lines: string[] = [];
  /** Temporaries that hold a value evaluate() would not change (see `direct`). */
  private readonly normalized = new Set<string>();
  /** Inputs known to be ordinary (see ordinaryTest) or not, by the constant that says so (see `group`). */
  private readonly ordinary = new Map<string, string>();
  /** Functions of the factory, beside `program` (see `outline`). */
  private readonly outlined: string[] = [];

  program(ast: Node): Program {
    const top: Frame = { vars: new Map([['$', { js: 'root', certain: true }]]) };
    const binds = bindsOf([ast]);
    for (const name of binds) {
      if (top.vars.has(name)) continue;
      const js = this.id('v');
      top.vars.set(name, { js, certain: false });
      this.emit(`let ${js} = Object.prototype.hasOwnProperty.call(B, ${this.k(name)}) ? B[${this.k(name)}] : U;`);
    }
    const result = this.value(ast, 'input', top);
    // The runtime's functions as local constants: calls through the module namespace object are slower.
    const body = `${this.outlined.join('\n')}\nreturn function program(input, root, B, F) {\n${this.lines.join('\n')}\nreturn ${result};\n};`;
    const used = Object.keys(runtime).filter((name) => new RegExp(`\\bR\\.${name}\\b`).test(body));
    // The constants as local constants too (`K3` for K[3]): a context slot the code reads, where an
    // element of K is a load through the array with its bounds check.
    const constants = this.constants.length ? `const ${this.constants.map((_, i) => `K${i} = K[${i}]`).join(', ')};\n` : '';
    const code = `"use strict";\nconst U = R.UNBOUND;\nconst { ${used.join(', ')} } = R;\n${constants}${body.replace(/\bR\.(\w+)\b/g, '$1')}`;
    return new Program(new Function('R', 'K', code)(runtime, this.constants), [...this.free.keys()]);
  }

  private emit(line: string): void {
    this.lines.push(line);
  }

  private id(prefix = 't'): string {
    return `${prefix}${this.counter++}`;
  }

  /** A constant the code reads by index (as `K${i}`, see `program`): how names, literals and AST nodes reach it. */
  private k(value: Any): string {
    let i = this.constants.indexOf(value);
    if (i < 0 || (typeof value === 'number' && !Object.is(this.constants[i], value))) i = this.constants.push(value) - 1;
    return `K${i}`;
  }

  private int(n: Any): string {
    if (n === undefined) return 'undefined';
    if (!Number.isInteger(n)) throw new Unsupported('a position that is not an integer');
    return String(n);
  }

  private op(value: string): string {
    if (!OPERATORS.has(value)) throw new Unsupported(`the operator ${value}`);
    return JSON.stringify(value);
  }

  /** Generates statements into a fresh list (a branch, a function body) and gives them back. */
  private block(generate: () => string): { lines: string[]; value: string } {
    const saved = this.lines;
    this.lines = [];
    try {
      const value = generate();
      return { lines: this.lines, value };
    } finally {
      this.lines = saved;
    }
  }

  /** A JavaScript function `(param) => evaluate(...)`, generated in its own scope. */
  private fn(param: string, generate: (param: string) => string): string {
    const { lines, value } = this.block(() => generate(param));
    return `((${param}) => {\n${lines.join('\n')}\nreturn ${value};\n})`;
  }

  /** A variable reference: the frames that may bind the name, innermost first, then the free value. */
  private ref(name: string, frame: Frame): string {
    const maybe: string[] = [];
    let found: string | undefined;
    for (let f: Frame | undefined = frame; f && found === undefined; f = f.parent) {
      const v = f.vars.get(name);
      if (v?.certain) found = v.js;
      else if (v) maybe.push(v.js);
    }
    if (found === undefined) {
      let slot = this.free.get(name);
      if (slot === undefined) this.free.set(name, (slot = this.free.size));
      found = `F[${slot}]`;
    }
    return maybe.reduceRight((rest, js) => `(${js} !== U ? ${js} : ${rest})`, found);
  }

  private assign(value: string): string {
    const t = this.id();
    this.emit(`let ${t} = ${value};`);
    return t;
  }

  /** evaluate(node, ctx): the node, its predicates, its grouping, the normalisation of sequences. */
  value(node: Node, ctx: string, frame: Frame): string {
    let result = this.core(node, ctx, frame);
    if (this.normalized.has(result) && !node.predicate && !node.group && !node.keepArray) return result;
    for (const predicate of node.predicate ?? []) result = this.filter(predicate.expr, this.assign(result), frame);
    if (node.type !== 'path' && node.group) result = this.group(node.group.lhs, this.assign(result), node.group.position, frame);
    if (node.keepArray) result = `R.normKeep(${result})`;
    else if (node.predicate || SEQUENCES.has(node.type) || (node.type === 'binary' && node.value === '..')) {
      if (!(node.type === 'path' && namesOnly(node))) result = `R.norm(${result})`;
    }
    return this.assign(result);
  }

  private core(node: Node, ctx: string, frame: Frame): string {
    switch (node.type) {
      case 'path':
        return this.path(node, ctx, frame);
      case 'binary':
        return this.binary(node, ctx, frame);
      case 'unary':
        if (node.value === '-') return `R.negate(${this.value(node.expression, ctx, frame)}, ${this.int(node.position)})`;
        if (node.value === '[') return this.array(node, ctx, frame);
        return this.group(node.lhs, ctx, node.position, frame);
      case 'string':
      case 'number':
      case 'value':
        return this.k(node.value);
      case 'wildcard':
        return `R.wildcard(${ctx})`;
      case 'descendant':
        return `R.descendants(${ctx})`;
      case 'condition':
        return this.condition(node, ctx, frame);
      case 'block':
        return this.blockNode(node, ctx, frame);
      case 'bind': {
        const value = this.value(node.rhs, ctx, frame);
        this.emit(`${frame.vars.get(node.lhs.value)!.js} = ${value};`);
        return value;
      }
      case 'regex':
        return `R.regex(${this.k(node.value)}, ${this.int(node.position)})`;
      case 'function':
        return this.call(node, ctx, frame);
      case 'variable':
        return node.value === '' ? `R.context(${ctx})` : this.ref(node.value, frame);
      case 'lambda':
        return node.thunk ? this.thunk(node, ctx, frame) : this.lambda(node, ctx, frame);
      case 'partial':
        return this.partial(node, ctx, frame);
      case 'apply':
        return this.apply(node, ctx, frame);
      case 'transform':
        return this.transform(node, ctx, frame);
      case 'name':
        return `R.lookup(${ctx}, ${this.k(node.value)})`;
      default:
        throw new Unsupported(`a ${node.type} node`);
    }
  }

  // ---- paths ----

  private path(node: Node, ctx: string, frame: Frame): string {
    const steps: Node[] = node.steps;
    const kind = namesOnly(node);
    if (kind === 'after variable') return `R.namesAfter(${this.value(steps[0], ctx, frame)}, ${this.k(steps.slice(1).map((s) => s.value))})`;
    if (kind === 'names') return this.names(ctx, steps.map((s) => s.value));

    const input = this.assign(steps[0].type === 'variable' ? `R.seqOf(${ctx})` : `(Array.isArray(${ctx}) ? ${ctx} : R.seqOf(${ctx}))`);
    const rs = this.id();
    const label = this.id('p');
    this.emit(`let ${rs};`);
    this.emit(`${label}: {`);
    steps.forEach((step, i) => {
      const last = i === steps.length - 1;
      if (i === 0 && step.consarray) {
        this.emit(`${rs} = ${this.value(step, input, frame)};`);
      } else if (step.type === 'sort') {
        const terms = step.terms.map((t: Node) => `[${this.fn(this.id('i'), (item) => this.value(t.expression, item, frame))}, ${t.descending === true}]`);
        this.emit(`${rs} = R.orderBy(${input}, [${terms.join(', ')}], ${this.int(step.position)});`);
        for (const stage of step.stages ?? []) this.emit(`${rs} = ${this.filter(stage.expr, rs, frame)};`);
      } else {
        const one = this.fn(this.id('i'), (item) => {
          let res = this.value(step, item, frame);
          for (const stage of step.stages ?? []) res = this.assign(this.filter(stage.expr, res, frame));
          return res;
        });
        this.emit(`${rs} = R.step(${input}, ${one}, ${last});`);
      }
      this.emit(`if (${rs} === undefined || ${rs}.length === 0) break ${label};`);
      this.emit(`${input} = ${rs};`);
    });
    this.emit('}');
    if (node.keepSingletonArray) this.emit(`${rs} = R.keepSingleton(${rs});`);
    if (node.group) return this.group(node.group.lhs, rs, node.group.position, frame);
    return rs;
  }

  /**
   * A path of plain names. Where each step meets an ordinary object (prototype Object.prototype or null,
   * not an array, not a function) holding the name with a value that is not an array, the value is
   * read in line, with the property caches of its own code; otherwise R.names walks the path. Names
   * Object.prototype itself has (`constructor`, `toString`...) always take the long way.
   */
  private names(ctx: string, keys: string[]): string {
    const general = keys.length === 1 ? `R.name(${ctx}, ${this.k(keys[0])})` : `R.names(${ctx}, ${this.k(keys)})`;
    if (keys.some((key) => key in Object.prototype)) return general;
    const result = this.id();
    const tests: string[] = [];
    let from = ctx;
    for (const key of keys) {
      tests.push(`${this.ordinary.get(from) ?? ordinaryTest(from)} && (${result} = ${from}[${this.k(key)}]) !== undefined && !Array.isArray(${result})`);
      from = result;
    }
    this.emit(`let ${result};`);
    this.emit(`if (!(${tests.join(' && ')})) ${result} = ${general};`);
    return result;
  }

  /**
   * An expression of the top frame, evaluated by a function of the factory called with program's
   * parameters: the expression reads no other variable of program (no frame variable but `$`, which
   * is `root`) and is a value computed there and then, so the copy of the parameters is the same.
   */
  private outline(expression: string): string {
    const name = this.id('g');
    this.outlined.push(`const ${name} = function (input, root, B, F) {\nreturn ${expression};\n};`);
    return `${name}(input, root, B, F)`;
  }

  /** evaluateFilter: a number literal indexes, anything else is a predicate per item. */
  private filter(predicate: Node, input: string, frame: Frame): string {
    if (predicate.type === 'number') return `R.at(${input}, ${this.k(predicate.value)})`;
    return `R.where(${input}, ${this.fn(this.id('i'), (item) => this.value(predicate, item, frame))})`;
  }

  // ---- constructors ----

  private array(node: Node, ctx: string, frame: Frame): string {
    const result = this.id();
    this.emit(`let ${result} = [];`);
    for (const item of node.expressions) {
      const value = this.value(item, ctx, frame);
      this.emit(`${result} = R.member(${result}, ${value}, ${item.value === '['});`);
    }
    if (node.consarray) this.emit(`R.cons(${result});`);
    return `R.built(${result})`;
  }

  /**
   * evaluateGroupExpression. With literal keys (distinct, not reserved) and one object as input, each
   * key makes its own group: the values are evaluated with the input as context, in the order JSONata's
   * groups object lists its keys, into a fresh object.
   */
  private group(pairs: Node[][], input: string, position: number, frame: Frame): string {
    const general = () =>
      `R.group(${input}, [${pairs.map(([key, value]) => `[${this.fn(this.id('i'), (i) => this.value(key, i, frame))}, ${this.fn(this.id('c'), (c) => this.value(value, c, frame))}]`).join(', ')}], ${this.int(position)})`;
    const keys = pairs.map(([key]) => (key.type === 'string' && !key.predicate && !key.group && !key.keepArray ? key.value : undefined));
    const literal = keys.every((k) => typeof k === 'string') && new Set(keys).size === keys.length && !keys.includes('_jsonata_lambda') && !keys.includes('_jsonata_function');
    if (!literal) return general();
    const result = this.id();
    this.emit(`let ${result};`);
    // At the top of an expression, the general way (its closures) goes in a function of its own: closures
    // in `program` would have it allocate, on every call, a context for the variables they read.
    const top = input === 'input' && !frame.parent && frame.vars.size === 1;
    this.emit(`if (Array.isArray(${input})) ${result} = ${top ? this.outline(general()) : general()};`);
    const order = Object.keys(Object.fromEntries(keys.map((k, i) => [k, i]))) as string[];
    const { lines } = this.block(() => {
      // The values read names off the same input: whether it is ordinary is asked once.
      const ordinary = this.id('o');
      this.emit(`const ${ordinary} = ${ordinaryTest(input)};`);
      this.ordinary.set(input, ordinary);
      const values = order.map((key) => this.value(pairs[keys.indexOf(key)][1], input, frame));
      this.ordinary.delete(input);
      // The object is a copy of an R.Shape template with the keys of the defined values already in place,
      // so that it stays a fast object however many keys it has (see there), then gets its null prototype.
      const mask = values.length <= 30 ? values.map((v, i) => `(${v} !== undefined ? ${2 ** i} : 0)`).join(' | ') : '-1';
      const template = this.id();
      this.emit(`const ${template} = ${this.k(new Shape(order))}.template(${mask});`);
      this.emit(`${result} = ${template} !== undefined ? { ...${template} } : R.bare();`);
      values.forEach((value, i) => this.emit(`if (${value} !== undefined) ${result}[${this.k(order[i])}] = ${value};`));
      this.emit(`Object.setPrototypeOf(${result}, null);`);
      return '';
    });
    this.emit(`else {\n${lines.join('\n')}\n}`);
    return result;
  }

  // ---- operators ----

  private binary(node: Node, ctx: string, frame: Frame): string {
    const op = node.value;
    const lhs = this.value(node.lhs, ctx, frame);
    if (op === 'and' || op === 'or') {
      const result = this.id();
      const rhs = this.block(() => this.value(node.rhs, ctx, frame));
      const test = op === 'and' ? result : `!${result}`;
      this.emit(`let ${result};`);
      this.emit(`try {\n${result} = R.truthy(${lhs});\nif (${test}) {\n${rhs.lines.join('\n')}\n${result} = R.truthy(${rhs.value});\n}\n} catch (e) { throw R.located(e, ${this.int(node.position)}, ${this.op(op)}); }`);
      return result;
    }
    const rhs = this.value(node.rhs, ctx, frame);
    const position = this.int(node.position);
    switch (op) {
      case '+':
      case '-':
      case '*':
      case '/':
      case '%':
        return `R.numeric(${lhs}, ${rhs}, ${this.op(op)}, ${position})`;
      case '=':
        // Against a string, number, boolean or null literal, isDeepEqual comes to ===, which is also
        // false when the other side is undefined: the comparison needs no call.
        if (primitive(node.lhs) || primitive(node.rhs)) return `(${lhs} === ${rhs})`;
        return `R.equal(${lhs}, ${rhs})`;
      case '!=':
        if (primitive(node.lhs) || primitive(node.rhs)) return `(${lhs} !== undefined && ${rhs} !== undefined && ${lhs} !== ${rhs})`;
        return `(${lhs} !== undefined && ${rhs} !== undefined && !R.equal(${lhs}, ${rhs}))`;
      case '<':
      case '<=':
      case '>':
      case '>=':
        return `R.compare(${lhs}, ${rhs}, ${this.op(op)}, ${position})`;
      case '&':
        return `R.concat(${lhs}, ${rhs}, ${position})`;
      case '..':
        return `R.range(${lhs}, ${rhs}, ${position})`;
      case 'in':
        return `R.includes(${lhs}, ${rhs})`;
      default:
        throw new Unsupported(`the operator ${op}`);
    }
  }

  private condition(node: Node, ctx: string, frame: Frame): string {
    const test = this.value(node.condition, ctx, frame);
    const result = this.id();
    const then = this.block(() => this.value(node.then, ctx, frame));
    this.emit(`let ${result};`);
    this.emit(`if (typeof ${test} === 'boolean' ? ${test} : R.boolean(${test})) {\n${then.lines.join('\n')}\n${result} = ${then.value};\n}`);
    if (node.else !== undefined) {
      const otherwise = this.block(() => this.value(node.else, ctx, frame));
      this.emit(`else {\n${otherwise.lines.join('\n')}\n${result} = ${otherwise.value};\n}`);
    }
    return result;
  }

  /** evaluateBlock: a frame of its own, for the names its expressions bind. */
  private blockNode(node: Node, ctx: string, frame: Frame): string {
    const inner: Frame = { parent: frame, vars: new Map() };
    const result = this.id();
    this.emit(`let ${result};`);
    const { lines } = this.block(() => {
      for (const name of bindsOf(node.expressions)) {
        const js = this.id('v');
        inner.vars.set(name, { js, certain: false });
        this.emit(`let ${js} = U;`);
      }
      for (const expression of node.expressions) this.emit(`${result} = ${this.value(expression, ctx, inner)};`);
      return '';
    });
    this.emit(`{\n${lines.join('\n')}\n}`);
    return result;
  }

  // ---- functions ----

  /** The name JSONata gives a call in errors: the procedure's variable, or the first step of its path. */
  private procName(procedure: Node): Any {
    return procedure.type === 'path' ? procedure.steps[0].value : procedure.value;
  }

  /** evaluateFunction; `context` is the left side of `~>`, passed first and unwrapped. */
  private call(node: Node, ctx: string, frame: Frame, context?: string): string {
    const procedure = node.procedure;
    // A plain variable as procedure is read without normalising: a function is its own normal form, and
    // the direct way below compares it with the library's; the other ways normalise it.
    const plain = procedure.type === 'variable' && procedure.value !== '' && !procedure.predicate && !procedure.group && !procedure.keepArray;
    const raw = plain ? this.assign(this.ref(procedure.value, frame)) : undefined;
    const proc = raw !== undefined ? `R.norm(${raw})` : this.value(procedure, ctx, frame);
    this.forgotDollar('T1005', node, proc, frame);
    const values: string[] = node.arguments.map((arg: Node) => this.value(arg, ctx, frame));
    const position = this.int(node.position);
    const token = this.k(this.procName(procedure));
    if (context === undefined && values.length >= 1 && values.length <= 3) {
      const native = `R.native(${proc}, ${ctx}, ${position}, ${token}, ${values.length}, ${values.join(', ')})`;
      return (raw !== undefined && this.direct(procedure.value, raw, values, native)) || native;
    }
    const args = context === undefined ? [] : [context];
    for (const value of values) args.push(`R.argument(${value})`);
    return `R.call(${proc}, [${args.join(', ')}], ${ctx}, ${position}, ${token})`;
  }

  /**
   * A call of a library function (`$trim(name)`) in line: when the procedure is that function and the
   * arguments have the types its signature takes at their positions (tested here with typeof, from the
   * signature), its implementation is called directly, a call the JIT can see through, and a function
   * that returns a string, number or boolean needs no normalising. Anything else, or an error, takes the
   * `native` way, which gives JSONata's validation and errors and records the call site on the function
   * (the direct way leaves that out: only errors read it, and errors take the other way).
   */
  private direct(name: string, proc: string, values: string[], otherwise: string): string | undefined {
    const definition = Object.prototype.hasOwnProperty.call(LIBRARY, name) ? LIBRARY[name] : undefined;
    if (!definition?.signature) return undefined;
    const params = paramsOf(definition.signature);
    if (values.length > params.length || values.length < params.optionalFrom) return undefined;
    const tests: string[] = [];
    for (let i = 0; i < values.length; i++) {
      const param = params[i];
      if (param.type === 'a' || param.variadic) return undefined;
      const v = values[i];
      const symbols = [...param.symbols].filter((symbol) => symbol !== 'f');
      if (!symbols.length) return undefined;
      if (symbols.length === 7) {
        tests.push(`R.notFunction(${v})`);
        continue;
      }
      const test: Record<string, string> = { s: `typeof ${v} === 'string'`, n: `typeof ${v} === 'number'`, b: `typeof ${v} === 'boolean'`, l: `${v} === null`, m: `${v} === undefined`, a: `Array.isArray(${v})`, o: `(typeof ${v} === 'object' && ${v} !== null && !Array.isArray(${v}) && R.notFunction(${v}))` };
      tests.push(`(${symbols.map((symbol) => test[symbol]).join(' || ')})`);
    }
    const scalar = /:[snb]>$/.test(definition.signature.definition);
    const result = this.id();
    this.emit(`let ${result};`);
    const call = `if (${proc} === ${this.k(definition)} && ${tests.join(' && ')}) {\ntry { ${result} = ${this.k(definition.implementation)}.call(R.focus, ${values.join(', ')}); } catch { ${result} = R.norm(${otherwise}); }\n${scalar ? '' : `${result} = R.norm(${result});\n`}} else ${result} = R.norm(${otherwise});`;
    // The common case in line first (see INLINE); when it does not apply, or gives undefined, the call.
    const inline = INLINE[name]?.(values);
    this.emit(inline ? `if (!(${proc} === ${this.k(definition)} && ${inline.test} && (${result} = ${inline.value}) !== undefined)) {\n${call}\n}` : call);
    this.normalized.add(result);
    return result;
  }

  /** JSONata's hint when a path names a function: `string(x)` where `$string` was meant. */
  private forgotDollar(code: 'T1005' | 'T1007', node: Node, proc: string, frame: Frame): void {
    if (node.procedure.type !== 'path') return;
    const name = node.procedure.steps[0].value;
    this.emit(`if (${proc} === undefined && ${this.ref(name, frame)}) R.notAFunction(${JSON.stringify(code)}, ${this.int(node.position)}, ${this.k(name)});`);
  }

  private lambda(node: Node, ctx: string, frame: Frame): string {
    const inner: Frame = { parent: frame, vars: new Map() };
    const args = this.id('a');
    const { lines, value } = this.block(() => {
      node.arguments.forEach((param: Node, i: number) => {
        const js = this.id('v');
        inner.vars.set(param.value, { js, certain: true });
        this.emit(`let ${js} = ${args}[${i}];`);
      });
      for (const name of bindsOf([node.body])) {
        if (inner.vars.has(name)) continue;
        const js = this.id('v');
        inner.vars.set(name, { js, certain: false });
        this.emit(`let ${js} = U;`);
      }
      return this.value(node.body, ctx, inner);
    });
    return `R.lambda(${this.k(node)}, ${ctx}, (${args}) => {\n${lines.join('\n')}\nreturn ${value};\n})`;
  }

  /** A tail call: the trampoline in R.apply evaluates its procedure and arguments (unwrapped). */
  private thunk(node: Node, ctx: string, frame: Frame): string {
    const call = node.body;
    const { lines, value } = this.block(() => {
      const proc = this.value(call.procedure, ctx, frame);
      if (call.procedure.type === 'variable') this.emit(`${proc}.token = ${this.k(call.procedure.value)};`);
      this.emit(`${proc}.position = ${this.int(call.procedure.position)};`);
      const args = call.arguments.map((arg: Node) => this.value(arg, ctx, frame));
      return `[${proc}, [${args.join(', ')}]]`;
    });
    return `R.thunk(() => {\n${lines.join('\n')}\nreturn ${value};\n})`;
  }

  private partial(node: Node, ctx: string, frame: Frame): string {
    const args = node.arguments.map((arg: Node) => (arg.type === 'operator' && arg.value === '?' ? this.k(arg) : this.value(arg, ctx, frame)));
    const proc = this.value(node.procedure, ctx, frame);
    this.forgotDollar('T1007', node, proc, frame);
    return `R.partial(${proc}, [${args.join(', ')}], ${this.int(node.position)}, ${this.k(this.procName(node.procedure))})`;
  }

  /** evaluateApplyExpression (`~>`). */
  private apply(node: Node, ctx: string, frame: Frame): string {
    const lhs = this.value(node.lhs, ctx, frame);
    if (node.rhs.type === 'function') return this.call(node.rhs, ctx, frame, lhs);
    const func = this.value(node.rhs, ctx, frame);
    return `R.applyTo(${lhs}, ${func}, ${this.int(node.position)}, ${this.k(chain)})`;
  }

  private transform(node: Node, ctx: string, frame: Frame): string {
    const clone = `() => ${this.ref('clone', frame)}`;
    const pattern = this.fn(this.id('i'), (i) => this.value(node.pattern, i, frame));
    const update = this.fn(this.id('m'), (m) => this.value(node.update, m, frame));
    const remove = node.delete === undefined ? 'undefined' : this.fn(this.id('m'), (m) => this.value(node.delete, m, frame));
    return `R.transform(${clone}, ${pattern}, ${update}, ${remove}, ${this.int(node.position)}, ${this.int(node.update.position)}, ${this.int(node.delete?.position)})`;
  }
}

/**
 * Node types whose evaluation may give a sequence, which evaluate() then normalises. A block, condition
 * or bind gives a value its own evaluate() normalised already (normalising is idempotent).
 */
const SEQUENCES = new Set(['path', 'name', 'variable', 'function', 'partial', 'apply', 'wildcard', 'descendant']);

/**
 * Library functions whose common case `direct` writes in line, ahead of its call: for arguments that
 * pass `test`, `value` is what the library function (library.ts, jsonata.js) returns, or undefined
 * where it leaves the case to the call. The forms throw nothing and build nothing the budget counts.
 */
const INLINE: Record<string, (v: string[]) => { test: string; value: string } | undefined> = {
  // fn.lowercase, fn.uppercase: the string's toLowerCase(), toUpperCase().
  lowercase: ([s]) => ({ test: `typeof ${s} === 'string'`, value: `${s}.toLowerCase()` }),
  uppercase: ([s]) => ({ test: `typeof ${s} === 'string'`, value: `${s}.toUpperCase()` }),
  // The bounded $string of library.ts: a string as it is, an integer as String() writes it.
  string: ([a, prettify]) => (prettify === undefined ? { test: `(typeof ${a} === 'string' || Number.isInteger(${a}))`, value: `(typeof ${a} === 'string' ? ${a} : String(${a}))` } : undefined),
  trim: ([s]) => ({ test: `typeof ${s} === 'string'`, value: `R.plainTrim(${s})` }),
  // $toMillis without a picture: library.ts's toMillis reads the usual ISO 8601 form with isoMillis.
  toMillis: ([s, picture]) => (picture === undefined ? { test: `typeof ${s} === 'string'`, value: `R.isoMillis(${s})` } : undefined),
  substringBefore: ([s, chars]) => (chars === undefined ? undefined : { test: `typeof ${s} === 'string' && typeof ${chars} === 'string'`, value: `R.substringBefore(${s}, ${chars})` }),
  substringAfter: ([s, chars]) => (chars === undefined ? undefined : { test: `typeof ${s} === 'string' && typeof ${chars} === 'string'`, value: `R.substringAfter(${s}, ${chars})` }),
};

/**
 * Whether `x` is an ordinary object (see R.plainPrototype), tested in the compiled code: its property
 * reads then have inline caches of their own expression, which sees the few shapes of its records,
 * where those of a runtime function, shared by every expression of the process, go megamorphic once
 * a few syncs with records of other shapes have run.
 */
function ordinaryTest(x: string): string {
  return `(typeof ${x} === 'object' && ${x} !== null && !Array.isArray(${x}) && ${x}._jsonata_function !== true && ${x}._jsonata_lambda !== true && R.plainPrototype(${x}))`;
}

/** A string, number, boolean or null literal, as it is (no predicate, grouping or `[]`). */
function primitive(node: Node): boolean {
  return (node.type === 'string' || node.type === 'number' || node.type === 'value') && !node.predicate && !node.group && !node.keepArray && !node.stages;
}

/**
 * A path of plain names (`a.b.c`), or a variable followed by plain names (`$x.a.b`): runtime.ts walks
 * those without building JSONata's sequences, and gives a normalised value.
 */
function namesOnly(node: Node): 'names' | 'after variable' | undefined {
  const steps: Node[] = node.steps;
  const plain = (s: Node) => s.type === 'name' && !s.stages && !s.predicate && !s.keepArray && !s.group;
  if (node.keepSingletonArray || node.group || node.keepArray) return undefined;
  if (steps.every(plain)) return 'names';
  if (steps.length > 1 && steps[0].type === 'variable' && !steps[0].predicate && !steps[0].keepArray && !steps[0].group && steps.slice(1).every(plain)) return 'after variable';
  return undefined;
}

/** The function composition `f ~> g` builds, compiled from the interpreter's own definition. */
let composition: Program | undefined;
function chain(): Any {
  composition ??= compileSource('function($f, $g) { function($x){ $g($f($x)) } }');
  return composition.nested(null);
}
