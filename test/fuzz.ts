/**
 * npm run fuzz [-- --requests 3000 --seconds 120 --store sqlite|postgres|both --seed 1]
 *
 * Requests generated from the OpenAPI document the server serves, against real server processes on
 * each store (the embedded one, and PostgreSQL when TERAPI_TEST_DATABASE_URL is set): for every
 * parameter and body field, valid values (the ids of integrations, connections, syncs and actions
 * made first), boundary values and hostile ones (odd Unicode, lone surrogates, huge and deeply
 * nested JSON, prototype names, path tricks, wrong types). It prints counts per operation and
 * status, and fails on any 5xx, any error body that is not an ErrorResponse, a request the server
 * does not answer within its time, or a server that ends. Kept out of `npm test`: it is bounded by
 * --requests and --seconds.
 */
import { request } from 'node:http';
import { parse } from 'yaml';
import { fakeApi, freshDatabase, json, PG_URL, providersDir, spawnTerapi, type ServerProcess } from './support.ts';

const args = Object.fromEntries(
  process.argv
    .slice(2)
    .join(' ')
    .split(/--/)
    .filter(Boolean)
    .map((a) => a.trim().split(/\s+/) as [string, string]),
);
const REQUESTS = Number(args.requests ?? 3000);
const SECONDS = Number(args.seconds ?? 120);
const SEED = Number(args.seed ?? 1);
const STORES = (args.store ?? (PG_URL ? 'both' : 'sqlite')) === 'both' ? ['sqlite', 'postgres'] : [args.store ?? 'sqlite'];
const CONCURRENCY = 4;
const TIMEOUT_MS = 30_000;

/** A small deterministic generator (mulberry32): a failing run can be replayed with its seed. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    chance: (p: number) => next() < p,
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)],
  };
}

/** JSON text nested `depth` deep, written as text: JSON.stringify itself overflows its stack on such values. */
const nested = (depth: number, asArray = false): string => (asArray ? `${'['.repeat(depth)}"x"${']'.repeat(depth)}` : `${'{"n":'.repeat(depth)}"x"${'}'.repeat(depth)}`);

/** Strings that have broken servers: boundaries, odd Unicode, injections, path tricks, prototype names. */
const HOSTILE_STRINGS = [
  '', ' ', 'a', 'x'.repeat(100), 'x'.repeat(101), 'x'.repeat(5000),
  '\ud800', '\udfff', 'a\ud800b', '\u0000', 'a\u0000b', '💥', '\u202eevil', '\ufeff', 'é', 'ß'.repeat(50),
  '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'prototype', 'valueOf',
  '..', '.', '../..', '..\\..\\x', '%2e%2e', '%2E%2e%2F', '%ZZ', '%', '/', '//', 'a/b', 'a\\b', 'a b', '?x=1', '#frag',
  '${subdomain}', '${input.x}', '{{7*7}}', "' OR 1=1 --", '"; DROP TABLE keyv; --', '<script>alert(1)</script>',
  'https://evil.example', 'javascript:alert(1)', '\r\nX-Injected: 1', '-1', '0', '1e309', 'NaN', 'null', 'true', '[]', '{}',
  'a'.repeat(30) + '!',
];
const WRONG_TYPES: unknown[] = [0, -1, 1.5, 1e308, -0, true, false, null, [], {}, ['x'], { a: 1 }, [null], { __proto__: { polluted: 1 } }];
/** Whole bodies, as JSON text. */
const HOSTILE_BODIES: (() => string)[] = [
  () => nested(70),
  () => nested(5000),
  () => nested(3000, true),
  () => `{"connection_id":"deep","provider_config_key":"fz-api","credentials":{"type":"api_key","api_key":"k"},"metadata":${nested(3000)}}`,
  () => `{"connection_id":"deep","allowed_integrations":["fz-api"],"metadata":${nested(3000)}}`,
  () => JSON.stringify({ toJSON: 'x', constructor: 'y' }),
  () => '{"__proto__": {"polluted": true}}',
  () => JSON.stringify({ blob: 'x'.repeat(900_000) }),
  () => JSON.stringify({ blob: 'x'.repeat(2_000_000) }),
  () => '[]',
  () => '"just a string"',
  () => '42',
  () => 'null',
];

