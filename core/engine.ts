import { AuthEngine, freshValues, OAuthError, refreshesOn401, type Fresh } from './auth/tokens.ts';
import { exchangeOf, exchangeToken, isExchanged } from './auth/token-exchange.ts';
import { callProvider, callProviderStreamed, limits, providerFailed, targetUrl, type StreamedResponse } from './http/send.ts';
import { ConnectFlow, type ConnectOutcome, type FinishConnection } from './auth/connect.ts';
import { checkConnectionConfig, Connections, parseCredentials, type ConnectionRecord, type ConnectionView, type Credentials } from './auth/connections.ts';
import { ConfigError, type Config } from './config.ts';
import { Sealer } from './auth/crypto.ts';
import { badRequest, notFound, reworded, TerapiError } from './errors.ts';
import { Integrations, type IntegrationRecord } from './auth/integrations.ts';
import { LocalLock, PostgresLock, type Lock } from './store/lock.ts';
import type { Logger } from './logger.ts';
import { apiRequest, basicAuth, requestRetry, templateValues } from './http/provider-request.ts';
import { ProviderRegistry } from './format/provider-registry.ts';
import type { Method, PostConnection, Provider } from './format/provider-types.ts';
import { Template } from './format/template.ts';
import { acquirePools, releasePools, type WorkerPools } from './jobs/pools.ts';
import { PgBossQueue, SqliteQueue, type JobQueue, type QueueName } from './jobs/queue.ts';
import { Webhooks } from './jobs/webhooks.ts';
import { openSql, type Sql } from './store/sql.ts';
import { SyncStore } from './sync/sync-store.ts';
import { Syncs, type RecordsQuery, type SyncStatusView } from './sync/syncs.ts';
import { Store } from './store/store.ts';
import { checkJson, MAX_METADATA_BYTES } from './json-limits.ts';
import { evaluate } from './format/evaluate.ts';
import { OperationLog, type Operation } from './operations.ts';
import { Deployments } from './format/deployments.ts';
import { actionOf, checkActionInput, sendAction } from './http/action.ts';
import { ProviderFiles } from './store/provider-files.ts';

/** How often every process looks for provider files deployed through the API by any process. */
const DEPLOYED_POLL_MS = 1000;

export interface AuthTokenView {
  type: 'Bearer' | 'ApiKey' | 'Basic' | 'OAuth1';
  access_token: string;
  expires_at?: string;
  raw?: Record<string, unknown>;
}

/**
 * The engine: everything Terapi does, without HTTP. The server is a thin layer of routes over it.
 */
export class Engine {
  readonly integrations: Integrations;
  readonly connections: Connections;
  readonly auth: AuthEngine;
  readonly connect: ConnectFlow;
  readonly syncs: Syncs;
  readonly webhooks: Webhooks;
  /** The operations log (GET /operations, the dashboard). */
  readonly operations: OperationLog;
  /** Provider files deployed through the API (PUT /providers/{name}). */
  readonly deployments: Deployments;
  private windingDown?: Promise<void>;
  /**
   * Token answers by the credentials they show. Opened credentials are frozen and shared
   * (Sealer.open), the same object for as long as they stay the connection's, so an answer is
   * built once per credentials rather than per request (its `raw` is a copy without the refresh
   * token, a JSON round trip).
   */
  private readonly tokenViews = new WeakMap<Credentials, AuthTokenView>();

  private readonly sealer: Sealer;

