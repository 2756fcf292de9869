/**
 * The request half of the provider format's second edition, against real HTTP servers on
 * 127.0.0.1: static query parameters and headers on every request, form-encoded bodies, errors
 * in a 200 body, and retry rules read from the answer (a body that says "rate limited", a wait
 * in the body, several reset headers, a penalty window, what may be sent twice).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Fresh } from '../core/auth/tokens.ts';
import { BUILTIN_PROVIDERS_DIR, loadCatalog, providerFiles } from '../core/format/provider-loader.ts';
import type { Provider } from '../core/format/provider-types.ts';
import { formatError } from '../core/format/yaml-source.ts';
import { formFields } from '../core/http/form-body.ts';
import { DEFAULT_RETRY, send } from '../core/http/send.ts';
import { readPages } from '../core/sync/pages.ts';
import { fakeApi, json, providersDir, startTerapi, tempDir, type Running } from './support.ts';

type Api = Awaited<ReturnType<typeof fakeApi>>;

/** Answers scripted per path, in order; a path with nothing left answers 200 {}. */
const script = new Map<string, { status: number; body?: unknown; headers?: Record<string, string> }[]>();
const answer = (path: string, ...answers: { status: number; body?: unknown; headers?: Record<string, string> }[]) => script.set(path, answers);

let api: Api;
let t: Running;
let providers: Map<string, Provider>;

const PROVIDER = (url: string) => `
display_name: Acme
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
api:
  base_url: ${url}
  credentials: { in: header, name: Authorization, value: "Bearer \${api_key}" }
  headers: { Acme-Version: "2026-01-01" }
  params: { api-version: "7.1", tenant: "\${api_key}" }
  error: "$count(errors) > 0 ? $join(errors.message, '; ')"
  retry:
    statuses: [429, 500, 503]
    max_attempts: 3
    rate_limited: "'RATELIMITED' in errors.extensions.code or (ok = false and error = 'ratelimited')"
    wait_seconds: "errors[0].extensions.retry_in_seconds"
    reset_header: [x-ratelimit-requests-reset, x-ratelimit-complexity-reset]
    reset_format: seconds
syncs:
  items:
    mode: full
    auto_start: false
    request: { path: /items, params: { api-version: "7.2" } }
    pagination: { type: next_url, from: link_header }
    records: items
    mapping: "{ 'id': id }"
    model: { name: Item }
  graph:
    mode: full
    auto_start: false
    request: { method: POST, path: /graphql, body: "{ 'query': '{ items { id } }' }" }
    records: data.items
    mapping: "{ 'id': id }"
    model: { name: GraphItem }
actions:
  create_customer:
    input: { type: object, properties: { email: { type: string }, plan: { type: string }, tags: { type: array } } }
    request:
      method: POST
      path: /v1/customers
      body_format: form
      body: "{ 'email': email, 'metadata': { 'plan': plan, 'vip': true }, 'expand': tags, 'phone': null }"
    output: "{ 'id': id }"
  create_issue:
    input: { type: object, properties: { title: { type: string } } }
    request: { method: POST, path: /graphql, body: "{ 'query': 'mutation', 'variables': { 'title': title } }" }
    output: "{ 'id': data.issueCreate.issue.id }"
  charge:
    input: { type: object }
    request: { method: POST, path: /charge }
  charge_again:
    input: { type: object }
    request: { method: POST, path: /charge, idempotent: true }
  charge_declared:
    input: { type: object }
    request: { method: POST, path: /charge, retry: { statuses: [503] } }
  fragile:
    input: { type: object }
    request: { method: GET, path: /fragile, retry: false }
  patient:
    input: { type: object }
    request: { method: GET, path: /patient, retry: { penalty_seconds: 0.2, statuses: [429] } }
  echo:
    input: { type: object }
    request: { method: GET, path: /echo, params: { api-version: "9.9" } }
`;

const KEYED = (url: string) => `
display_name: Keyed
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key }
verification: { request: { path: /v1/balance }, valid_statuses: [403] }
api:
  base_url: ${url}
  credentials: { in: header, name: Authorization, value: "Bearer \${api_key}" }
`;

