import type { ValidateFunction } from 'ajv';
import { AuthEngine, freshValues } from './auth/tokens.ts';
import { callProvider, providerFailed } from './http/send.ts';
import { ConnectFlow, type FinishConnection } from './auth/connect.ts';
import { checkConnectionConfig, Connections, parseCredentials, type ConnectionRecord, type ConnectionView, type Credentials } from './auth/connections.ts';
import { ConfigError, type Config } from './config.ts';
import { Sealer } from './auth/crypto.ts';
import { badRequest, notFound } from './errors.ts';
import { Integrations, type IntegrationRecord } from './auth/integrations.ts';
import { LocalLock, PostgresLock, type Lock } from './store/lock.ts';
import type { Logger } from './logger.ts';
import { apiRequest, basicAuth, templateValues } from './http/provider-request.ts';
import { ProviderRegistry } from './format/provider-registry.ts';
import { compileInputSchema } from './format/provider-schema.ts';
import type { Action, Method, Provider, Sync } from './format/provider-types.ts';
import { Template } from './format/template.ts';
import type { HttpResponse } from './http/send.ts';
import { acquirePools, releasePools, type WorkerPools } from './jobs/pools.ts';
import { PgBossQueue, SqliteQueue, type JobQueue } from './jobs/queue.ts';
import { Webhooks } from './jobs/webhooks.ts';
import { openSql, type Sql } from './store/sql.ts';
import { SyncStore } from './sync/sync-store.ts';
import { Syncs, type RecordsQuery, type SyncStatusView } from './sync/syncs.ts';
import { Store } from './store/store.ts';

