/** JSONata expressions of provider files: checked together at load, run under a time limit. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Expression } from '../core/expression/expression.ts';

test('check: valid expressions pass in one parse; each broken one is named with its own error', () => {
  assert.equal(Expression.check(['data.items', "{ 'id': $string(id) }", '$[0].id', '($x := 1; $x + 1)']).size, 0);
  const errors = Expression.check(['data', 'items[', '$x := 1; $x', 'a) , (b', '1, 2', '  ']);
  assert.deepEqual([...errors.keys()], [1, 2, 3, 4, 5]);
  assert.match(errors.get(1)!.message, /Expected "]"/);
  assert.equal(errors.get(1)!.position, 6);
  assert.match(errors.get(2)!.message, /Syntax error: ";"/);
});

test('an expression compiled on first use gives the same result every time, and shares nothing between calls', async () => {
  const e = new Expression("{ 'id': $string(id), 'n': $n }");
  assert.deepEqual({ ...(await e.evaluate({ id: 7 }, { n: 1 }) as object) }, { id: '7', n: 1 });
  assert.deepEqual({ ...(await e.evaluate({ id: 8 }, { n: 2 }) as object) }, { id: '8', n: 2 });
});

test('an expression that runs past its time limit is stopped with a clear error', async () => {
  const slow = new Expression('$reduce([1..2000000], function($a, $b) { $a + $b })');
  const started = Date.now();
  await assert.rejects(slow.evaluate({}, {}, 50), /took longer than its time limit/);
  assert.ok(Date.now() - started < 2000, 'stopped soon after the limit');
  // The limit belongs to one evaluation: a fast one right after is unaffected.
  assert.equal(await new Expression('1 + 1').evaluate({}, {}, 50), 2);
});
