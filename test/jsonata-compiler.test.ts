/**
 * JSONata 2.2.2's own test suite (test/fixtures/jsonata-test-suite) against the compiler: every case the
 * compiler accepts must give the suite's expected result or error code, and exactly what JSONata's
 * interpreter gives (the same value with the same flags and prototypes, or an error with the same code,
 * position and token); the cases it leaves to the interpreter must pass there.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import jsonata from 'jsonata';
import { compileAst, Unsupported, type Program } from '../core/expression/compiler.ts';
import { Expression } from '../core/expression/expression.ts';
import { Limit } from '../core/expression/limits.ts';
import { identical, sameJson, suiteCases, type SuiteCase } from './jsonata-suite.ts';

const cases = suiteCases();

type Outcome = { value: unknown } | { error: { code?: string; position?: number; token?: string; message?: string } };

/** Whether an outcome is what the suite expects; the message is checked where it is given and asked for. */
function meets(outcome: Outcome, expected: SuiteCase['expected'], messages = false): boolean {
  if ('result' in expected) return 'value' in outcome && sameJson(outcome.value, expected.result);
  if (!('error' in outcome)) return false;
  return outcome.error.code === expected.code && (expected.token === undefined || outcome.error.token === expected.token) && (!messages || expected.message === undefined || outcome.error.message === expected.message);
}

function show(outcome: Outcome): string {
  return 'value' in outcome ? JSON.stringify(outcome.value) : `error ${outcome.error.code} at ${outcome.error.position} (${outcome.error.token}): ${outcome.error.message}`;
}

async function interpreted(c: SuiteCase): Promise<Outcome> {
  try {
    return { value: await jsonata(c.expr).evaluate(c.input, c.bindings) };
  } catch (error) {
    return { error: error as Outcome extends { error: infer E } ? E : never };
  }
}

function compiledRun(program: Program, c: SuiteCase): Outcome {
  try {
    return { value: program.run(c.input, c.bindings, program.resolve(c.bindings), new Limit(c.timelimit ?? 10_000, () => c.expr)) };
  } catch (error) {
    return { error: error as Outcome extends { error: infer E } ? E : never };
  }
}

/** The suite's runner limits evaluation depth (code U1001) with entry and exit hooks, counting interpreter steps. */
async function timeboxed(c: SuiteCase): Promise<Outcome> {
  const expression = jsonata(c.expr);
  let depth = 0;
  const started = Date.now();
  // The suite's time limits (up to 10 s) only ever stop endless loops here: a quarter second does the same.
  const check = () => {
    if (depth > c.depth! || Date.now() - started > Math.min(c.timelimit!, 250)) throw { code: 'U1001', message: 'stack overflow or timeout' };
  };
  expression.assign(Symbol.for('jsonata.__evaluate_entry') as unknown as string, () => (depth++, check()));
  expression.assign(Symbol.for('jsonata.__evaluate_exit') as unknown as string, () => (depth--, check()));
  try {
    return { value: await expression.evaluate(c.input, c.bindings) };
  } catch (error) {
    return { error: error as { code?: string } };
  }
}

/** Each case as the compiler takes it: a syntax error, compiled, or left to the interpreter (and why). */
const sorted = cases.map((c) => {
  let ast;
  try {
    ast = jsonata(c.expr).ast();
  } catch (error) {
    return { c, syntaxError: error as { code: string } };
  }
  try {
    const program = compileAst(ast);
    // U1001 is the suite runner's own code for passing its depth limit, counted in interpreter steps.
    if ('code' in c.expected && c.expected.code === 'U1001') return { c, interpreter: 'a depth limit in interpreter steps (U1001)' };
    return { c, program };
  } catch (error) {
    if (!(error instanceof Unsupported)) throw error;
    return { c, interpreter: error.message };
  }
});