export interface AuthTokenView {
  type: 'Bearer' | 'ApiKey' | 'Basic';
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
  private readonly inputValidators = new WeakMap<Action, ValidateFunction>();

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
    this.connect = new ConnectFlow(store, this.integrations, this.auth, this.finishConnection, config, log);
    this.auth.on('needs_reauth', (e) => void this.webhooks.send({ type: 'connection.needs_reauth', ...e }).catch((err) => log.warn({ err: (err as Error).message }, 'webhook not queued')));
    this.webhooks = new Webhooks(queue, { url: config.webhookUrl, secret: config.secretKey, retrySeconds: config.webhookRetryMs / 1000 }, log);
    this.syncs = new Syncs(new SyncStore(sql), pools, queue, this.webhooks, this.integrations, this.connections, this.auth, { databaseUrl: config.databaseUrl, dataDir: config.dataDir }, {
      leaseMs: config.syncLeaseMs,
      waitBudgetMs: config.syncWaitBudgetMs,
      concurrency: config.syncConcurrency,
      tickMs: 1000,
    }, log);
  }

  /**
   * Loads the providers (throws ProviderLoadError listing every error), opens the store and checks
   * that the encryption keys open what it holds (throws ConfigError): a start that cannot work stops here.
   */
  static async start(config: Config, log: Logger): Promise<Engine> {
    const registry = new ProviderRegistry(config.providersDirs);
    registry.load();
    const store = await Store.open(config);
    const sql = openSql(config);
    await new SyncStore(sql).migrate();
    const lock = config.databaseUrl ? new PostgresLock(config.databaseUrl) : new LocalLock();
    const queue = config.databaseUrl ? await PgBossQueue.open(config.databaseUrl, log) : await SqliteQueue.open(sql, log);
    const pools = acquirePools();
    // Not awaited: an evaluation's time limit counts from when its thread starts it anyway.
    void pools.warm().catch((e) => log.warn({ err: e }, 'the evaluation thread did not start'));
    const engine = new Engine(config, registry, store, sql, pools, queue, lock, log);
    try {
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

  /** Stops taking runs and webhooks; runs still going after the grace period are handed back to be resumed. */
  async stop(): Promise<void> {
    // Runs get the stop's bound less a margin to hand back the rest, so that the whole stop fits in it.
    await this.syncs.stop(Math.max(0, this.config.shutdownTimeoutMs - 2000));
    this.registry.close();
    await this.queue.close();
    await releasePools(this.pools);
    await this.lock.close();
    await this.sql.close();
    await this.store.disconnect();
  }

  /** createConnection: credentials the app already holds. */
  async createConnection(input: { connection_id: string; provider_config_key: string; credentials?: Record<string, unknown>; metadata?: Record<string, unknown>; connection_config?: Record<string, unknown> }): Promise<ConnectionView> {
    const { provider } = await this.integrations.withProvider(input.provider_config_key);
    const credentials = parseCredentials(provider, input.credentials);
    const config = checkConnectionConfig(provider, input.connection_config ?? {});
    return this.finishConnection({ integration: input.provider_config_key, connection_id: input.connection_id, credentials, connection_config: config, metadata: input.metadata ?? {}, replace: false });
  }

  /** Stores a new connection, after the provider's post-connection request where it has one. */
  private finishConnection = async (input: Parameters<FinishConnection>[0]): Promise<ConnectionView> => {
    const { integration, provider } = await this.integrations.withProvider(input.integration);
    // Checked now to fail before any request to the provider; the write itself is atomic too.
    if (!input.replace) await this.connections.assertNew(input.integration, input.connection_id);
    // A client-credentials connection gets its token on first use (AuthEngine.fresh), not here.
    const credentials: Credentials = input.credentials;
    const config = { ...input.connection_config };
    const metadata = { ...input.metadata };
    if (provider.post_connection) {
      const values = templateValues(config, credentials, integration.oauth_client_id);
      const res = await callProvider(apiRequest(provider, values, provider.post_connection.request), provider.api.retry);
      if (res.status >= 400) throw providerFailed(`${provider.display_name} answered HTTP ${res.status} to the post-connection request`);
      for (const [name, expr] of Object.entries(provider.post_connection.config ?? {})) {
        const v = await expr.evaluate(res.body);
        if (typeof v === 'string') config[name] = v;
      }
      for (const [name, expr] of Object.entries(provider.post_connection.metadata ?? {})) metadata[name] = await expr.evaluate(res.body);
      checkConnectionConfig(provider, config);
    }
    const previous = input.replace ? await this.connections.get(input.integration, input.connection_id).catch(() => undefined) : undefined;
    const now = new Date().toISOString();
    const record = await this.connections.save(
      { id: input.connection_id, provider_config_key: input.integration, provider: provider.name, metadata, connection_config: config, created_at: previous?.created_at ?? now, updated_at: now },
      credentials,
      !input.replace,
    );
    if (!previous) {
      await this.syncs.scheduleConnection(input.integration, input.connection_id);
      // The connection is made: a webhook that cannot be queued is logged, not the request's failure.
      await this.webhooks.send({ type: 'connection.created', provider_config_key: input.integration, connection_id: input.connection_id }).catch((e) => this.log.warn({ err: e }, 'webhook connection.created not queued'));
    }
    return this.connections.view(record);
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
    const record = await this.connections.get(integrationKey, id);
    await this.connections.delete(record);
    // After the connection's row: a page being stored now either finishes first (and is deleted
    // here) or finds the connection gone and stores nothing.
    await this.syncs.deleteConnection(integrationKey, id);
    await this.auth.revoke(provider, integration, record, requestId);
  }

  /** Deletes an integration, its connections and everything hanging off them. */
  async deleteIntegration(key: string, requestId?: string): Promise<void> {
    const integration = await this.integrations.record(key);
    const provider = this.registry.get(integration.provider);
    for (const record of await this.connections.list(key)) {
      await this.connections.delete(record);
      if (provider) await this.auth.revoke(provider, integration, record, requestId);
    }
    await this.syncs.deleteIntegration(key);
    await this.integrations.delete(key);
  }

  /** getAuthToken (PRODUCT.md): the credential in the shape the app uses it. */
  async token(integrationKey: string, id: string, forceRefresh: boolean, requestId?: string): Promise<AuthTokenView> {
    const { credentials } = await this.auth.fresh(integrationKey, id, forceRefresh, requestId);
    switch (credentials.type) {
      case 'oauth2':
      case 'oauth2_client_credentials':
        return { type: 'Bearer', access_token: credentials.access_token!, ...(credentials.expires_at ? { expires_at: credentials.expires_at } : {}), raw: credentials.raw ?? {} };
      case 'api_key':
        return { type: 'ApiKey', access_token: credentials.api_key };
      case 'basic':
        return { type: 'Basic', access_token: basicAuth(credentials.username, credentials.password) };
      case 'none':
        throw badRequest('no_credentials', `connection "${id}" uses a provider without credentials: there is no token`);
    }
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
   * provider file says. Only requests that cannot have been applied (429) are retried for POST and
   * PATCH; the others follow the provider's retry rules.
   */
  async proxy(integrationKey: string, id: string, req: { method: string; path: string; query: Record<string, string>; headers: Record<string, string>; body?: unknown }, requestId?: string): Promise<HttpResponse> {
    // Decoded first: a URL parser reads %2e%2e as .. too.
    const segments = req.path.split('/').map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return '..';
      }
    });
    if (segments.some((s) => s === '..' || s === '.') || /^[a-z][a-z0-9+.-]*:/i.test(req.path)) {
      throw badRequest('invalid_request', 'the proxied path must be a path under the provider\'s base URL, without . or .. segments');
    }
    const fresh = await this.auth.fresh(integrationKey, id, false, requestId);
    const values = freshValues(fresh);
    const spec = { method: req.method as Method, path: Template.literal(`/${req.path.replace(/^\/+/, '')}`) };
    const built = apiRequest(fresh.provider, values, spec, { json: req.body, searchParams: req.query, headers: req.headers });
    const retry = fresh.provider.api.retry ?? {};
    const safe = !['POST', 'PATCH'].includes(req.method);
    return callProvider(built, safe ? retry : { ...retry, statuses: (retry.statuses ?? [429]).filter((s) => s === 429) });
  }

  /** triggerAction: input checked against the action's schema, request built by JSONata. */
  async runAction(integrationKey: string, id: string, name: string, input: Record<string, unknown> = {}, requestId?: string): Promise<{ success: true; action_name: string; output: Record<string, unknown> }> {
    const { provider } = await this.integrations.withProvider(integrationKey);
    const action = Object.hasOwn(provider.actions ?? {}, name) ? provider.actions![name] : undefined;
    if (!action) throw notFound('unknown_action', `provider "${provider.name}" has no action "${name}"${provider.actions ? `; its actions are ${Object.keys(provider.actions).join(', ')}` : ''}`);
    let validate = this.inputValidators.get(action);
    if (!validate) this.inputValidators.set(action, (validate = compileInputSchema(action.input)));
    if (!validate(input)) {
      const problems = (validate.errors ?? []).map((e) => `input${e.instancePath.replace(/\//g, '.')} ${e.message}`).join('; ');
      throw badRequest('invalid_input', `the input of action "${name}" does not match its schema: ${problems}`);
    }
    const fresh = await this.auth.fresh(integrationKey, id, false, requestId);
    const values = { ...freshValues(fresh), input };
    const json = action.request.body ? await action.request.body.evaluate(input, { input, config: fresh.record.connection_config }) : undefined;
    const res = await callProvider(apiRequest(provider, values, action.request, { json }), provider.api.retry);
    if (res.status >= 400) {
      throw providerFailed(`${provider.display_name} answered HTTP ${res.status} to action "${name}": ${res.text.slice(0, 300)}`);
    }
    const output = action.output ? await action.output.evaluate(res.body, { input }) : res.body;
    return { success: true, action_name: name, output: (output && typeof output === 'object' && !Array.isArray(output) ? output : { result: output ?? null }) as Record<string, unknown> };
  }
}
