import Koa, { type Context, type Middleware, type Next } from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import { secretChecker } from '../core/auth/crypto.ts';
import type { Engine } from '../core/engine.ts';
import { notFound, TerapiError } from '../core/errors.ts';
import { checkJson } from '../core/json-limits.ts';
import { requestLine } from '../core/logger.ts';
import { OPENAPI_TEXT, operations, type Checked } from './openapi.ts';
import { callbackPage } from './callback-page.ts';
import { HotRoutes } from './hot-routes.ts';
import { newRequestId } from './request-id.ts';
import { DashboardSessions, DASHBOARD_SESSION_MS } from '../core/auth/dashboard-sessions.ts';
import type { OperationsQuery } from '../core/operations.ts';
import { isWebFile, serveFile, servePage } from './web.ts';
import { Metrics } from './metrics.ts';

/** Headers of the caller that never reach the provider: ours, and those of this hop only. */
const NOT_FORWARDED = new Set(['authorization', 'host', 'connection', 'content-length', 'provider-config-key', 'connection-id', 'cookie', 'keep-alive', 'transfer-encoding', 'upgrade', 'accept-encoding', 'te', 'trailer', 'proxy-authorization']);

declare module 'koa' {
  interface DefaultState {
    input: Checked;
    /** This request's id (README, "Request ids"): on its log lines, core's too, and in its error answers. */
    requestId: string;
  }
}

/** What a process manager's stop changes in the app (serve.ts): answers then close their connection. */
export interface AppState {
  draining: boolean;
}

/** An incoming X-Request-Id that is kept as is (README, "Request ids"); any other is replaced. */
const REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;
/** A body counts as JSON with one of these content types; any other body is a 415. */
const JSON_TYPES = ['application/json', '+json'];
/** Content types a provider file is taken in (JSON too: JSON is YAML). */
const PROVIDER_TYPES = ['application/yaml', 'application/x-yaml', 'text/yaml', 'text/x-yaml'];
const MAX_PROVIDER_BYTES = 1024 * 1024;

/** A request body as UTF-8 text, at most `limit` bytes (413 past it). */
async function readText(ctx: Context, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      // The rest is not read: this connection cannot carry another request.
      ctx.set('connection', 'close');
      throw new TerapiError(413, 'body_too_large', `the provider file is larger than ${limit / 1024 / 1024} MB`);
    }
    chunks.push(chunk);
  }
  return new TextDecoder('utf-8', { fatal: false }).decode(Buffer.concat(chunks)).replace(/^\uFEFF/, '');
}

/** The dashboard's session cookie (README, "Operator dashboard"). */
const DASHBOARD_COOKIE = 'terapi_dashboard';
/** The methods whose requests carry a body Terapi reads (DELETE too: the proxy passes it on). */
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * The Koa application: request ids, authentication, request checking against the served OpenAPI
 * document, errors as ErrorResponse, one log line per request, and routes that each call the engine once.
 */
