/**
 * What an evaluation thread does (loaded through thread-entry.mjs): the provider expressions the
 * thread that serves the API needs (action bodies and outputs, token responses), away from it. It
 * loads the expression module only, so that it starts fast.
 */
import { Expression, ExpressionError, reportDeadlines } from '../expression/expression.ts';

export interface EvaluateTask {
  source: string;
  input: unknown;
  bindings: Record<string, unknown>;
  limitMs: number;
  /** The watchdog's slot: the deadline of the evaluation in progress. */
  deadline: Float64Array;
}

/** A value travels as JSON text: what is sent or stored from it is JSON anyway, and a JSONata function in it could not cross threads. */
export type EvaluateOutcome = { ok: true; json?: string } | { ok: false; message: string; position?: number; code?: string };

/** Compiled expressions by source, so that an action's body is compiled once per thread. */
const compiled = new Map<string, Expression>();
export default async function evaluate(task: EvaluateTask): Promise<EvaluateOutcome> {
  let expr = compiled.get(task.source);
  if (!expr) {
    if (compiled.size >= 1000) compiled.delete(compiled.keys().next().value!);
    compiled.set(task.source, (expr = new Expression(task.source)));
  }
  reportDeadlines(task.deadline);
  try {
    const value = await expr.evaluate(task.input, task.bindings, task.limitMs);
    return { ok: true, json: value === undefined ? undefined : JSON.stringify(value) };
  } catch (e) {
    if (e instanceof ExpressionError) return { ok: false, message: e.message, position: e.position, code: e.code };
    throw e;
  } finally {
    reportDeadlines(undefined);
  }
}