  private constructor(
    readonly config: Config,
    readonly registry: ProviderRegistry,
    readonly store: Store,
    private readonly sql: Sql,
    private readonly pools: WorkerPools,
    readonly queue: JobQueue,
    private readonly lock: Lock,
    readonly log: Logger,
  ) {
    this.sealer = new Sealer(config.encryptionKeys);
    this.integrations = new Integrations(store, registry, this.sealer);
    this.connections = new Connections(store, this.sealer);
    this.auth = new AuthEngine(this.integrations, this.connections, lock, log);
    this.connect = new ConnectFlow(store, this.integrations, this.auth, this.finishConnection, config, this.sealer, log);
    this.auth.on('needs_reauth', (e) => void this.webhooks.send({ type: 'connection.needs_reauth', ...e }).catch((err) => log.warn({ err: (err as Error).message }, 'webhook not queued')));
    this.webhooks = new Webhooks(queue, { url: config.webhookUrl, secret: config.secretKey, retrySeconds: config.webhookRetryMs / 1000 }, log);
    this.syncs = new Syncs(new SyncStore(sql), pools, queue, this.webhooks, this.integrations, this.connections, this.auth, {
      leaseMs: config.syncLeaseMs,
      waitBudgetMs: config.syncWaitBudgetMs,
      concurrency: config.syncConcurrency,
      tickMs: 1000,
    }, log);
    this.operations = new OperationLog(sql, config.operationsLogSize, log);
    this.deployments = new Deployments(new ProviderFiles(sql), registry, this.integrations, log);
    this.logOperations();
  }

  /** What the operations log hears of from the engine's parts; actions, proxy calls and connects are logged where they are served. */
  private logOperations(): void {
    const ops = this.operations;
    this.auth.on('refreshed', (e) => ops.record({ type: 'refresh', provider_config_key: e.provider_config_key, connection_id: e.connection_id, outcome: 'success', duration_ms: e.duration_ms, request_id: e.request_id }));
    this.auth.on('refresh_failed', (e) =>
      ops.record({ type: 'refresh', provider_config_key: e.provider_config_key, connection_id: e.connection_id, outcome: e.needs_reauth ? 'needs_reauth' : 'error', error: e.error, message: e.message, duration_ms: e.duration_ms, request_id: e.request_id }),
    );
    this.syncs.on('run', ({ integration, connection, sync, model, result }) => {
      const s = result.summary;
      ops.record({
        type: 'sync_run',
        provider_config_key: integration,
        connection_id: connection,
        name: sync,
        outcome: s.outcome === 'running' ? 'error' : s.outcome,
        duration_ms: s.finished_at ? Date.parse(s.finished_at) - Date.parse(s.started_at) : undefined,
        message: s.error,
        detail: { model, pages: s.pages, added: s.added, updated: s.updated, deleted: s.deleted, unchanged: s.unchanged, invalid: s.invalid.count, ...(result.records_count !== undefined ? { records_count: result.records_count } : {}) },
      });
    });
  }

  /**
   * Runs `work` and logs it as an operation: its outcome (`outcome` may say more of a result) or
   * the error it threw, in the words the API answers (already scrubbed of secrets).
   */
  private async logged<T>(op: Omit<Operation, 'outcome'>, work: () => Promise<T>, outcome?: (result: T) => Partial<Operation>): Promise<T> {
    const started = performance.now();
    try {
      const result = await work();
      this.operations.record({ ...op, outcome: 'success', duration_ms: performance.now() - started, ...outcome?.(result) });
      return result;
    } catch (e) {
      const known = e instanceof TerapiError ? e : undefined;
      this.operations.record({
        ...op,
        outcome: known?.code === 'connection_needs_reauth' ? 'needs_reauth' : 'error',
        error: known?.code ?? 'internal_error',
        // Anything else is a bug, whose text is for the server's log only.
        message: known?.message ?? 'an unexpected error happened: see the server log',
        duration_ms: performance.now() - started,
      });
      throw e;
    }
  }

  /**
   * Loads the providers (throws ProviderLoadError listing every error), opens the store and checks
   * that the encryption keys open what it holds (throws ConfigError): a start that cannot work stops here.
   */
  static async start(config: Config, log: Logger): Promise<Engine> {
    const registry = new ProviderRegistry(config.providersDirs);
    registry.load();
    limits.responseBytes = config.maxResponseBytes;
    const store = await Store.open(config);
    const sql = openSql(config);
    await new SyncStore(sql).migrate();
    const lock = config.databaseUrl ? new PostgresLock(config.databaseUrl) : new LocalLock();
    const queue = config.databaseUrl ? await PgBossQueue.open(config.databaseUrl, log) : await SqliteQueue.open(sql, log);
    const pools = acquirePools();
    // The evaluation thread is ready before the first request needs it (it loads the expression
    // modules only: a fraction of a second).
    await pools.warm();
    const engine = new Engine(config, registry, store, sql, pools, queue, lock, log);
    try {
      await engine.operations.migrate();
      // Before any run: the deployed provider files are part of the catalogue.
      await engine.deployments.start(DEPLOYED_POLL_MS);
      await engine.checkSealedValues();
    } catch (e) {
      await engine.stop();
      throw e;
    }
    registry.watch();
    registry.on('reloaded', (count) => log.info({ providers: count }, 'provider files reloaded'));
    registry.on('rejected', (errors) => log.error({ errors }, 'provider change rejected: the previous version stays live'));
    if (config.role !== 'api') {
      // Embedded: this process owns the store alone, so a run still marked running died with the last one.
      await engine.syncs.recover(!config.databaseUrl);
      await engine.syncs.work();
      await queue.work('terapi-webhook', 4, (delivery) => engine.webhooks.deliver(delivery));
    }
    return engine;
  }

