import { TerapiError } from '../errors.ts';
import type { Expression } from '../expression/expression.ts';

/**
 * Evaluates a provider file's expression on behalf of an API call. A failure (a time limit, an
 * error at run time) is the provider file's, or the data it met, never the caller's request and
 * never an unexplained 500: a 502 `expression_error` naming file:line:col and the key path.
 * `scrub` takes the connection's secrets out of the message (JSONata quotes values it fails on).
 */
export async function evaluate(expr: Expression, input: unknown, bindings: Record<string, unknown> = {}, scrub: (text: string) => string = (t) => t): Promise<unknown> {
  try {
    return await expr.evaluate(input, bindings);
  } catch (e) {
    if (e instanceof TerapiError) throw e;
    throw new TerapiError(502, 'expression_error', scrub(`${expr.describe()} failed: ${(e as Error).message}`));
  }
}