export function createApp(engine: Engine, state: AppState = { draining: false }): Koa {
  const app = new Koa();
  const router = new Router();
  const log = engine.log;
  const metrics = new Metrics(engine);
  const isSecret = secretChecker(engine.config.secretKey);
  const requireSecret = (ctx: Context) => {
    const header = ctx.get('authorization');
    const given = header.startsWith('Bearer ') ? header.slice(7) : '';
    if (!given || !isSecret(given)) throw new TerapiError(401, 'unauthorized', 'give your secret key as "Authorization: Bearer <TERAPI_SECRET_KEY>"');
  };
  // Read on each use: tests point the public URL at the port they got.
  const publicUrl = () => new URL(engine.config.publicUrl);
  const publicPath = () => publicUrl().pathname.replace(/\/$/, '');
  /** A cookie as this server sets them: HttpOnly, Secure behind an https public URL (set by hand: Koa's cookies refuse Secure on a plain connection, and TLS often ends at a proxy in front). */
  const setCookie = (ctx: Context, name: string, value: string, maxAgeSeconds: number, path: string, sameSite: 'Lax' | 'Strict') =>
    ctx.append('set-cookie', `${name}=${value}; Max-Age=${maxAgeSeconds}; Path=${path}; HttpOnly; SameSite=${sameSite}${publicUrl().protocol === 'https:' ? '; Secure' : ''}`);
  /** The origins of the app's pages that may hear how a connect flow ended. */
  const allowedOrigins = () => engine.config.allowedOrigins ?? [publicUrl().origin];
  /**
   * A connect session token: the connect_session_token query parameter where the document keeps it
   * and it is given, else `Authorization: Bearer` (the connect UI's way).
   */
  const sessionToken = (ctx: Context) => {
    const given = input(ctx).query.connect_session_token as string | undefined;
    const header = ctx.get('authorization');
    return given ?? (header.startsWith('Bearer ') ? header.slice(7) : undefined);
  };

  // The operator dashboard: its session cookie stands for the secret key on the read operations
  // the document marks DashboardSession, for pages of this server's own origin only.
  const dashboard = new DashboardSessions(engine.store, isSecret, engine.config.secretKey);
  const fromThisSite = (ctx: Context) => {
    const site = ctx.get('sec-fetch-site');
    return !site || site === 'same-origin';
  };
  const requireDashboard = async (ctx: Context) => {
    if (!fromThisSite(ctx) || !(await dashboard.valid(ctx.cookies.get(DASHBOARD_COOKIE)))) {
      throw new TerapiError(401, 'unauthorized', 'sign in to the dashboard again (its session ended), or give your secret key as "Authorization: Bearer <TERAPI_SECRET_KEY>"');
    }
  };
  /** Sign-in and sign-out are taken from the dashboard's own page only (login CSRF). */
  const requireOwnPage = (ctx: Context) => {
    const origin = ctx.get('origin');
    const own = origin !== '' && URL.canParse(origin) && (new URL(origin).origin === publicUrl().origin || new URL(origin).host === ctx.host);
    if (!own || !fromThisSite(ctx)) throw new TerapiError(403, 'cross_origin', "the dashboard's sign-in and sign-out are taken from its own page only");
  };

  /** A request with a body (an empty one is none) must send it as JSON. */
  const requireJsonBody = (ctx: Context) => {
    if (!ctx.request.length && !ctx.get('transfer-encoding')) return;
    if (ctx.request.is(JSON_TYPES) === false) {
      throw new TerapiError(415, 'unsupported_media_type', `the body must be JSON, sent with "Content-Type: application/json"; this one came as "${ctx.get('content-type') || 'no content type'}"`);
    }
  };

  // One middleware in front of everything, rather than one per concern: each layer is an async
  // function and a promise on every request (bench/api.ts). It gives the request its id, the
  // headers every answer carries, errors as ErrorResponse, and the one log line per request.
  // The request id is passed to core explicitly, not carried by AsyncLocalStorage: on Node 20 its
  // promise hooks cost every request 10 to 15 % (bench/api.ts), lines or not.
  const logRequest = requestLine(log);
  app.use(async (ctx, next) => {
    const started = performance.now();
    const header = ctx.req.headers['x-request-id'];
    const given = typeof header === 'string' ? header : '';
    const id = (ctx.state.requestId = REQUEST_ID.test(given) ? given : newRequestId());
    const res = ctx.res;
    res.setHeader('x-request-id', id);
    // Every answer: never sniffed into another type, never framed, nothing loaded or run unless the
    // page says so (the callback page allows its own script by hash).
    res.setHeader('x-content-type-options', 'nosniff');
    res.setHeader('x-frame-options', 'DENY');
    res.setHeader('content-security-policy', "default-src 'none'; frame-ancestors 'none'");
    try {
      await next();
    } catch (e) {
      const err = e instanceof TerapiError ? e : undefined;
      const status = err?.status ?? ((e as { status?: number }).status === 400 || (e as { status?: number }).status === 413 ? (e as { status: number }).status : 500);
      ctx.status = status;
      const body = err
        ? { error: err.code, message: err.message, ...err.details }
        : status === 413
          ? { error: 'body_too_large', message: 'the request body is larger than 1 MB' }
          : status < 500
            ? { error: 'invalid_request', message: `the request body could not be read: ${(e as Error).message}` }
            : { error: 'internal_error', message: 'an unexpected error happened; it has been logged with this request_id' };
      ctx.body = { ...body, request_id: id };
      if (status >= 500) log.error({ request_id: id, err: e, path: ctx.path }, 'request failed');
    } finally {
      if (state.draining) ctx.set('connection', 'close');
      metrics.observe(ctx, (performance.now() - started) / 1000);
      // The path only: query strings may carry connect session tokens and OAuth codes. The metric's
      // route template is ctx._matchedRoute (set by the router and by HotRoutes).
      logRequest(id, ctx.method, ctx.path, ctx.status, Math.round((performance.now() - started) * 10) / 10);
    }
  });

  // A worker process (TERAPI_ROLE=worker) runs syncs and webhooks; it serves only its health.
  if (engine.config.role === 'worker') {
    app.use(async (ctx, next) => {
      if (ctx.path === '/health' || ctx.path === '/metrics') return next();
      throw new TerapiError(404, 'not_found', 'this process is a worker (TERAPI_ROLE=worker): it runs syncs and serves only /health and /metrics; the API is served by the api processes');
    });
  }

  // The hot routes (GET, no body, never /proxy/) go first: the layers below are not theirs.
  const hot = new HotRoutes();
  app.use(hot.middleware());

  // Bodies are read for the methods that carry one, DELETE too (the proxy passes a DELETE's JSON body
  // on): a GET skips the layer. A provider file is read as text (YAML, or JSON, which is YAML too), to
  // locate its errors in it.
  const parseBody = bodyParser({ enableTypes: ['json'], jsonLimit: '1mb', encoding: 'utf-8', parsedMethods: [...BODY_METHODS], detectJSON: (ctx) => Boolean(ctx.request.is(JSON_TYPES)) });
  app.use((ctx, next) => (BODY_METHODS.has(ctx.method) && !(ctx.method === 'PUT' && ctx.path.startsWith('/providers/')) ? parseBody(ctx, next) : next()));

  /** Checks the secret key (unless the operation is public) and the request against the document. */
  const op = (id: string) => {
    const operation = operations.get(id);
    if (!operation) throw new Error(`no operation ${id} in openapi.yaml`);
    return async (ctx: Context, next: Next) => {
      if (operation.dashboard && !ctx.get('authorization') && ctx.cookies.get(DASHBOARD_COOKIE) !== undefined) await requireDashboard(ctx);
      else if (!operation.public) requireSecret(ctx);
      if (operation.takesBody) requireJsonBody(ctx);
      ctx.state.input = operation.check(ctx.params, ctx.query, ctx.request.body);
      await next();
    };
  };
  const input = (ctx: Context) => ctx.state.input;
  /**
   * A JSON answer made by `make` from `source`, serialised once per `source` object when that object
   * is frozen and shared (a token answer Engine.token keeps, a connection record from the embedded
   * store's read cache: a change makes a new object), else on each call. The bytes are those Koa
   * would write for the object.
   */
  const answerTexts = new WeakMap<object, string>();
  const answerJson = (ctx: Context, source: object, make: () => unknown) => {
    let text = answerTexts.get(source);
    if (text === undefined) {
      text = JSON.stringify(make());
      if (Object.isFrozen(source)) answerTexts.set(source, text);
    }
    ctx.res.setHeader('content-type', 'application/json; charset=utf-8');
    ctx.body = text;
  };
  /** A GET route of the router that is also one of the hot routes (HotRoutes), taken ahead of it. */
  const hotGet = (path: string, check: Middleware, handler: (ctx: Context) => Promise<void>) => {
    router.get(path, check, handler);
    hot.add('GET', path, [check, handler]);
  };

  router.get('/health', op('health'), async (ctx) => {
    try {
      await engine.store.ping();
      ctx.body = { status: 'ok', store: engine.store.dialect, providers: engine.registry.list().length };
    } catch {
      ctx.status = 503;
      ctx.body = { status: 'unavailable', store: engine.store.dialect, providers: engine.registry.list().length };
    }
  });
  router.get('/metrics', op('getMetrics'), (ctx) => metrics.serve(ctx));
  router.get('/openapi.yaml', op('openapi'), (ctx) => {
    ctx.type = 'application/yaml';
    ctx.body = OPENAPI_TEXT;
  });
  router.get('/providers', op('listProviders'), (ctx) => {
    ctx.body = {
      providers: engine.registry.list().map((p) => ({
        name: p.name,
        display_name: p.display_name,
        categories: p.categories,
        docs: p.docs,
        auth_mode: p.auth.mode,
        connection_config: Object.fromEntries(Object.entries(p.connection_config ?? {}).map(([k, f]) => [k, { description: f.description, pattern: f.pattern, optional: f.optional ?? false }])),
        syncs: Object.keys(p.syncs ?? {}),
        actions: Object.keys(p.actions ?? {}),
      })),
    };
  });

  // Provider files deployed through the API (README, "Provider files through the API").
  router.put('/providers/:name', op('deployProvider'), async (ctx) => {
    if (ctx.request.is([...PROVIDER_TYPES, ...JSON_TYPES]) === false || !ctx.get('content-type')) {
      throw new TerapiError(415, 'unsupported_media_type', `send the provider file with "Content-Type: application/yaml" (or text/yaml, or application/json); this one came as "${ctx.get('content-type') || 'no content type'}"`);
    }
    const { created, view } = await engine.deployments.deploy(input(ctx).params.name, await readText(ctx, MAX_PROVIDER_BYTES));
    ctx.status = created ? 201 : 200;
    ctx.body = view;
  });
  router.get('/providers/:name', op('getProvider'), (ctx) => {
    ctx.body = engine.deployments.describe(input(ctx).params.name);
  });
  router.delete('/providers/:name', op('deleteProvider'), async (ctx) => {
    await engine.deployments.remove(input(ctx).params.name);
    ctx.status = 204;
  });

  // Integrations
  router.get('/integration', op('listIntegrations'), async (ctx) => {
    ctx.body = { integrations: await engine.integrations.list() };
  });
  router.post('/integration', op('createIntegration'), async (ctx) => {
    ctx.body = await engine.integrations.create(input(ctx).body as any);
  });
  router.get('/integration/:provider_config_key', op('getIntegration'), async (ctx) => {
    ctx.body = await engine.integrations.get(input(ctx).params.provider_config_key);
  });
  router.patch('/integration/:provider_config_key', op('updateIntegration'), async (ctx) => {
    ctx.body = await engine.updateIntegration(input(ctx).params.provider_config_key, input(ctx).body);
  });
  router.delete('/integration/:provider_config_key', op('deleteIntegration'), async (ctx) => {
    await engine.deleteIntegration(input(ctx).params.provider_config_key, ctx.state.requestId);
    ctx.status = 204;
  });

  // Connections
  router.get('/connection', op('listConnections'), async (ctx) => {
    const { provider_config_key, connection_id } = input(ctx).query as Record<string, string | undefined>;
    if (provider_config_key !== undefined) await engine.integrations.record(provider_config_key);
    const records = await engine.connections.list(provider_config_key);
    ctx.body = { connections: records.filter((r) => connection_id === undefined || r.id === connection_id).map((r) => engine.connections.view(r)) };
  });
  router.post('/connection', op('createConnection'), async (ctx) => {
    ctx.body = await engine.createConnection(input(ctx).body as any, ctx.state.requestId);
  });
  hotGet('/connection/:connection_id', op('getConnection'), async (ctx) => {
    const { params, query } = input(ctx);
    await engine.integrations.record(query.provider_config_key as string);
    const record = await engine.connections.get(query.provider_config_key as string, params.connection_id);
    answerJson(ctx, record, () => engine.connections.view(record));
  });
  router.delete('/connection/:connection_id', op('deleteConnection'), async (ctx) => {
    const { params, query } = input(ctx);
    await engine.deleteConnection(query.provider_config_key as string, params.connection_id, ctx.state.requestId);
    ctx.status = 204;
  });

  // Auth
  hotGet('/auth/token/:provider_config_key/:connection_id', op('getAuthToken'), async (ctx) => {
    const { params, query } = input(ctx);
    ctx.res.setHeader('cache-control', 'no-store');
    const token = await engine.token(params.provider_config_key, params.connection_id, query.force_refresh === true, ctx.state.requestId);
    // The same frozen answer for as long as the credentials stay (Engine.token).
    answerJson(ctx, token, () => token);
  });

  // Syncs
  router.post('/sync/trigger', op('triggerSync'), async (ctx) => {
    const b = input(ctx).body as { provider_config_key: string; connection_id: string; syncs: string[] };
    ctx.body = await engine.triggerSyncs(b.provider_config_key, b.connection_id, b.syncs);
  });
  for (const [path, id, paused] of [['/sync/pause', 'pauseSync', true], ['/sync/start', 'startSync', false]] as const) {
    router.post(path, op(id), async (ctx) => {
      const b = input(ctx).body as { provider_config_key: string; connection_id: string; syncs: string[] };
      ctx.body = { success: true, syncs: await engine.syncs.setPaused(b.provider_config_key, b.connection_id, b.syncs, paused) };
    });
  }
  router.get('/syncs', op('listSyncs'), async (ctx) => {
    const q = input(ctx).query as { provider_config_key?: string; connection_id?: string };
    ctx.body = { syncs: await engine.syncs.list(q.provider_config_key, q.connection_id) };
  });
  router.get('/sync/:connection_id/:sync_name', op('getSyncStatus'), async (ctx) => {
    const { params, query } = input(ctx);
    ctx.body = await engine.syncStatus(query.provider_config_key as string, params.connection_id, params.sync_name);
  });

  router.get('/records', op('listRecords'), async (ctx) => {
    ctx.body = await engine.records(input(ctx).query as any);
  });

  // Actions
  router.post('/action/trigger', op('triggerAction'), async (ctx) => {
    const b = input(ctx).body as { provider_config_key: string; connection_id: string; action_name: string; input?: Record<string, unknown> };
    ctx.body = await engine.runAction(b.provider_config_key, b.connection_id, b.action_name, b.input, ctx.state.requestId);
  });

  // Connect flow
  router.post('/connect/sessions', op('createConnectSession'), async (ctx) => {
    const session = await engine.connect.createSession(input(ctx).body as any);
    // In the fragment: a browser sends it to no server, and the page takes it out of the address bar.
    ctx.body = { ...session, connect_url: `${engine.config.publicUrl}/connect#connect_session_token=${session.token}` };
  });
  router.get('/connect/session', op('getConnectSession'), async (ctx) => {
    ctx.set('cache-control', 'no-store');
    ctx.body = await engine.connect.describe(sessionToken(ctx));
  });
  /** The cookie that binds an OAuth flow to this browser, sent back to the callback only. */
  const setFlowCookie = (ctx: Context, cookie: { name: string; value: string; maxAgeSeconds: number }) => setCookie(ctx, cookie.name, cookie.value, cookie.maxAgeSeconds, `${publicPath()}/oauth/callback`, 'Lax');
  router.post('/connect/:provider_config_key/oauth', op('startOAuthConnect'), async (ctx) => {
    const { params, body } = input(ctx);
    const { url, cookie } = await engine.connect.authorizationUrl(sessionToken(ctx), params.provider_config_key, (body.connection_config ?? {}) as Record<string, unknown>);
    setFlowCookie(ctx, cookie);
    ctx.set('cache-control', 'no-store');
    ctx.body = { authorization_url: url };
  });
  router.get('/oauth/connect/:provider_config_key', op('oauthConnect'), async (ctx) => {
    const { params, query } = input(ctx);
    const { url, cookie } = await engine.connect.authorizationUrl(query.connect_session_token as string, params.provider_config_key);
    setFlowCookie(ctx, cookie);
    ctx.set('cache-control', 'no-store');
    ctx.redirect(url);
  });
  router.get('/oauth/callback', op('oauthCallback'), async (ctx) => {
    const outcome = await engine.connectCallback(input(ctx).query as Record<string, string>, (name) => ctx.cookies.get(name), ctx.state.requestId);
    const provider = outcome.provider_config_key ? await engine.integrations.withProvider(outcome.provider_config_key).then((f) => f.provider.display_name, () => undefined) : undefined;
    const { html, csp } = callbackPage(outcome, allowedOrigins(), provider);
    ctx.status = outcome.ok ? 200 : 400;
    ctx.type = 'text/html';
    ctx.set('cache-control', 'no-store');
    ctx.set('content-security-policy', csp);
    // The address holds the (spent) code and state: no request of the page passes it on.
    ctx.set('referrer-policy', 'no-referrer');
    ctx.body = html;
  });
  router.post('/connect/:provider_config_key/credentials', op('connectCredentials'), async (ctx) => {
    const { params, body } = input(ctx);
    ctx.body = await engine.connectCredentials(sessionToken(ctx), params.provider_config_key, body, ctx.state.requestId);
  });

  // The connect UI and connect.js (README, "The connect UI"), the dashboard, and their files.
  router.get('/connect', op('connectPage'), (ctx) => servePage(ctx, 'connect.html', { allowed_origins: JSON.stringify(allowedOrigins()) }, 'no-referrer'));
  router.get('/connect.js', op('connectScript'), (ctx) => {
    // Loaded by the app's pages, of other origins, as a module (a CORS request).
    ctx.set('access-control-allow-origin', '*');
    ctx.set('cross-origin-resource-policy', 'cross-origin');
    serveFile(ctx, 'connect.js');
  });
  router.get('/web/:file', op('webFile'), (ctx) => {
    const name = input(ctx).params.file;
    if (!isWebFile(name)) throw notFound('not_found', `there is no file ${name} under /web/`);
    serveFile(ctx, name);
  });
  router.get('/dashboard', op('dashboardPage'), (ctx) => servePage(ctx, 'dashboard.html', {}, 'same-origin'));
  router.post('/dashboard/login', op('dashboardLogin'), async (ctx) => {
    requireOwnPage(ctx);
    const token = await dashboard.open(input(ctx).body.secret_key as string);
    setCookie(ctx, DASHBOARD_COOKIE, token, DASHBOARD_SESSION_MS / 1000, `${publicPath()}/`, 'Strict');
    ctx.set('cache-control', 'no-store');
    ctx.status = 204;
  });
  router.post('/dashboard/logout', op('dashboardLogout'), async (ctx) => {
    requireOwnPage(ctx);
    await dashboard.close(ctx.cookies.get(DASHBOARD_COOKIE));
    setCookie(ctx, DASHBOARD_COOKIE, '', 0, `${publicPath()}/`, 'Strict');
    ctx.status = 204;
  });
  router.get('/operations', op('listOperations'), async (ctx) => {
    ctx.body = await engine.operations.list(input(ctx).query as OperationsQuery);
  });

  // The proxy: /proxy/<path under the provider's base URL>, any method.
  const proxyOp = operations.get('proxyGet')!;
  const proxy = async (ctx: Context) => {
    requireSecret(ctx);
    const integration = ctx.get('provider-config-key');
    const connection = ctx.get('connection-id');
    proxyOp.check({ path: ctx.path.slice(7) }, {}, undefined);
    if (!integration || !connection) throw new TerapiError(400, 'invalid_request', 'the proxy needs the headers Provider-Config-Key and Connection-Id');
    requireJsonBody(ctx);
    const body = ctx.request.is(JSON_TYPES) ? ctx.request.body : undefined;
    checkJson(body, 'body');
    const forwarded: Record<string, string> = {};
    for (const [name, value] of Object.entries(ctx.headers)) {
      if (typeof value === 'string' && !NOT_FORWARDED.has(name)) forwarded[name] = value;
    }
    const res = await engine.proxy(integration, connection, {
      method: ctx.method,
      path: ctx.path.slice(7),
      query: Object.fromEntries(Object.entries(ctx.query).map(([k, v]) => [k, Array.isArray(v) ? v[v.length - 1] : (v ?? '')])),
      headers: forwarded,
      body,
    }, ctx.state.requestId);
    ctx.status = res.status;
    const type = res.headers['content-type'];
    if (typeof type === 'string') ctx.type = type;
    // Passed on as it arrives: an answer of any size goes through in constant memory.
    ctx.body = res.body;
  };
  app.use((ctx, next) => (ctx.path.startsWith('/proxy/') ? proxy(ctx) : next()));

  metrics.bindRoutes(router);
  app.use(router.routes());
  // Reached when no route took the request: router.allowedMethods() answers OPTIONS, and sets 405
  // and Allow for a path the router knows with another method; the answer is then an ErrorResponse.
  app.use(async (ctx, next) => {
    await next();
    if (ctx.status === 405) throw new TerapiError(405, 'method_not_allowed', `${ctx.path} does not take ${ctx.method}; it takes ${ctx.response.get('allow')}`);
    if (ctx.status === 501) throw new TerapiError(501, 'not_implemented', `this server does not implement the method ${ctx.method}`);
    if (ctx.status === 404) throw notFound('not_found', `there is no ${ctx.method} ${ctx.path}: GET /openapi.yaml lists the API`);
  });
  app.use(router.allowedMethods());
  return app;
}