/** Bodies that are right, so that requests also reach what lies behind the checks (provider calls, refresh). */
const VALID_BODIES: Record<string, unknown[]> = {
  createConnection: [
    { connection_id: 'made', provider_config_key: 'fz-api', credentials: { type: 'api_key', api_key: 'key-made' }, connection_config: { region: 'eu' }, metadata: { a: [1, { b: 2 }] } },
    { connection_id: 'made', provider_config_key: 'fz-oauth', credentials: { type: 'oauth2', access_token: 'at', refresh_token: 'rt', expires_at: '2000-01-01T00:00:00Z' } },
  ],
  triggerAction: [
    { provider_config_key: 'fz-api', connection_id: 'c1', action_name: 'create_item', input: { title: 'hello', tags: ['a'] } },
    { provider_config_key: 'fz-api', connection_id: 'c2', action_name: 'get_item', input: { id: '../../x' } },
    { provider_config_key: 'fz-oauth', connection_id: 'c1', action_name: 'ping', input: {} },
  ],
  triggerSync: [{ provider_config_key: 'fz-api', connection_id: 'c1', syncs: ['items'] }],
  createConnectSession: [{ connection_id: 'browser-2', allowed_integrations: ['fz-api', 'fz-oauth'], connection_config: { 'fz-api': { region: 'us' } }, metadata: { via: 'fuzz' } }],
  connectCredentials: [{ api_key: 'key-browser' }, { username: 'u', password: 'p' }],
  updateIntegration: [{ oauth_scopes: 'a,b' }, { oauth_client_secret: 'rotated' }],
  createIntegration: [{ provider_config_key: 'fz-tmp', provider: 'fuzzapi' }],
};

interface Operation {
  id: string;
  method: string;
  path: string;
  params: { name: string; in: string; required?: boolean; schema: Schema }[];
  body?: Schema;
  public: boolean;
  /** Statuses the document says answer with HTML. */
  html: Set<string>;
}
type Schema = { type?: string; properties?: Record<string, Schema>; required?: string[]; items?: Schema; additionalProperties?: boolean | Schema; $ref?: string; minLength?: number; default?: unknown; minItems?: number };

/** The operations of the served document, with their parameters and body schemas resolved. */
function operationsOf(doc: any): Operation[] {
  const resolve = (s: Schema | undefined, depth = 0): Schema | undefined => {
    if (!s || depth > 8) return s;
    if (s.$ref) return resolve(s.$ref.split('/').slice(1).reduce((o: any, k) => o[k], doc), depth + 1);
    const out: Schema = { ...s };
    if (s.properties) out.properties = Object.fromEntries(Object.entries(s.properties).map(([k, v]) => [k, resolve(v, depth + 1)!]));
    if (s.items) out.items = resolve(s.items, depth + 1);
    if (s.additionalProperties && typeof s.additionalProperties === 'object') out.additionalProperties = resolve(s.additionalProperties, depth + 1);
    return out;
  };
  const ops: Operation[] = [];
  for (const [path, item] of Object.entries<any>(doc.paths)) {
    for (const [method, op] of Object.entries<any>(item)) {
      const html = new Set(Object.entries<any>(op.responses ?? {}).filter(([, r]) => r.content?.['text/html']).map(([status]) => status));
      ops.push({
        id: op.operationId,
        method: method.toUpperCase(),
        path,
        params: (op.parameters ?? []).map((p: any) => ({ ...p, schema: resolve(p.schema) })),
        body: resolve(op.requestBody?.content?.['application/json']?.schema),
        public: Array.isArray(op.security) && op.security.length === 0,
        html,
      });
    }
  }
  return ops;
}

/** What exists on the server after seeding: the valid values requests draw on. */
interface Fixtures {
  integrations: string[];
  connections: string[];
  syncs: string[];
  actions: string[];
  sessions: string[];
  /** States of flows started by seeding, with the cookie of the "browser" that started each. */
  states: Map<string, string>;
  proxyPaths: string[];
}