before(async () => {
  api = await fakeApi((req, res) => {
    const path = new URL(req.url!, 'http://x').pathname;
    if (path === '/drop') return void res.socket?.destroy();
    const next = script.get(path)?.shift() ?? { status: 200, body: {} };
    json(res, next.status, next.body ?? {}, next.headers);
  });
  const dir = providersDir({ acme: PROVIDER(api.url), keyed: KEYED(api.url) });
  const loaded = loadCatalog([providerFiles(dir)]);
  assert.deepEqual(loaded.errors.map(formatError), []);
  providers = loaded.providers;
  t = await startTerapi({ providersDirs: [dir] });
  for (const key of ['acme', 'keyed']) assert.equal((await t.call('POST', '/integration', { provider_config_key: key, provider: key })).status < 300, true);
  const r = await t.call('POST', '/connection', { connection_id: 'u1', provider_config_key: 'acme', credentials: { type: 'api_key', api_key: 'key-1' } });
  assert.ok(r.status < 300, JSON.stringify(r.body));
});
after(async () => {
  await t?.close();
  await api?.close();
});

const trigger = (action_name: string, input: Record<string, unknown> = {}) => t.call('POST', '/action/trigger', { provider_config_key: 'acme', connection_id: 'u1', action_name, input });
const since = () => {
  const n = api.requests.length;
  return () => api.requests.slice(n);
};
const acme = () => providers.get('acme')!;
const fresh = (): Fresh => ({ provider: acme(), record: { connection_config: {} } as unknown as Fresh['record'], credentials: { type: 'api_key', api_key: 'key-1' }, integration: {} as Fresh['integration'], scrub: (s) => s });

async function readAll(sync: string): Promise<unknown[]> {
  const items: unknown[] = [];
  for await (const page of readPages(async () => fresh(), acme().syncs![sync], { budget: { remainingMs: 60_000 } })) items.push(...page.items);
  return items;
}

describe('static query parameters and headers (api.params, api.headers)', () => {
  test("every request carries the API's params and headers; a request's own param wins", async () => {
    const sent = since();
    const r = await trigger('echo');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const [req] = sent();
    const q = new URL(req.url, 'http://x').searchParams;
    assert.equal(q.get('api-version'), '9.9');
    assert.equal(q.get('tenant'), 'key-1', 'params are templates');
    assert.equal(req.headers['acme-version'], '2026-01-01');
    assert.equal(req.headers.authorization, 'Bearer key-1');
  });

  test('sync pages carry them too, and a next-page URL keeps its own value of the parameter', async () => {
    answer('/items',
      { status: 200, body: { items: [{ id: 1 }] }, headers: { link: `<${api.url}/items?page=2&api-version=8.0>; rel="next"` } },
      { status: 200, body: { items: [{ id: 2 }] } });
    const sent = since();
    assert.deepEqual(await readAll('items'), [{ id: 1 }, { id: 2 }]);
    const [first, second] = sent().map((r) => new URL(r.url, 'http://x').searchParams);
    assert.equal(first.get('api-version'), '7.2');
    assert.equal(first.get('tenant'), 'key-1');
    assert.equal(second.get('api-version'), '8.0');
    assert.equal(second.get('tenant'), 'key-1', "the API's params are on every page");
    assert.equal(second.get('page'), '2');
  });
});