  /**
   * Opens every integration's client secret and one connection's credentials (the first by key):
   * keys that do not open them (a lost keys.json, a wrong TERAPI_ENCRYPTION_KEY, a previous key
   * dropped too soon) are refused at start rather than failing each call that needs them.
   */
  private async checkSealedValues(): Promise<void> {
    const integrations = await this.store.list<IntegrationRecord>(`${Store.key('integration')}/`);
    const [connection] = await this.store.list<ConnectionRecord>(`${Store.key('connection')}/`, 1);
    const sealed = integrations.filter((i) => i.oauth_client_secret).map((i) => ({ what: `the OAuth client secret of integration "${i.unique_key}"`, text: i.oauth_client_secret! }));
    if (connection) sealed.push({ what: `the credentials of connection "${connection.id}" (integration "${connection.provider_config_key}")`, text: connection.credentials });
    const problems: string[] = [];
    for (const { what, text } of sealed) {
      try {
        this.sealer.open(text);
      } catch (e) {
        problems.push(`${what} cannot be opened: ${(e as Error).message}`);
      }
    }
    if (problems.length) throw new ConfigError(problems);
  }

  /**
   * The jobs waiting in each queue and how late the longest-waiting scheduled run is, read from the
   * store at each call: with PostgreSQL every server reports the cluster's state (GET /metrics).
   */
  async backlog(): Promise<{ waiting: Record<QueueName, number>; scheduleLagMs: number }> {
    const [runs, webhooks, scheduleLagMs] = await Promise.all([this.queue.waiting('terapi-sync-run'), this.queue.waiting('terapi-webhook'), this.syncs.scheduleLag()]);
    return { waiting: { 'terapi-sync-run': runs, 'terapi-webhook': webhooks }, scheduleLagMs };
  }

  /**
   * Stops taking runs and webhook deliveries now; the runs and deliveries in flight get the stop's
   * bound less a margin to finish, and the runs still going are then handed back (marked interrupted and queued
   * again, to resume from their last stored page on any worker). The server calls it as soon as a
   * stop begins, while its requests drain; `stop` calls it too.
   */
  stopWorking(): Promise<void> {
    // Once: `stop` after the server's own call waits for the same wind-down.
    this.windingDown ??= (async () => {
      // The margin (2 s) is for handing back and closing, so that the whole stop fits in the bound.
      const grace = Math.max(0, this.config.shutdownTimeoutMs - 2000);
      const until = Date.now() + grace;
      await this.syncs.stop(grace);
      // Webhook deliveries in flight, within the same grace: one cut now would be sent again later.
      await this.queue.drain(Math.max(0, until - Date.now()));
    })();
    return this.windingDown;
  }

  /** Stops taking runs and webhooks (stopWorking), then closes the store, the queue and the threads. */
  async stop(): Promise<void> {
    this.deployments.stop();
    await this.stopWorking();
    this.registry.close();
    await this.queue.close();
    await releasePools(this.pools);
    await this.lock.close();
    await this.operations.close();
    await this.sql.close();
    await this.store.disconnect();
  }

