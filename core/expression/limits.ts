/**
 * The bounds every evaluation of a provider file's expression runs under, interpreted or compiled.
 *
 * An expression must not be able to take the process down or hold its thread. V8 aborts the whole
 * process, past any try/catch, when an array grows by `push` beyond about 112 million elements
 * (`$length($pad("", 150000000, "x"))` splits a 150-million-character string into an array of
 * characters), and the heap has a ceiling of its own. So what an expression builds is bounded where it
 * is built, far below V8's limits, and the time an evaluation may take is checked from inside the long
 * loops as well as between steps.
 *
 * Breaking a bound throws a LimitError: an ExpressionError with the code `expression_limit`, whose
 * message says which bound and what to change.
 */

/** Code of every ExpressionError raised by a bound (time, size, allocation, depth). */
export const LIMIT_CODE = 'expression_limit';

/**
 * Longest array or sequence (elements) and longest string (characters) an expression may build:
 * ranges, constructors, path results, string concatenation and the builtins that make strings or arrays.
 * It is JSONata's own bound on ranges (D2014 at 1e7), which its test suite relies on. Builtins that split
 * a string into characters ($length, $substring, $pad) refuse longer strings too.
 */
export const MAX_LENGTH = 1e7;

/**
 * Elements and characters all the structures built by one evaluation may add up to. Without it, a loop
 * that builds a 10-million-element array many times over would fill the heap before the time limit.
 */
export const MAX_ALLOCATED = 5e7;

/** Deepest nesting of JSONata's evaluation steps in the interpreter (recursion without tail calls). */
export const MAX_DEPTH = 5000;

export class ExpressionError extends Error {
  constructor(
    message: string,
    /** Offset in the expression's source (0-based) where JSONata stopped, when it says. */
    readonly position?: number,
    /** JSONata's error code (T2001, D3001...), when it gives one, or `expression_limit`. */
    readonly code?: string,
  ) {
    super(message);
  }
}

export class LimitError extends ExpressionError {
  constructor(message: string) {
    super(message, undefined, LIMIT_CODE);
  }
}

/** One evaluation's budget: a deadline and what it has built so far. */
export class Limit {
  readonly deadline: number;
  allocated = 0;
  /** Steps left before the next look at the clock. */
  countdown = CLOCK_EVERY;

  constructor(
    readonly timeLimitMs: number,
    /** What the expression is, for messages (called only when a bound is broken). */
    private readonly what: () => string,
  ) {
    this.deadline = Date.now() + timeLimitMs;
  }

  /** One step of work (a loop iteration, a call): looks at the clock every CLOCK_EVERY steps. */
  tick(): void {
    if (--this.countdown <= 0) this.clock();
  }

  private clock(): void {
    this.countdown = CLOCK_EVERY;
    if (Date.now() > this.deadline) throw new LimitError(`${this.what()} took longer than its time limit of ${this.timeLimitMs} ms: make it do less work per record`);
  }

  /**
   * Accounts for `n` elements or characters built; refuses a structure longer than MAX_LENGTH. Building
   * counts as work too (a step per 64 elements): a builtin that runs over what was built does not step.
   */
  build(n: number, what: string): void {
    if (n > MAX_LENGTH) throw new LimitError(`${this.what()} built ${what} of ${n} elements or characters, more than the ${MAX_LENGTH} an expression may build`);
    if ((this.allocated += n) > MAX_ALLOCATED) {
      throw new LimitError(`${this.what()} built more than ${MAX_ALLOCATED} elements and characters in all in one evaluation: make it build less`);
    }
    if ((this.countdown -= n >> 6) <= 0) this.clock();
  }

  depth(): never {
    throw new LimitError(`${this.what()} nested its evaluation too deeply (a recursion without end, or deeper than JSONata can follow): make the recursion end, or make it a tail call`);
  }
}

/** Steps between two looks at the clock: Date.now() costs some 30 ns, a compiled step a few. */
const CLOCK_EVERY = 1024;