describe('form-encoded bodies (body_format: form)', () => {
  test('an action sends its body as form fields with bracket keys, nulls left out', async () => {
    answer('/v1/customers', { status: 200, body: { id: 'cus_1' } });
    const sent = since();
    const r = await trigger('create_customer', { email: 'ada@example.com', plan: 'pro plan', tags: ['customer', 'invoice'] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body.output, { id: 'cus_1' });
    const [req] = sent();
    assert.equal(req.headers['content-type'], 'application/x-www-form-urlencoded');
    assert.equal(req.body, 'email=ada%40example.com&metadata%5Bplan%5D=pro+plan&metadata%5Bvip%5D=true&expand%5B0%5D=customer&expand%5B1%5D=invoice');
    assert.deepEqual(Object.fromEntries(new URLSearchParams(req.body)), { email: 'ada@example.com', 'metadata[plan]': 'pro plan', 'metadata[vip]': 'true', 'expand[0]': 'customer', 'expand[1]': 'invoice' });
  });

  test('nested arrays of objects are indexed; a body that is not an object is refused', () => {
    assert.deepEqual(formFields({ items: [{ price: 'p_1', quantity: 2 }], n: 0 }), { 'items[0][price]': 'p_1', 'items[0][quantity]': '2', n: '0' });
    assert.throws(() => formFields(['a']), /object of fields/);
  });
});

describe('errors in a 200 body (api.error, request.error)', () => {
  test("a GraphQL error answered with 200 fails the action with the provider's message (502)", async () => {
    answer('/graphql', { status: 200, body: { data: { issueCreate: null }, errors: [{ message: 'Argument Validation Error', extensions: { code: 'INVALID_INPUT' } }, { message: 'title is too long' }] } });
    const r = await trigger('create_issue', { title: 'x' });
    assert.equal(r.status, 502, JSON.stringify(r.body));
    assert.equal(r.body.error, 'provider_error');
    assert.equal(r.body.message, 'Acme answered action "create_issue" with an error: Argument Validation Error; title is too long');
    answer('/graphql', { status: 200, body: { data: { issueCreate: { issue: { id: 'i-1' } } } } });
    const ok = await trigger('create_issue', { title: 'x' });
    assert.deepEqual(ok.body.output, { id: 'i-1' });
  });

  test('a sync page with an error in its 200 body fails the run instead of reading no records', async () => {
    answer('/graphql', { status: 200, body: { data: null, errors: [{ message: 'Not authorized to read items' }] } });
    await assert.rejects(readAll('graph'), (e: Error & { status?: number }) => e.status === 502 && /answered page 1 with an error: Not authorized to read items/.test(e.message));
  });
});

describe('retry rules from the answer (api.retry, request.retry, idempotent)', () => {
  const retry = () => acme().api.retry!;
  const waitsOf = () => {
    const waits: number[] = [];
    return { waits, sleep: async (ms: number) => void waits.push(ms) };
  };

  test('a 400 whose body says RATELIMITED is retried after the reset header; any other 400 is not', async () => {
    answer('/q',
      { status: 400, body: { errors: [{ message: 'Rate limit exceeded', extensions: { code: 'RATELIMITED' } }] }, headers: { 'x-ratelimit-requests-reset': '4' } },
      { status: 200, body: { data: 1 } });
    let w = waitsOf();
    let res = await send({ method: 'POST', url: `${api.url}/q` }, retry(), w.sleep);
    assert.equal(res.status, 200);
    assert.deepEqual(w.waits, [4000]);
    answer('/q', { status: 400, body: { errors: [{ message: 'Syntax Error', extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } }] } });
    w = waitsOf();
    res = await send({ method: 'POST', url: `${api.url}/q` }, retry(), w.sleep);
    assert.equal(res.status, 400);
    assert.deepEqual(w.waits, []);
  });

  test("Slack's ok: false with error ratelimited in a 200 is retried; of several reset headers the first present wins", async () => {
    answer('/q', { status: 200, body: { ok: false, error: 'ratelimited' }, headers: { 'x-ratelimit-complexity-reset': '7' } }, { status: 200, body: { ok: true } });
    const w = waitsOf();
    const res = await send({ method: 'GET', url: `${api.url}/q` }, retry(), w.sleep);
    assert.deepEqual(res.body, { ok: true });
    assert.deepEqual(w.waits, [7000], 'the second header, the first being absent');
  });

  test('a wait given in the body comes before the headers', async () => {
    answer('/q', { status: 429, body: { errors: [{ message: 'Complexity budget exhausted', extensions: { code: 'COMPLEXITY_BUDGET_EXHAUSTED', retry_in_seconds: 12 } }] }, headers: { 'retry-after': '60' } }, { status: 200 });
    const w = waitsOf();
    assert.equal((await send({ method: 'GET', url: `${api.url}/q` }, retry(), w.sleep)).status, 200);
    assert.deepEqual(w.waits, [12_000]);
  });

  test('a 429 that says nothing of when to come back waits out the penalty window', async () => {
    answer('/q', { status: 429, body: { errors: [{ message: 'Too many requests' }] } }, { status: 429 }, { status: 200 });
    const w = waitsOf();
    assert.equal((await send({ method: 'GET', url: `${api.url}/q` }, { ...retry(), penalty_seconds: 30 }, w.sleep)).status, 200);
    assert.deepEqual(w.waits, [30_000, 30_000]);
  });

  test('an action with a per-request penalty waits it out through the API', async () => {
    answer('/patient', { status: 429 }, { status: 200, body: { done: true } });
    const started = Date.now();
    const r = await trigger('patient');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(Date.now() - started >= 190, 'waited the 0.2 s penalty');
    assert.deepEqual(r.body.output, { done: true });
  });

  test("an action's POST is not retried on a 5xx; declared idempotent it is; a 429 always is", async () => {
    answer('/charge', { status: 500, body: { message: 'boom' } }, { status: 200, body: { id: 'ch_1' } });
    let sent = since();
    let r = await trigger('charge');
    assert.equal(r.status, 502);
    assert.equal(sent().length, 1, 'sent once');
    answer('/charge', { status: 500, body: { message: 'boom' } }, { status: 200, body: { id: 'ch_2' } });
    sent = since();
    r = await trigger('charge_again');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(sent().length, 2);
    answer('/charge', { status: 429, headers: { 'retry-after': '0' } }, { status: 200, body: { id: 'ch_3' } });
    sent = since();
    r = await trigger('charge');
    assert.equal(r.status, 200);
    assert.equal(sent().length, 2, 'a 429 was not applied: it is sent again');
  });

  test("a POST is sent again after a body that says rate limited, and on the statuses its own retry lists", async () => {
    answer('/charge', { status: 200, body: { ok: false, error: 'ratelimited' }, headers: { 'retry-after': '0' } }, { status: 200, body: { id: 'ch_4' } });
    let sent = since();
    let r = await trigger('charge');
    assert.deepEqual(r.body.output, { id: 'ch_4' });
    assert.equal(sent().length, 2);
    answer('/charge', { status: 503 }, { status: 200, body: { id: 'ch_5' } });
    sent = since();
    r = await trigger('charge_declared');
    assert.deepEqual(r.body.output, { id: 'ch_5' });
    assert.equal(sent().length, 2);
  });

  test('a connection dropped after sending is tried again only for a request that may be repeated', async () => {
    let sent = since();
    await assert.rejects(send({ method: 'POST', url: `${api.url}/drop` }, { max_attempts: 3 }, { sleep: async () => {}, repeatable: false }), /could not be reached/);
    assert.equal(sent().length, 1, 'a POST that may have been applied is not sent again');
    sent = since();
    await assert.rejects(send({ method: 'GET', url: `${api.url}/drop` }, { max_attempts: 3 }, { sleep: async () => {} }), /could not be reached/);
    assert.equal(sent().length, 3);
  });

  test('retry: false sends a request once, whatever the answer', async () => {
    answer('/fragile', { status: 503 }, { status: 200 });
    const sent = since();
    const r = await trigger('fragile');
    assert.equal(r.status, 502);
    assert.equal(sent().length, 1);
  });

  test("the schema's documented retry defaults are the code's", () => {
    const schema = JSON.parse(readFileSync(new URL('../schemas/provider.schema.json', import.meta.url), 'utf8'));
    const props = schema.definitions.retry.properties;
    assert.equal(props.max_attempts.default, DEFAULT_RETRY.max_attempts);
    assert.deepEqual(props.statuses.default, DEFAULT_RETRY.statuses);
    assert.equal(props.retry_after_header.default, DEFAULT_RETRY.retry_after_header);
    assert.equal(props.reset_format.default, DEFAULT_RETRY.reset_format);
  });
});