  /** createConnection: credentials the app already holds. */
  async createConnection(input: { connection_id: string; provider_config_key: string; credentials?: Record<string, unknown>; metadata?: Record<string, unknown>; connection_config?: Record<string, unknown> }, requestId?: string): Promise<ConnectionView> {
    return this.logged({ type: 'connect', name: 'api', provider_config_key: input.provider_config_key, connection_id: input.connection_id, request_id: requestId }, () => this.makeConnection(input));
  }

  private async makeConnection(input: Parameters<Engine['createConnection']>[0]): Promise<ConnectionView> {
    checkJson(input.metadata, 'metadata', { maxBytes: MAX_METADATA_BYTES, storable: true });
    const { provider } = await this.integrations.withProvider(input.provider_config_key);
    const credentials = parseCredentials(provider, input.credentials);
    const config = checkConnectionConfig(provider, input.connection_config ?? {});
    return this.finishConnection({ integration: input.provider_config_key, connection_id: input.connection_id, credentials, connection_config: config, metadata: input.metadata ?? {}, replace: false });
  }

  /** The OAuth callback of the connect flow (ConnectFlow.callback), logged as a connect. */
  async connectCallback(query: Record<string, string | undefined>, cookie: (name: string) => string | undefined, requestId?: string): Promise<ConnectOutcome> {
    const started = performance.now();
    const outcome = await this.connect.callback(query, cookie, requestId);
    this.operations.record({
      type: 'connect',
      name: 'oauth',
      provider_config_key: outcome.provider_config_key,
      connection_id: outcome.connection_id,
      outcome: outcome.ok ? 'success' : 'error',
      ...(outcome.ok ? {} : { error: outcome.error, message: outcome.message }),
      duration_ms: performance.now() - started,
      request_id: requestId,
    });
    return outcome;
  }

  /** Credentials posted by the connect UI (ConnectFlow.postCredentials), logged as a connect. */
  async connectCredentials(sessionToken: string | undefined, integrationKey: string, input: Parameters<ConnectFlow['postCredentials']>[2], requestId?: string) {
    // The connection's id is the session's, known once the session is read.
    const session = await this.connect.session(sessionToken, integrationKey);
    return this.logged({ type: 'connect', name: 'credentials', provider_config_key: integrationKey, connection_id: session.connection_id, request_id: requestId }, () => this.connect.postCredentials(sessionToken, integrationKey, input));
  }

  /** Stores a new connection, after the provider's post-connection request where it has one. */
  private finishConnection = async (input: Parameters<FinishConnection>[0]): Promise<ConnectionView> => {
    const { integration, provider } = await this.integrations.withProvider(input.integration);
    // Checked now to fail before any request to the provider; the write itself is atomic too.
    if (!input.replace) await this.connections.assertNew(input.integration, input.connection_id);
    // A client-credentials connection gets its token on first use (AuthEngine.fresh), not here.
    let credentials: Credentials = input.credentials;
    let config = { ...input.connection_config };
    const metadata = { ...input.metadata };
    // A two-step auth exchanges the credentials now: refused ones are the caller's mistake (400), and
    // the exchange's answer may fill connection_config (Tableau's site id).
    const exchange = exchangeOf(provider);
    if (exchange && isExchanged(credentials)) {
      try {
        const result = await exchangeToken(provider, exchange, config, credentials);
        credentials = result.credentials;
        config = { ...config, ...result.config };
        Object.assign(metadata, result.metadata);
      } catch (e) {
        const scrub = this.auth.scrubber(integration, credentials);
        if (e instanceof OAuthError) throw badRequest('invalid_credentials', scrub(`${provider.display_name} refused these credentials at its token exchange (HTTP ${e.status})${e.description ? `: "${e.description}"` : ''}. Check them and try again`));
        throw reworded(e, scrub);
      }
      if (!provider.post_connection) checkConnectionConfig(provider, config);
    }
    if (provider.post_connection) {
      const post = provider.post_connection;
      try {
        const values = templateValues(config, credentials, integration.oauth_client_id);
        const res = await callProvider(apiRequest(provider, values, post.request), provider.api.retry);
        if (res.status >= 400) throw providerFailed(`${provider.display_name} answered HTTP ${res.status} to the post-connection request`);
        const chosen = post.choose ? await chooseResult(provider, post.choose, res.body, config) : res.body;
        const bindings = { response: res.body };
        for (const [name, expr] of Object.entries(post.config ?? {})) {
          const v = await evaluate(expr, chosen, bindings);
          if (typeof v === 'string') config[name] = v;
        }
        for (const [name, expr] of Object.entries(post.metadata ?? {})) metadata[name] = await evaluate(expr, chosen, bindings);
      } catch (e) {
        throw reworded(e, this.auth.scrubber(integration, credentials));
      }
      checkConnectionConfig(provider, config);
    }
    try {
      checkJson(metadata, 'metadata', { maxBytes: MAX_METADATA_BYTES });
    } catch (e) {
      throw providerFailed(`the connection's metadata, with what ${provider.display_name} answered, cannot be kept: ${(e as Error).message}`);
    }
    const now = new Date().toISOString();
    const record = { id: input.connection_id, provider_config_key: input.integration, provider: provider.name, metadata, connection_config: config, created_at: now };
    let written: ConnectionRecord;
    let replaced: ConnectionRecord | undefined;
    try {
      if (!input.replace) written = await this.connections.create(integration, record, credentials);
      else ({ record: written, replaced } = await this.connections.put(integration, record, credentials));
    } catch (e) {
      // This process's copy of the integration may be one another server has deleted since.
      if ((e as { code?: string }).code === 'unknown_integration') this.integrations.forget(input.integration);
      throw e;
    }
    // Connecting again replaces the grant: the old one must not stay alive at the provider.
    if (replaced) await this.auth.revokeReplaced(provider, integration, replaced, credentials);
    else {
      await this.syncs.scheduleConnection(input.integration, input.connection_id);
      // The connection is made: a webhook that cannot be queued is logged, not the request's failure.
      await this.webhooks.send({ type: 'connection.created', provider_config_key: input.integration, connection_id: input.connection_id }).catch((e) => this.log.warn({ err: e }, 'webhook connection.created not queued'));
    }
    return this.connections.view(written);
  };



