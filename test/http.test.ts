/** Outgoing requests: retries on the statuses a provider file lists, waiting as its headers say. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { send, waitFromHeaders } from '../core/http/send.ts';
import { fakeApi, json } from './support.ts';

let api: Awaited<ReturnType<typeof fakeApi>>;
const script: { status: number; headers?: Record<string, string> }[] = [];
before(async () => {
  api = await fakeApi((_req, res) => {
    const next = script.shift() ?? { status: 200 };
    json(res, next.status, { status: next.status }, next.headers);
  });
});
after(() => api.close());

test('a 429 with Retry-After is retried after the time it asks for', async () => {
  script.push({ status: 429, headers: { 'retry-after': '2' } }, { status: 200 });
  const waits: number[] = [];
  const res = await send({ method: 'GET', url: `${api.url}/x` }, {}, async (ms) => void waits.push(ms));
  assert.equal(res.status, 200);
  assert.deepEqual(waits, [2000]);
});

test('an exhausted rate limit waits until the reset header, in the format the file gives', async () => {
  const reset = Math.floor(Date.now() / 1000) + 3;
  script.push({ status: 403, headers: { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(reset) } }, { status: 200 });
  const waits: number[] = [];
  const res = await send({ method: 'GET', url: `${api.url}/x` }, { statuses: [403], reset_header: 'x-ratelimit-reset', remaining_header: 'x-ratelimit-remaining', reset_format: 'epoch_seconds' }, async (ms) => void waits.push(ms));
  assert.equal(res.status, 200);
  assert.equal(waits.length, 1);
  assert.ok(waits[0] > 1000 && waits[0] <= 3000, String(waits[0]));
});

test('without hints: exponential backoff with jitter, then the last answer after max_attempts', async () => {
  script.push({ status: 503 }, { status: 503 }, { status: 503 });
  const waits: number[] = [];
  const res = await send({ method: 'GET', url: `${api.url}/x` }, { max_attempts: 3 }, async (ms) => void waits.push(ms));
  assert.equal(res.status, 503);
  assert.equal(waits.length, 2);
  assert.ok(waits[0] <= 500 && waits[1] <= 1000);
});

test('a status the file does not list is not retried; a wait over a minute is not waited', async () => {
  script.push({ status: 400 });
  let res = await send({ method: 'GET', url: `${api.url}/x` }, {}, async () => assert.fail('no retry'));
  assert.equal(res.status, 400);
  script.push({ status: 429, headers: { 'retry-after': '3600' } });
  res = await send({ method: 'GET', url: `${api.url}/x` }, {}, async () => assert.fail('no hour-long wait'));
  assert.equal(res.status, 429);
});

test('waitFromHeaders reads each reset format, and a remaining count above zero means no wait', () => {
  const now = 1_700_000_000_000;
  assert.equal(waitFromHeaders({ 'retry-after': new Date(now + 5000).toUTCString() }, {}, now), 5000);
  assert.equal(waitFromHeaders({ 'x-reset': String(now + 1500) }, { reset_header: 'x-reset', reset_format: 'epoch_ms' }, now), 1500);
  assert.equal(waitFromHeaders({ 'x-reset': '7' }, { reset_header: 'x-reset', reset_format: 'seconds' }, now), 7000);
  assert.equal(waitFromHeaders({ 'x-reset': new Date(now + 2000).toISOString() }, { reset_header: 'x-reset', reset_format: 'iso_date' }, now), 2000);
  assert.equal(waitFromHeaders({ 'x-reset': '7', 'x-left': '10' }, { reset_header: 'x-reset', remaining_header: 'x-left', reset_format: 'seconds' }, now), undefined);
});