describe("the catalogue's rules, from the built-in provider files", () => {
  const builtin = loadCatalog([providerFiles(BUILTIN_PROVIDERS_DIR)]).providers;
  const rules = (name: string) => builtin.get(name)!.api.retry!;
  const waitsOf = () => {
    const waits: number[] = [];
    return { waits, sleep: async (ms: number) => void waits.push(ms) };
  };
  const limited = { errors: [{ message: 'Rate limit exceeded', extensions: { code: 'RATELIMITED' } }] };

  test('Linear: only a 400 that says RATELIMITED is retried, after the reset of the budget that is spent', async () => {
    const now = Date.now();
    answer('/linear',
      { status: 400, body: limited, headers: { 'x-ratelimit-requests-remaining': '120', 'x-ratelimit-requests-reset': String(now + 60_000), 'x-ratelimit-complexity-remaining': '0', 'x-ratelimit-complexity-reset': String(now + 5_000) } },
      { status: 200, body: { data: {} } });
    let w = waitsOf();
    assert.equal((await send({ method: 'POST', url: `${api.url}/linear` }, rules('linear'), w.sleep)).status, 200);
    assert.equal(w.waits.length, 1);
    assert.ok(w.waits[0] > 3_000 && w.waits[0] <= 5_000, `the complexity budget's reset, not the requests': ${w.waits[0]}`);
    answer('/linear', { status: 400, body: { errors: [{ message: 'Cannot query field "nope" on type "Issue".', extensions: { code: 'GRAPHQL_VALIDATION_FAILED' } }] } });
    w = waitsOf();
    assert.equal((await send({ method: 'POST', url: `${api.url}/linear` }, rules('linear'), w.sleep)).status, 400);
    assert.deepEqual(w.waits, [], 'a bad query is not sent again');
  });

  test('Airtable: after a 429 the 30 s penalty is waited out', async () => {
    answer('/airtable', { status: 429, body: { errors: [{ error: 'RATE_LIMIT_REACHED' }] } }, { status: 200, body: { records: [] } });
    const w = waitsOf();
    assert.equal((await send({ method: 'GET', url: `${api.url}/airtable` }, rules('airtable'), w.sleep)).status, 200);
    assert.deepEqual(w.waits, [30_000]);
  });

  test("Slack: ok false with error ratelimited is retried after Retry-After", async () => {
    answer('/slack', { status: 200, body: { ok: false, error: 'ratelimited' }, headers: { 'retry-after': '3' } }, { status: 200, body: { ok: true } });
    const w = waitsOf();
    assert.deepEqual((await send({ method: 'POST', url: `${api.url}/slack` }, rules('slack'), w.sleep)).body, { ok: true });
    assert.deepEqual(w.waits, [3000]);
  });
});