  /** PATCH /integration: the OAuth client, scopes, and sync frequencies (applied to every connection's schedule). */
  async updateIntegration(key: string, patch: Parameters<Integrations['update']>[1]) {
    const view = await this.integrations.update(key, patch);
    const set = Object.entries(patch.sync_frequencies ?? {});
    if (set.length) {
      const { provider } = await this.integrations.withProvider(key);
      const effective = Object.fromEntries(set.map(([name, f]) => [name, f ?? provider.syncs![name].frequency ?? '1h']));
      await this.syncs.setFrequencies(key, effective);
    }
    return view;
  }

  /** `requestId`, here and below: the API request this serves, for core's log lines (README, "Request ids"). */
  async deleteConnection(integrationKey: string, id: string, requestId?: string): Promise<void> {
    const { integration, provider } = await this.integrations.withProvider(integrationKey);
    const record = await this.connections.delete(integrationKey, id);
    if (!record) throw notFound('unknown_connection', `there is no connection "${id}" in integration "${integrationKey}"`);
    // After the connection's row: a page being stored now either finishes first (and is deleted
    // here) or finds the connection gone and stores nothing.
    await this.syncs.deleteConnection(integrationKey, id);
    // What was deleted is what is revoked: a refresh that wrote new tokens just before is covered.
    await this.auth.revokeRecord(provider, integration, record, requestId);
  }

  /**
   * Deletes an integration, its connections and everything hanging off them: the integration row
   * first, after which no connection can be made under it, then every connection of its key, then
   * their syncs and records.
   */
  async deleteIntegration(key: string, requestId?: string): Promise<void> {
    const integration = await this.integrations.delete(key);
    const provider = this.registry.get(integration.provider);
    for (const record of await this.connections.deleteAll(key)) {
      if (provider) await this.auth.revokeRecord(provider, integration, record, requestId);
    }
    await this.syncs.deleteIntegration(key);
  }

  /** getAuthToken (PRODUCT.md): the credential in the shape the app uses it. */
  async token(integrationKey: string, id: string, forceRefresh: boolean, requestId?: string): Promise<AuthTokenView> {
    const { credentials } = await this.auth.fresh(integrationKey, id, forceRefresh, requestId);
    let view = this.tokenViews.get(credentials);
    if (!view) this.tokenViews.set(credentials, (view = Object.freeze(tokenView(credentials, id))));
    return view;
  }

