import jsonata from 'jsonata';
import { Program, Unsupported, compileAst } from './compiler.ts';
import { INTERPRETER_OVERRIDES, LIMIT_KEY, type Any } from './library.ts';
import { ExpressionError, Limit, LimitError, MAX_DEPTH } from './limits.ts';
import { createSequence } from './runtime.ts';
import { Re2RegExp } from './regex.ts';
import { threadCpuMs } from '../thread-cpu.ts';

export { ExpressionError, LIMIT_CODE, MAX_ALLOCATED, MAX_LENGTH } from './limits.ts';

/** Longest time one evaluation of a provider file's expression may run (one page, for evaluateEach). */
export const DEFAULT_TIME_LIMIT_MS = 2000;

/** The time limit of an evaluation over a page of `n` records: the default, and 10 ms more a record. */
export const pageTimeLimitMs = (n: number) => DEFAULT_TIME_LIMIT_MS + 10 * n;

const ENTRY = Symbol.for('jsonata.__evaluate_entry');
const EXIT = Symbol.for('jsonata.__evaluate_exit');

/** Where an expression stands in a provider file, for errors at run time; located only when needed. */
export interface ExpressionOrigin {
  /** The key path in the file, e.g. ['syncs', 'issues', 'mapping']. */
  path: string[];
  /** file:line:col of the expression's value (computed on demand: positions cost a YAML parse). */
  locate(): { file: string; line: number; col: number };
}

/**
 * Where evaluations run when not on this thread. The thread that serves the API sets one that sends
 * them to worker threads (core/jobs/pools.ts): an expression from a provider file must never stall
 * or take down the API. Worker threads evaluate here.
 */
export type Executor = (expr: Expression, input: unknown, bindings: Record<string, unknown>, timeLimitMs: number) => Promise<unknown>;
let executor: Executor | undefined;
export function runEvaluationsWith(run: Executor | undefined): void {
  executor = run;
}

/**
 * A worker thread's report to its watchdog: the deadline of the evaluation in progress (0 when
 * none) and its time limit, in memory both threads see, and which expression it is when that changes. The bounds of
 * limits.ts stop an evaluation from inside; a thread stuck where they do not look (a long builtin
 * on the interpreter) is stopped by the watchdog instead.
 */
let watch: { slot: Float64Array; onExpression: (expr: Expression) => void; last?: Expression; active: Limit[] } | undefined;
export function reportDeadlines(slot: Float64Array | undefined, onExpression: (expr: Expression) => void = () => {}): void {
  watch = slot ? { slot, onExpression, active: [] } : undefined;
}

/** Evaluations can interleave (a page's request is built while the last page is mapped): the slot holds the earliest deadline. */
function watching(limit: Limit, expr: Expression): () => void {
  if (!watch) return () => {};
  const w = watch;
  const report = () => {
    const first = w.active.reduce<Limit | undefined>((a, b) => (a && a.deadline <= b.deadline ? a : b), undefined);
    w.slot[0] = first?.deadline ?? 0;
    w.slot[1] = first?.timeLimitMs ?? 0;
  };
  w.active.push(limit);
  report();
  if (w.last !== expr) w.onExpression((w.last = expr));
  return () => {
    w.active.splice(w.active.indexOf(limit), 1);
    report();
  };
}

function parse(source: string): jsonata.Expression {
  try {
    // JSONata's regexes run on RE2: linear time whatever the pattern (regex.ts).
    return jsonata(source, { RegexEngine: Re2RegExp as unknown as RegExpConstructor });
  } catch (e) {
    const err = e as { message: string; position?: number; code?: string };
    throw new ExpressionError(err.message, err.position, err.code);
  }
}

/** How an expression runs, decided on its first evaluation. */
interface Engine {
  interpreter: jsonata.Expression;
  /** The compiled program, unless the compiler leaves the expression to the interpreter. */
  program?: Program;
  /** Why the interpreter runs it, when it does. */
  unsupported?: string;
}

/**
 * The interpreter, held to the bounds compiled code keeps (limits.ts): the evaluation's Limit travels
 * in its bindings; on entry to each step the hook counts the step, looks at the clock now and then,
 * refuses a nesting deeper than MAX_DEPTH and gives the evaluation bounded sequences; on exit it counts
 * what ranges, concatenations and array constructors built; the builtins that build or split strings
 * and arrays are replaced by their bounded versions.
 */
