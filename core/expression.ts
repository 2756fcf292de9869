import jsonata from 'jsonata';

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
  ) {
    super(message);
  }
}

/**
 * A JSONata expression compiled once at load. Each evaluation carries its own deadline in its
 * bindings: evaluations interleave (JSONata is async), so the limit cannot live on the shared
 * compiled expression. The entry hook runs on every AST node; checking the clock every 256 steps
 * keeps its cost low.
 */
export class Expression {
  private readonly compiled: jsonata.Expression;

  /**
   * `shared` lets one load compile each distinct source once (a catalogue repeats `data`, `id`...):
   * a compiled expression holds no state of its own between evaluations, so sharing it is safe.
   */
  constructor(
    readonly source: string,
    shared?: Map<string, jsonata.Expression>,
  ) {
    const known = shared?.get(source);
    if (known) {
      this.compiled = known;
      return;
    }
    try {
      this.compiled = jsonata(source);
    } catch (e) {
      const err = e as { message: string; position?: number };
      throw new ExpressionError(err.message, err.position);
    }
    this.compiled.assign(ENTRY as unknown as string, (_expr: unknown, _input: unknown, env: { lookup(name: string): unknown }) => {
      const limit = env.lookup(LIMIT) as Limit | undefined;
      if (limit && ++limit.steps % 256 === 0 && Date.now() > limit.deadline) {
        throw new ExpressionError(`expression took longer than its time limit: ${source.slice(0, 80)}`);
      }
    });
    shared?.set(source, this.compiled);
  }

  /** Evaluates against `input`; `bindings` become `$name` variables. */
  async evaluate(input: unknown, bindings: Record<string, unknown> = {}, timeLimitMs = DEFAULT_TIME_LIMIT_MS): Promise<unknown> {
    const limit: Limit = { deadline: Date.now() + timeLimitMs, steps: 0 };
    try {
      return await this.compiled.evaluate(input, { ...bindings, [LIMIT]: limit });
    } catch (e) {
      if (e instanceof ExpressionError) throw e;
      const err = e as { message: string; position?: number };
      throw new ExpressionError(err.message, err.position);
    }
  }
}