  /** triggerSync: starts each named sync now, in a worker thread; getSyncStatus follows it. */
  async triggerSyncs(integrationKey: string, id: string, names: string[]): Promise<{ success: true; syncs: { name: string; status: string }[] }> {
    return { success: true, syncs: await this.syncs.trigger(integrationKey, id, names) };
  }

  syncStatus(integrationKey: string, id: string, name: string): Promise<SyncStatusView> {
    return this.syncs.status(integrationKey, id, name);
  }

  /** GET /records. */
  records(query: RecordsQuery) {
    return this.syncs.records(query);
  }

  /** Waits for the syncs running in this process (tests, shutdown). */
  async idle(): Promise<void> {
    await this.syncs.idle();
  }

  /**
   * The proxy: any request to the provider's API, with the connection's credentials put where the
   * provider file says. Only requests that cannot have been applied (429, a refused connection) are
   * retried for POST and PATCH; the others follow the provider's retry rules.
   */
  async proxy(integrationKey: string, id: string, req: { method: string; path: string; query: Record<string, string>; headers: Record<string, string>; body?: unknown }, requestId?: string): Promise<StreamedResponse> {
    // The path without its query, which may carry a key.
    const op = { type: 'proxy' as const, provider_config_key: integrationKey, connection_id: id, name: `${req.method} /${req.path.replace(/^\/+/, '')}`, request_id: requestId };
    const answered = (res: StreamedResponse): Partial<Operation> => ({ detail: { status: res.status }, ...(res.status >= 400 ? { outcome: 'error', error: 'provider_status', message: `the provider answered HTTP ${res.status}` } : {}) });
    return this.logged(op, async () => {
      checkProxyPath(req.path);
      let fresh = await this.auth.fresh(integrationKey, id, false, requestId);
      op.name = fresh.scrub(op.name);
      try {
        const res = await this.proxyWith(fresh, req);
        if (!refreshesOn401(fresh, res.status)) return res;
        res.body.destroy();
        fresh = await this.auth.fresh(integrationKey, id, { stale: fresh.record.credentials }, requestId);
        return await this.proxyWith(fresh, req);
      } catch (e) {
        throw reworded(e, fresh.scrub);
      }
    }, answered);
  }

  private async proxyWith(fresh: Fresh, req: Parameters<Engine['proxy']>[2]): Promise<StreamedResponse> {
    const values = freshValues(fresh);
    const spec = { method: req.method as Method, path: Template.literal(`/${req.path.replace(/^\/+/, '')}`) };
    const built = apiRequest(fresh.provider, values, spec, { json: req.body, searchParams: req.query, headers: req.headers });
    // Whatever the path held, the request stays under the provider's base URL.
    const base = targetUrl(fresh.provider.api.base_url.renderUrl(values));
    const target = targetUrl(built.url);
    if (target.origin !== base.origin || !target.pathname.startsWith(base.pathname.replace(/\/?$/, '/'))) throw outsideBase();
    // The rules of an action's request: a POST or PATCH is sent again only when it was not applied.
    const { retry, options } = requestRetry(fresh.provider, spec, false);
    return callProviderStreamed(built, retry, options);
  }

  /** triggerAction: input checked against the action's schema, request built by JSONata. */
  async runAction(integrationKey: string, id: string, name: string, input: Record<string, unknown> = {}, requestId?: string): Promise<{ success: true; action_name: string; output: Record<string, unknown> }> {
    return this.logged({ type: 'action', provider_config_key: integrationKey, connection_id: id, name, request_id: requestId }, () => this.action(integrationKey, id, name, input, requestId));
  }

  private async action(integrationKey: string, id: string, name: string, input: Record<string, unknown>, requestId?: string): Promise<{ success: true; action_name: string; output: Record<string, unknown> }> {
    const { provider } = await this.integrations.withProvider(integrationKey);
    const action = actionOf(provider, name);
    checkActionInput(action, name, input);
    const fresh = await this.auth.fresh(integrationKey, id, false, requestId);
    const refresh = (stale: Fresh) => this.auth.fresh(integrationKey, id, { stale: stale.record.credentials }, requestId);
    return { success: true, action_name: name, output: await sendAction(fresh, name, action, input, refresh) };
  }
}