function interpreter(source: string): jsonata.Expression {
  const expression = parse(source);
  expression.assign(ENTRY as unknown as string, (_node: unknown, _input: unknown, env: Any) => {
    const base = env.base;
    const limit: Limit | undefined = base.lookup(LIMIT_KEY);
    if (!limit) return;
    if (base.createSequence !== createSequence) base.createSequence = createSequence;
    if (base.depth > MAX_DEPTH) limit.depth();
    limit.tick();
  });
  expression.assign(EXIT as unknown as string, (node: Any, _input: unknown, env: Any, result: Any) => {
    const kind = node.type === 'binary' ? (node.value === '..' ? 'a range' : node.value === '&' ? 'a string' : undefined) : node.type === 'unary' && node.value === '[' ? 'an array' : undefined;
    if (kind && result) (env.base.lookup(LIMIT_KEY) as Limit | undefined)?.build(result.length, kind);
  });
  for (const [name, definition] of Object.entries(INTERPRETER_OVERRIDES)) expression.assign(name, definition);
  return expression;
}

/** A JSONata error, or a RangeError of V8's (a string, array or stack past its size), as an ExpressionError. */
function expressionError(e: unknown): ExpressionError {
  if (e instanceof ExpressionError) return e;
  if (e instanceof RangeError) return new LimitError(`an expression went past a limit of the JavaScript engine (${e.message}): make it build less, or recurse less deeply`);
  const err = e as { message: string; position?: number; code?: string };
  return new ExpressionError(err.message, err.position, err.code);
}

/**
 * A JSONata expression from a provider file. Its syntax is checked at load (Expression.check); on its
 * first evaluation it is compiled: to JavaScript (compiler.ts) where the compiler covers it, which gives
 * the interpreter's results some fifty times faster, or else to JSONata's interpreter. JSONata spends
 * some 60 µs setting up its parser on every call, so checking a file's expressions in one parse and
 * compiling each only when a sync or action first needs it keeps loading a large catalogue well under
 * a second (bench/load.ts).
 *
 * Compiled code that fails replays the evaluation on the interpreter, whose error is the one reported:
 * JSONata evaluates the members of a constructor concurrently, so when two fail, which error it reports
 * depends on its scheduling. Errors are rare; identical errors are worth a second run. A bound of
 * limits.ts broken (time, size, allocation) is reported as it is, without a replay.
 *
 * Each evaluation carries its own Limit: evaluations interleave on the interpreter (JSONata is async),
 * so the limit cannot live on the shared compiled expression.
 */
export class Expression {
  private engine?: Engine;

  constructor(
    readonly source: string,
    readonly origin?: ExpressionOrigin,
  ) {}

  /** `file:line:col: "syncs.x.mapping"`, or the start of the source when the expression has no origin. */
  describe(): string {
    if (!this.origin) return `expression ${JSON.stringify(this.source.slice(0, 60))}`;
    const { file, line, col } = this.origin.locate();
    return `${file}:${line}:${col}: "${this.origin.path.join('.')}"`;
  }

  /**
   * Checks many expressions at once; answers the error of each one that does not parse. They are
   * parsed as one JSONata array `[(e1), (e2), ...]`, which is valid exactly when each `(e)` is one
   * block holding a single expression (an `e` with a top-level `;` or unbalanced brackets gives
   * another shape); in any other case each is parsed alone, for its own error and position.
   */
  static check(sources: string[]): Map<number, ExpressionError> {
    const errors = new Map<number, ExpressionError>();
    if (!sources.length) return errors;
    try {
      const ast = jsonata(`[${sources.map((s) => `(${s}\n)`).join(',')}]`).ast() as { type: string; value?: string; expressions?: { type: string; expressions?: unknown[] }[] };
      const items = ast.type === 'unary' && ast.value === '[' ? ast.expressions ?? [] : [];
      if (items.length === sources.length && items.every((i) => i.type === 'block' && i.expressions?.length === 1)) return errors;
    } catch {
      // One of them is wrong: find which, below.
    }
    sources.forEach((source, i) => {
      try {
        parse(source);
      } catch (e) {
        errors.set(i, e as ExpressionError);
      }
    });
    return errors;
  }