// Evaluated here rather than in a test: inside one, node:test tracks every promise the interpreter
// makes, which slows the heaviest case of the suite (performance/case001) from under one second to five.
const onInterpreter: { c: SuiteCase; outcome: Outcome }[] = [];
for (const { c, interpreter } of sorted) {
  if (!interpreter) continue;
  const outcome: Outcome = 'code' in c.expected && c.expected.code === 'U1001'
    ? await timeboxed(c)
    : await new Expression(c.expr).evaluate(c.input, c.bindings, c.timelimit ?? 10_000).then((value) => ({ value }), (error) => ({ error }));
  onInterpreter.push({ c, outcome });
}

test('the cases the compiler leaves to the interpreter pass there: through Expression, bounds and all, or under the suite runner\'s depth limit', () => {
  for (const { c, outcome } of onInterpreter) {
    const expected = 'code' in c.expected ? { code: c.expected.code, message: c.expected.message } : c.expected;
    assert.ok(meets(outcome, expected, true), `${c.name}: ${c.expr}\n  expected ${JSON.stringify(c.expected)}\n  got ${show(outcome)}`);
  }
});

test('the JSONata test suite through the compiler: what it accepts comes out as the suite and the interpreter say, and that is at least 80% of the suite', async () => {
  const failures: string[] = [];
  let accepted = 0;
  for (const { c, syntaxError, program } of sorted) {
    // A syntax error is the parser's, which compiled and interpreted expressions share.
    if (syntaxError && !meets({ error: syntaxError }, c.expected)) failures.push(`${c.name}: parse error ${syntaxError.code}, expected ${JSON.stringify(c.expected)}`);
    if (!program) continue;
    accepted++;
    const compiled = compiledRun(program, c);
    if (!meets(compiled, c.expected)) failures.push(`${c.name}: ${c.expr}\n  expected ${JSON.stringify(c.expected)}\n  compiled ${show(compiled)}`);
    // The suite's heavy cases (a time limit, the performance group) build millions of promises on the
    // interpreter, slow under the test runner's async tracking: the suite's expected result covers them.
    if (c.timelimit !== undefined || c.name.startsWith('performance/')) continue;
    const reference = await interpreted(c);
    const same = 'value' in reference
      ? 'value' in compiled && identical(compiled.value, reference.value)
      : 'error' in compiled && compiled.error.code === reference.error.code && compiled.error.position === reference.error.position && compiled.error.token === reference.error.token;
    if (!same) failures.push(`${c.name}: ${c.expr}\n  interpreter ${show(reference)}\n  compiled    ${show(compiled)}`);
  }
  const share = accepted / cases.length;
  const left = new Map<string, number>();
  for (const { interpreter } of sorted) if (interpreter) left.set(interpreter, (left.get(interpreter) ?? 0) + 1);
  const syntax = sorted.filter((s) => s.syntaxError).length;
  console.log(`compiler accepts ${accepted} of ${cases.length} cases (${(share * 100).toFixed(1)}%); ${syntax} are syntax errors; on the interpreter: ${[...left].map(([why, n]) => `${n} with ${why}`).join(', ')}`);
  assert.deepEqual(failures, []);
  assert.ok(share >= 0.8, `the compiler accepts ${(share * 100).toFixed(1)}% of the suite`);
});

test("through Expression, an error of compiled code is replayed on the interpreter: the suite's code and message", async () => {
  const failures: string[] = [];
  for (const c of cases) {
    if (!('code' in c.expected) || c.expected.code === 'U1001') continue;
    let outcome: Outcome;
    try {
      outcome = { value: await new Expression(c.expr).evaluate(c.input, c.bindings, c.timelimit ?? 10_000) };
    } catch (error) {
      outcome = { error: error as { code?: string } };
    }
    if (!meets(outcome, { code: c.expected.code, message: c.expected.message }, true)) failures.push(`${c.name}: ${c.expr}\n  expected ${JSON.stringify(c.expected)}\n  got ${show(outcome)}`);
  }
  assert.deepEqual(failures, []);
});

test('a recursion without end is stopped with expression_limit, compiled or not, where the suite runner says U1001', async () => {
  for (const c of cases.filter((c) => 'code' in c.expected && c.expected.code === 'U1001' && /\$inf/.test(c.expr))) {
    await assert.rejects(new Expression(c.expr).evaluate(c.input, c.bindings, 300), { code: 'expression_limit' }, c.expr);
  }
});