const providerFiles = (api: string) => ({
  fuzzapi: `
display_name: Fuzz API
categories: [testing]
docs: https://example.com/docs
auth: { mode: api_key, pattern: "[A-Za-z0-9_-]{1,64}" }
connection_config:
  region: { pattern: "[a-z]{2}", optional: true }
api:
  base_url: ${api}/v1
  credentials: { in: header, name: X-Api-Key, value: "\${api_key}" }
  retry: { max_attempts: 1 }
syncs:
  items:
    mode: full
    request: { path: /items }
    pagination: { type: page, param: page }
    records: data
    mapping: "{ 'id': $string(id), 'name': name }"
    model: { name: Item }
actions:
  create_item:
    input: { type: object, required: [title], properties: { title: { type: string, pattern: "^[^<>]{1,200}$" }, tags: { type: array, items: { type: string } } } }
    request: { method: POST, path: "/items", body: "{ 'title': title, 'tags': tags }" }
    output: "{ 'id': id }"
  get_item:
    input: { type: object, required: [id], properties: { id: { type: string } } }
    request: { method: GET, path: "/items/\${input.id}" }
`,
  fuzzoauth: `
display_name: Fuzz OAuth
categories: [testing]
docs: https://example.com/docs
auth:
  mode: oauth2
  authorization_url: ${api}/authorize
  token_url: ${api}/token
  pkce: true
  revocation: { url: "${api}/revoke" }
api: { base_url: "${api}/v1" }
actions:
  ping:
    input: { type: object }
    request: { method: GET, path: /ping }
`,
  fuzzbasic: `
display_name: Fuzz Basic
categories: [testing]
docs: https://example.com/docs
auth: { mode: basic }
api: { base_url: "${api}/v1" }
`,
});

/** The server's log lines for requests that failed with a 5xx (their error and stack). */
const errorsLogged = (server: ServerProcess) => server.output().split('\n').filter((l) => l.includes('"request failed"')).slice(-5).join('\n');

/** Makes the integrations and connections requests draw on; what exists already is left (409). */
async function reseed(server: ServerProcess): Promise<void> {
  const make = async (path: string, body: unknown) => {
    const r = await server.call('POST', path, body);
    // Generated requests run meanwhile and may delete or remake what this makes: only a 5xx is wrong.
    if (r.status >= 500) throw new Error(`seeding POST ${path} ${JSON.stringify(body)} answered ${r.status}: ${r.text}\n${errorsLogged(server)}`);
  };
  for (const [key, provider, client] of [['fz-api', 'fuzzapi'], ['fz-oauth', 'fuzzoauth', true], ['fz-basic', 'fuzzbasic']] as const) {
    // Generated requests may have made the key again with another provider.
    const now = await server.call('GET', `/integration/${key}`);
    if (now.status === 200 && now.body.provider !== provider) await server.call('DELETE', `/integration/${key}`);
    await make('/integration', { provider_config_key: key, provider, ...(client ? { oauth_client_id: 'client', oauth_client_secret: 'client-secret' } : {}) });
  }
  for (let i = 1; i <= 3; i++) {
    await make('/connection', { connection_id: `c${i}`, provider_config_key: 'fz-api', credentials: { type: 'api_key', api_key: `key-${i}` }, metadata: { n: i } });
    await make('/connection', { connection_id: `c${i}`, provider_config_key: 'fz-oauth', credentials: { type: 'oauth2', access_token: `at-${i}`, refresh_token: `rt-${i}`, expires_at: new Date(Date.now() + (i === 1 ? -1000 : 3_600_000)).toISOString() } });
    await make('/connection', { connection_id: `c${i}`, provider_config_key: 'fz-basic', credentials: { type: 'basic', username: `u${i}`, password: `p${i}` } });
  }
}