  private prepare(): Engine {
    if (this.engine) return this.engine;
    const engine: Engine = { interpreter: interpreter(this.source) };
    try {
      engine.program = compileAst(engine.interpreter.ast());
    } catch (e) {
      // Unsupported, or a fault of the compiler's own (the suite and catalogue tests keep those out):
      // either way the interpreter runs the expression.
      engine.unsupported = e instanceof Unsupported ? e.message : `the compiler failed: ${(e as Error).message}`;
    }
    return (this.engine = engine);
  }

  /** Why it runs on the interpreter (the construct the compiler leaves to it), or undefined when it runs compiled. */
  get unsupported(): string | undefined {
    return this.prepare().unsupported;
  }

  private limit(timeLimitMs: number): Limit {
    return new Limit(timeLimitMs, () => `expression ${JSON.stringify(this.source.slice(0, 80))}`);
  }

  /** Evaluates against `input`; `bindings` become `$name` variables. */
  async evaluate(input: unknown, bindings: Record<string, unknown> = {}, timeLimitMs = DEFAULT_TIME_LIMIT_MS): Promise<unknown> {
    if (executor) return executor(this, input, bindings, timeLimitMs);
    const limit = this.limit(timeLimitMs);
    const done = watching(limit, this);
    try {
      const { program } = this.prepare();
      if (program) {
        try {
          return program.run(input, bindings, program.resolve(bindings), limit);
        } catch (e) {
          if (e instanceof LimitError) throw e;
        }
      }
      return await this.interpret(input, bindings, limit);
    } finally {
      done();
    }
  }

  /**
   * Evaluates once per item (a page of records), in one call: compiled, the page runs synchronously,
   * without a promise per item. The time limit is the page's: a mapping slow enough to matter stops
   * within about `timeLimitMs` whatever the page size. The budget of what an evaluation may build
   * (limits.ts) is each item's. `spent.ms` is added the time the evaluations took, and `spent.cpuMs`
   * this thread's CPU time over the call (where the system tells it: thread-cpu.ts).
   */
  async evaluateEach(items: unknown[], bindings: Record<string, unknown> = {}, timeLimitMs = DEFAULT_TIME_LIMIT_MS, spent?: { ms: number; cpuMs: number }): Promise<unknown[]> {
    if (executor) {
      const out = [];
      for (const item of items) out.push(await executor(this, item, bindings, timeLimitMs));
      return out;
    }
    const limit = this.limit(timeLimitMs);
    const done = watching(limit, this);
    // `spent` gets what the evaluation itself took: compiled runs exactly (nothing else runs
    // while they do), an interpreted record from its start to its result.
    let started = 0;
    const lap = () => spent && (spent.ms += performance.now() - started);
    // CPU time over the whole call: exact for compiled pages, which run without a break; an
    // interpreted record's awaits may let other work of the thread in.
    const cpuAtStart = spent && threadCpuMs();
    try {
      const { program } = this.prepare();
      const out = new Array(items.length);
      if (!program) {
        for (let i = 0; i < items.length; i++) {
          started = performance.now();
          out[i] = await this.interpret(items[i], bindings, limit);
          lap();
        }
        return out;
      }
      const free = program.resolve(bindings);
      for (let i = 0; i < items.length; i++) {
        started = performance.now();
        const stop = program.each(items, bindings, free, limit, out, i);
        lap();
        if (stop.index === items.length) break;
        if (stop.error instanceof LimitError) throw stop.error;
        i = stop.index;
        started = performance.now();
        out[i] = await this.interpret(items[i], bindings, limit);
        lap();
      }
      return out;
    } finally {
      done();
      const cpu = cpuAtStart === undefined ? undefined : threadCpuMs();
      if (spent && cpu !== undefined) spent.cpuMs += cpu - cpuAtStart!;
    }
  }

  private async interpret(input: unknown, bindings: Record<string, unknown>, limit: Limit): Promise<unknown> {
    limit.allocated = 0;
    try {
      return await this.prepare().interpreter.evaluate(input, { ...bindings, [LIMIT_KEY]: limit });
    } catch (e) {
      throw expressionError(e);
    }
  }
}