describe('verification.valid_statuses', () => {
  test('a 403 listed as valid accepts the key (a restricted key without the permission); a 401 still refuses it', async () => {
    // Through the connect flow's credential form: what runs the verification request.
    const connect = async (id: string, api_key: string) => {
      const session = await t.call('POST', '/connect/sessions', { connection_id: id, allowed_integrations: ['keyed'] });
      assert.ok(session.status < 300, JSON.stringify(session.body));
      return t.call('POST', `/connect/keyed/credentials?connect_session_token=${encodeURIComponent(session.body.token)}`, { api_key }, { authorization: '' });
    };
    answer('/v1/balance', { status: 403, body: { error: { type: 'invalid_request_error', message: 'The provided key does not have the required permissions' } } });
    let r = await connect('rk', 'rk_test_1');
    assert.ok(r.status < 300, JSON.stringify(r.body));
    assert.equal((await t.call('GET', '/connection/rk?provider_config_key=keyed')).status, 200);
    answer('/v1/balance', { status: 401, body: { error: { type: 'invalid_request_error', message: 'Invalid API Key provided' } } });
    r = await connect('bad', 'rk_test_2');
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_credentials');
    assert.match(r.body.message, /HTTP 401.*Invalid API Key provided/);
  });
});

describe('checked at load, at the line and column of the key', () => {
  const load = (yaml: string) => {
    const dir = tempDir('fapi-');
    writeFileSync(join(dir, 'bad.yaml'), `display_name: Bad\ncategories: [testing]\ndocs: https://example.com\nauth: { mode: none }\n${yaml}`);
    return loadCatalog([providerFiles(dir)]).errors.map((e) => formatError({ ...e, file: 'bad.yaml' }));
  };

  test('body_format: form needs a body; a sync takes no idempotent; verification takes no error rule', () => {
    const errors = load(`verification:
  request: { path: /me, error: "errors" }
api: { base_url: https://example.com }
syncs:
  s:
    mode: full
    request:
      path: /s
      idempotent: true
    records: items
    mapping: "{ 'id': id }"
    model: { name: S }
actions:
  a:
    input: { type: object }
    request:
      method: POST
      path: /a
      body_format: form
`);
    assert.deepEqual(errors, [
      'bad.yaml:6:25: "verification.request.error" is only used by a sync\'s or an action\'s request: remove it',
      'bad.yaml:13:7: "syncs.s.request.idempotent" has no effect: a sync\'s requests only read, and are always retried by the retry rules; remove it',
      'bad.yaml:23:7: "actions.a.request.body_format" is form but the request has no "body": add the JSONata body that gives its fields, or remove body_format',
    ]);
  });

  test('a wrong value is refused by the schema, and an error rule must compile', () => {
    const errors = load(`api:
  base_url: https://example.com
  params: { v: 1 }
  error: "errors[("
  retry: { reset_header: [], penalty_seconds: -1 }
actions:
  a:
    input: { type: object }
    request: { path: /a, body_format: xml, body: "{}", retry: true }
`);
    const text = errors.join('\n');
    assert.match(text, /^bad\.yaml:7:16: .*api\.params\.v/m);
    assert.match(text, /^bad\.yaml:8:10: "api\.error" is not a valid JSONata expression/m);
    assert.match(text, /^bad\.yaml:9:26: "api\.retry\.reset_header" must have at least 1 item$/m);
    assert.match(text, /^bad\.yaml:9:47: "api\.retry\.penalty_seconds" must be at least 0; got -1$/m);
    assert.match(text, /^bad\.yaml:13:39: "actions\.a\.request\.body_format" must be one of json, form; got "xml"$/m);
    assert.match(text, /^bad\.yaml:13:63: "actions\.a\.request\.retry" must be an object, not a boolean \(true\)$/m);
  });
});