/** Starts a few real connect flows, so that callbacks can be made with a state and the cookie that goes with it. */
async function startFlows(server: ServerProcess, session: string, states: Map<string, string>): Promise<void> {
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${server.url}/oauth/connect/fz-oauth?connect_session_token=${session}`, { redirect: 'manual' });
    const location = res.headers.get('location');
    if (res.status === 302 && location) states.set(new URL(location).searchParams.get('state')!, (res.headers.get('set-cookie') ?? '').split(';')[0]);
  }
}

async function seed(server: ServerProcess): Promise<Fixtures> {
  const must = async (method: string, path: string, body?: unknown) => {
    const r = await server.call(method, path, body);
    if (r.status >= 300) throw new Error(`seeding ${method} ${path} answered ${r.status}: ${r.text}`);
    return r.body;
  };
  await reseed(server);
  const sessions: string[] = [];
  for (const allowed of [['fz-api'], ['fz-oauth'], ['fz-api', 'fz-basic', 'fz-oauth']]) sessions.push((await must('POST', '/connect/sessions', { connection_id: 'browser-1', allowed_integrations: allowed })).token);
  const states = new Map<string, string>();
  await startFlows(server, sessions[1], states);
  return {
    integrations: ['fz-api', 'fz-oauth', 'fz-basic'],
    connections: ['c1', 'c2', 'c3', 'browser-1'],
    syncs: ['items'],
    actions: ['create_item', 'get_item', 'ping'],
    sessions,
    states,
    proxyPaths: ['items', 'items/1', 'echo/a/b', 'group%2Fproject/items'],
  };
}

/** One generated request: method, raw path (already encoded, possibly on purpose wrongly), headers, raw body. */
interface Generated {
  op: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
  html: Set<string>;
}

function generator(ops: Operation[], fx: Fixtures, secret: string, seedValue: number) {
  const r = rng(seedValue);
  const validFor = (given: string): string[] => {
    const name = given.toLowerCase().replace(/-/g, '_');
    if (/provider_config_key|integration/.test(name)) return fx.integrations;
    if (name === 'connection_id') return fx.connections;
    if (name === 'sync_name' || name === 'syncs') return fx.syncs;
    if (name === 'action_name') return fx.actions;
    if (name === 'connect_session_token') return fx.sessions;
    if (name === 'state') return [...fx.states.keys()];
    if (name === 'path') return fx.proxyPaths;
    if (name === 'provider') return ['fuzzapi', 'fuzzoauth', 'fuzzbasic', 'github', 'stripe'];
    return [];
  };
  const string = (name: string): string => {
    const valid = validFor(name);
    if (valid.length && r.chance(0.6)) return r.pick(valid);
    return r.chance(0.15) ? `${r.pick(valid.length ? valid : ['v'])}${r.pick(HOSTILE_STRINGS)}` : r.pick(HOSTILE_STRINGS);
  };
  /** A value for a schema: mostly of its type, sometimes of another. */
  const value = (schema: Schema | undefined, name: string, depth: number): unknown => {
    if (r.chance(0.08)) return r.pick(WRONG_TYPES);
    switch (schema?.type) {
      case 'boolean':
        return r.pick([true, false, 'true', 'false', 'yes', 1, 0]);
      case 'integer':
      case 'number':
        return r.pick([0, 1, -1, 2 ** 53, 1.5, 1e308, '12']);
      case 'array':
        return Array.from({ length: r.pick([0, 1, 2, 3, 50]) }, () => value(schema.items, name, depth + 1));
      case 'object':
        return object(schema, depth + 1);
      default:
        return string(name);
    }
  };
  const object = (schema: Schema, depth: number): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    if (depth > 6) return out;
    for (const [k, s] of Object.entries(schema.properties ?? {})) if (schema.required?.includes(k) ? r.chance(0.95) : r.chance(0.6)) out[k] = value(s, k, depth);
    if (schema.additionalProperties !== false && r.chance(0.3)) {
      const extra = typeof schema.additionalProperties === 'object' ? schema.additionalProperties : undefined;
      for (let i = 0; i < r.pick([1, 2, 5]); i++) out[r.pick(['x', 'region', 'title', 'constructor', 'toString', 'toJSON', ':colon', '💥', 'a'.repeat(300), '\ud800'])] = value(extra, 'extra', depth);
    }
    if (schema.additionalProperties === false && r.chance(0.1)) out.unexpected = 'field';
    return out;
  };
  const encode = (v: unknown): string => {
    const s = typeof v === 'string' ? v : JSON.stringify(v) ?? '';
    // encodeURIComponent throws on a lone surrogate: send its bytes as they would arrive.
    return [...s].map((c) => (/[\ud800-\udfff]/.test(c) ? loneSurrogateBytes(c.charCodeAt(0)) : encodeURIComponent(c))).join('');
  };
  // Sometimes printable ASCII goes out unencoded (backslashes, dots, quotes as typed).
  const raw = (v: string) => (r.chance(0.15) ? [...v].map((c) => (/[\x21-\x7e]/.test(c) && c !== '?' && c !== '#' ? c : encode(c))).join('') : encode(v));

  return (): Generated => {
    const op = r.pick(ops);
    const headers: Record<string, string> = {};
    if (!op.public || r.chance(0.1)) headers.authorization = r.chance(0.95) ? `Bearer ${secret}` : r.pick(['', 'Bearer', `Bearer ${secret}x`, 'Basic abc', `bearer ${secret}`]);
    let path = op.path;
    const query: string[] = [];
    for (const p of op.params) {
      if (p.in === 'path') {
        const v = p.name === 'path' && r.chance(0.5) ? r.pick(['items/../..', 'a/..\\..\\x', '..%2F..%2Fx', '%2e%2e/%2e%2e', 'a%5C..%5Cb', 'a//b', 'x%00y', 'https://evil.example/', 'items?x=1']) : string(p.name);
        path = path.replace(`{${p.name}}`, p.name === 'path' ? (v.includes('%') || v.includes('/') ? v : raw(v)) : raw(v) || (r.chance(0.5) ? '' : 'x'));
      } else if (p.in === 'query') {
        if (p.required ? r.chance(0.95) : r.chance(0.6)) query.push(`${encode(p.name)}=${encode(value(p.schema, p.name, 0))}`);
      } else if (p.in === 'header') {
        if (r.chance(0.9)) headers[p.name.toLowerCase()] = string(p.name).replace(/[^\x20-\x7e]/g, '?');
      }
    }
    // A state started by seeding comes back with its browser's cookie, and a code, as a provider would send it.
    const state = /[?&]state=([^&]*)/.exec(`?${query.join('&')}`)?.[1];
    // Seeded states are base64url: a state that needs decoding is not one of them.
    const cookie = state !== undefined ? fx.states.get(state) : undefined;
    if (cookie && r.chance(0.9)) {
      headers.cookie = cookie;
      query.push(`code=code-${r.next().toString(36).slice(2)}`);
    }
    if (r.chance(0.05)) query.push(`${r.pick(['x', '__proto__', 'constructor', '%ZZ'])}=${encode(r.pick(HOSTILE_STRINGS))}`);
    if (query.length) path += `?${query.join('&')}`;
    // What node's client refuses to send (spaces, controls, non-ASCII) goes encoded; the rest as made.
    path = [...path].map((c) => (/[\x21-\x7e]/.test(c) ? c : encode(c))).join('');
    let body: string | undefined;
    if (op.body || (op.method !== 'GET' && op.method !== 'DELETE' && r.chance(0.2))) {
      headers['content-type'] = r.chance(0.95) ? 'application/json' : r.pick(['text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1']);
      if (r.chance(0.08)) body = r.pick(['{not json', '', '{"a":', '\u0000', '[1,2', 'null', '"str"']);
      else if (r.chance(0.1)) body = r.pick(HOSTILE_BODIES)();
      else if (VALID_BODIES[op.id] && r.chance(0.3)) body = JSON.stringify(r.pick(VALID_BODIES[op.id]));
      else body = JSON.stringify(op.body ? value(op.body, 'body', 0) : {});
    }
    return { op: op.id, method: op.method, path, headers, body, html: op.html };
  };
}

/** A lone surrogate as the three bytes UTF-8 would give it, percent-encoded: what a client with a bug sends. */
const loneSurrogateBytes = (cp: number) => `%ED%${(0xa0 | ((cp >> 6) & 0x1f)).toString(16).toUpperCase()}%${(0x80 | (cp & 0x3f)).toString(16).toUpperCase()}`;

/** Sends a request as generated (node's http, so that odd paths go out as written). */
function send(url: string, g: Generated): Promise<{ status: number; type: string; text: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, method: g.method, path: g.path, headers: { ...g.headers, ...(g.body !== undefined ? { 'content-length': Buffer.byteLength(g.body) } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type'] ?? ''), text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(g.body);
  });
}

/** What is wrong with an answer, if anything. */
function problem(g: Generated, res: { status: number; type: string; text: string }): string | undefined {
  if (res.status >= 500) return `answered ${res.status}`;
  if (res.status < 400) return undefined;
  if (g.html.has(String(res.status)) && res.type.startsWith('text/html')) return undefined;
  let body: any;
  try {
    body = JSON.parse(res.text);
  } catch {
    return `answered ${res.status} with a body that is not JSON: ${res.text.slice(0, 120)}`;
  }
  if (typeof body?.error !== 'string' || !/^[a-z][a-z_]*$/.test(body.error) || typeof body?.message !== 'string') return `answered ${res.status} with a body that is not an ErrorResponse: ${res.text.slice(0, 160)}`;
  return undefined;
}

async function fuzzStore(store: string): Promise<{ sent: number; failures: string[] }> {
  const api = await fakeApi(async (req, res) => {
    if (req.url === '/token') return json(res, 200, { access_token: `at-${Date.now()}`, refresh_token: `rt-${Date.now()}`, expires_in: 3600 });
    if (req.url === '/revoke') return json(res, 200, {});
    json(res, 200, { id: 'x1', data: [], url: req.url, method: req.method });
  });
  const db = store === 'postgres' ? await freshDatabase() : undefined;
  const server = await spawnTerapi({ TERAPI_PROVIDERS_DIR: providersDir(providerFiles(api.url)), ...(db ? { TERAPI_DATABASE_URL: db.url } : {}) });
  const failures: string[] = [];
  const counts = new Map<string, Map<number | string, number>>();
  let sent = 0;
  try {
    const fixtures = await seed(server);
    const doc = parse((await server.call('GET', '/openapi.yaml')).text);
    const next = generator(operationsOf(doc), fixtures, server.secret, SEED + (store === 'postgres' ? 1 : 0));
    const deadline = Date.now() + SECONDS * 1000;
    let reseeding: Promise<unknown> | undefined;
    const worker = async () => {
      while (sent < REQUESTS && Date.now() < deadline && server.alive()) {
        // Deletes are generated too: every 100 requests, what was deleted is made again.
        if (sent % 100 === 0 && sent > 0) {
          await (reseeding ??= reseed(server)
            .then(() => startFlows(server, fixtures.sessions[1], fixtures.states))
            .catch((e: Error) => failures.push(e.message))
            .finally(() => (reseeding = undefined)));
        }
        sent++;
        const g = next();
        const byStatus = counts.get(g.op) ?? new Map();
        counts.set(g.op, byStatus);
        let key: number | string;
        try {
          const res = await send(server.url, g);
          key = res.status;
          const wrong = problem(g, res);
          if (wrong) failures.push(`${g.op} ${g.method} ${g.path.slice(0, 200)} ${g.body ? `body ${g.body.slice(0, 200)}` : ''}: ${wrong}`);
        } catch (e) {
          key = 'no answer';
          failures.push(`${g.op} ${g.method} ${g.path.slice(0, 200)}: ${(e as Error).message}`);
        }
        byStatus.set(key, (byStatus.get(key) ?? 0) + 1);
      }
    };
    const started = Date.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const seconds = (Date.now() - started) / 1000;
    if (!server.alive()) failures.push(`the server process ended:\n${server.output().slice(-3000)}`);
    else if ((await server.call('GET', '/health')).status !== 200) failures.push('GET /health does not answer 200 after the run');
    console.log(`\n${store}: ${sent} requests in ${seconds.toFixed(1)} s, ${failures.length} failures`);
    for (const [op, byStatus] of [...counts].sort(([a], [b]) => a.localeCompare(b))) {
      const total = [...byStatus.values()].reduce((a, b) => a + b, 0);
      console.log(`  ${op.padEnd(22)} ${String(total).padStart(5)}  ${[...byStatus].sort(([a], [b]) => String(a).localeCompare(String(b))).map(([s, n]) => `${s}: ${n}`).join(', ')}`);
    }
    for (const f of failures.slice(0, 30)) console.log(`  FAIL ${f}`);
    if (failures.length) console.log(errorsLogged(server));
    if (failures.length > 30) console.log(`  ... and ${failures.length - 30} more`);
  } finally {
    await server.stop();
    await api.close();
    await db?.drop();
  }
  return { sent, failures };
}

let failed = 0;
if (!PG_URL && STORES.includes('postgres')) {
  console.error('fuzz: --store postgres needs TERAPI_TEST_DATABASE_URL');
  process.exit(2);
}
console.log(`fuzz: up to ${REQUESTS} requests or ${SECONDS} s per store, ${CONCURRENCY} at a time, seed ${SEED}; stores: ${STORES.join(', ')}`);
for (const store of STORES) failed += (await fuzzStore(store)).failures.length;
process.exit(failed ? 1 : 0);