/**
 * The provider's token response as the app sees it: without the refresh token, wherever the
 * response put it. Refreshing is Terapi's job; an app that used a rotating refresh token once
 * would break the connection.
 */
/** getAuthToken's answer for these credentials (PRODUCT.md). */
function tokenView(credentials: Credentials, id: string): AuthTokenView {
  switch (credentials.type) {
    case 'oauth2':
    case 'oauth2_client_credentials':
      return { type: 'Bearer', access_token: credentials.access_token!, ...(credentials.expires_at ? { expires_at: credentials.expires_at } : {}), raw: withoutRefreshToken(credentials) };
    case 'oauth1':
      // The app signs its own calls with the token, its secret and the integration's consumer secret.
      return { type: 'OAuth1', access_token: credentials.token, raw: { oauth_token: credentials.token, oauth_token_secret: credentials.token_secret } };
    case 'jwt_bearer':
      return { type: 'Bearer', access_token: credentials.access_token ?? '', ...(credentials.expires_at ? { expires_at: credentials.expires_at } : {}) };
    case 'api_key':
    case 'basic':
      // A token exchange's token is what API calls carry: the app gets it, not the key or password.
      if (credentials.access_token) return { type: 'Bearer', access_token: credentials.access_token, ...(credentials.expires_at ? { expires_at: credentials.expires_at } : {}) };
      return credentials.type === 'api_key' ? { type: 'ApiKey', access_token: credentials.api_key } : { type: 'Basic', access_token: basicAuth(credentials.username, credentials.password) };
    case 'none':
      throw badRequest('no_credentials', `connection "${id}" uses a provider without credentials: there is no token`);
  }
}

function withoutRefreshToken(credentials: Extract<Credentials, { type: 'oauth2' | 'oauth2_client_credentials' }>): Record<string, unknown> {
  const refresh = credentials.type === 'oauth2' ? credentials.refresh_token : undefined;
  return JSON.parse(JSON.stringify(credentials.raw ?? {}, (key, value) => (key === 'refresh_token' || (refresh !== undefined && value === refresh) ? undefined : value)));
}

/**
 * The one result a connection keeps of those a post-connection request lists (post_connection.choose):
 * the first for which `where` holds, given the connection's configuration so far.
 */
async function chooseResult(provider: Provider, choose: NonNullable<PostConnection['choose']>, body: unknown, config: Record<string, string>): Promise<unknown> {
  const found = choose.items ? await evaluate(choose.items, body) : body;
  const items = found === undefined ? [] : Array.isArray(found) ? found : [found];
  for (const item of items) {
    if (!choose.where || (await evaluate(choose.where, item, { config })) === true) return item;
  }
  const given = Object.entries(config).map(([k, v]) => `${k}=${v}`).join(', ') || 'nothing';
  throw badRequest('no_matching_result', `none of the ${items.length} results ${provider.display_name} listed after connecting matches this connection's configuration (${given}): check connection_config`);
}

const outsideBase = () => badRequest('invalid_request', "the proxied path must be a path under the provider's base URL, without . or .. segments, backslashes or control characters");

/**
 * The proxied path, refused at the cause of every climb above the base path. It is decoded first
 * (a URL parser reads %2e%2e as ..); then a `.` or `..` segment, any backslash (a URL parser reads
 * \ as /, so ..\..\x climbed) and any control character (the parser drops tabs and newlines,
 * joining what was apart) are refused. An encoded slash inside a segment stays allowed: GitLab names
 * projects as group%2Fproject.
 */
function checkProxyPath(path: string): void {
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    throw outsideBase();
  }
  if (/[\\\u0000-\u001f\u007f]/.test(decoded) || /[\\\u0000-\u001f\u007f]/.test(path)) throw outsideBase();
  if (decoded.split('/').some((s) => s === '.' || s === '..') || /^[a-z][a-z0-9+.-]*:/i.test(path)) throw outsideBase();
}
