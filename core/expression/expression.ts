import jsonata from 'jsonata';
import { Re2RegExp } from './regex.ts';

/** Longest time one evaluation of a provider file's expression may run. */
export const DEFAULT_TIME_LIMIT_MS = 2000;

const ENTRY = Symbol.for('jsonata.__evaluate_entry');
const LIMIT = '__terapi_limit';

interface Limit {
  deadline: number;
  steps: number;
}

export class ExpressionError extends Error {
  constructor(
    message: string,
    /** Offset in the expression's source (0-based) where JSONata stopped, when it says. */
    readonly position?: number,
    /** JSONata's error code (T2001, D3001...), when it gives one. */
    readonly code?: string,
  ) {
    super(message);
  }
}

/** Where an expression stands in a provider file, for errors at run time; located only when needed. */
export interface ExpressionOrigin {
  /** The key path in the file, e.g. ['syncs', 'issues', 'mapping']. */
  path: string[];
  /** file:line:col of the expression's value (computed on demand: positions cost a YAML parse). */
  locate(): { file: string; line: number; col: number };
}

function compile(source: string): jsonata.Expression {
  try {
    return jsonata(source, { RegexEngine: Re2RegExp as unknown as RegExpConstructor });
  } catch (e) {
    const err = e as { message: string; position?: number };
    throw new ExpressionError(err.message, err.position);
  }
}

/**
 * A JSONata expression from a provider file. Its syntax is checked at load (Expression.check), and
 * it is compiled once, on its first evaluation: JSONata spends some 60 µs setting up its parser on
 * every call, so checking a file's expressions in one parse and compiling each only when a sync or
 * action first needs it keeps loading a large catalogue well under a second (bench/load.ts).
 *
 * Each evaluation carries its own deadline in its bindings: evaluations interleave (JSONata is
 * async), so the limit cannot live on the shared compiled expression. The entry hook runs on every
 * AST node; checking the clock every 256 steps keeps its cost low.
 */
export class Expression {
  private compiled?: jsonata.Expression;

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
        compile(source);
      } catch (e) {
        errors.set(i, e as ExpressionError);
      }
    });
    return errors;
  }

  private program(): jsonata.Expression {
    if (this.compiled) return this.compiled;
    const compiled = compile(this.source);
    compiled.assign(ENTRY as unknown as string, (_expr: unknown, _input: unknown, env: { lookup(name: string): unknown }) => {
      const limit = env.lookup(LIMIT) as Limit | undefined;
      if (limit && ++limit.steps % 256 === 0 && Date.now() > limit.deadline) {
        throw new ExpressionError(`expression took longer than its time limit: ${this.source.slice(0, 80)}`);
      }
    });
    return (this.compiled = compiled);
  }

  /** Evaluates against `input`; `bindings` become `$name` variables. */
  async evaluate(input: unknown, bindings: Record<string, unknown> = {}, timeLimitMs = DEFAULT_TIME_LIMIT_MS): Promise<unknown> {
    const limit: Limit = { deadline: Date.now() + timeLimitMs, steps: 0 };
    try {
      return await this.program().evaluate(input, { ...bindings, [LIMIT]: limit });
    } catch (e) {
      if (e instanceof ExpressionError) throw e;
      const err = e as { message: string; position?: number; code?: string };
      throw new ExpressionError(err.message, err.position, err.code);
    }
  }

  /**
   * Evaluates once per item (a page of records), each under its own time limit. One call per page
   * lets a compiled mapping run without a round of promises per record.
   */
  async evaluateEach(items: unknown[], bindings: Record<string, unknown> = {}, timeLimitMs = DEFAULT_TIME_LIMIT_MS): Promise<unknown[]> {
    const out = new Array(items.length);
    for (let i = 0; i < items.length; i++) out[i] = await this.evaluate(items[i], bindings, timeLimitMs);
    return out;
  }
}
