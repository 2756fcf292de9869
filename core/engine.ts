import type { ValidateFunction } from 'ajv';
import { AuthEngine, freshValues, type Fresh } from './auth/tokens.ts';
import { callProvider, callProviderStreamed, limits, providerFailed, targetUrl, type StreamedResponse } from './http/send.ts';
import { ConnectFlow, type FinishConnection } from './auth/connect.ts';
import { checkConnectionConfig, Connections, parseCredentials, type ConnectionView, type Credentials } from './auth/connections.ts';
import type { Config } from './config.ts';
import { Sealer } from './auth/crypto.ts';
import { badRequest, notFound, reworded } from './errors.ts';
import { Integrations } from './auth/integrations.ts';
import { LocalLock, PostgresLock, type Lock } from './store/lock.ts';
import type { Logger } from './logger.ts';
import { apiRequest, basicAuth, templateValues } from './http/provider-request.ts';
import { ProviderRegistry } from './format/provider-registry.ts';
import { compileInputSchema } from './format/provider-schema.ts';
import type { Action, Method, Provider, Sync } from './format/provider-types.ts';
import { Template } from './format/template.ts';
import { runSync } from './sync/runner.ts';
import { Store } from './store/store.ts';
import { own } from './own.ts';
import { checkJson, MAX_METADATA_BYTES } from './json-limits.ts';
import { evaluate } from './format/evaluate.ts';

export interface SyncState {
  sync_name: string;
  connection_id: string;
  status: 'running' | 'success' | 'error' | 'paused';
  last_sync_date?: string;
  next_sync_date?: string;
  records_count: number;
  error?: string;
  checkpoint?: unknown;
}

const frequencyMs = (f = '1h') => Number(f.slice(0, -1)) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[f.slice(-1) as 'm' | 'h' | 'd'];
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
  private readonly inputValidators = new WeakMap<Action, ValidateFunction>();
  private readonly running = new Map<string, Promise<void>>();

  private constructor(
    readonly config: Config,
    readonly registry: ProviderRegistry,
    readonly store: Store,
    private readonly lock: Lock,
    readonly log: Logger,
  ) {
    const sealer = new Sealer(config.encryptionKeys);
    this.integrations = new Integrations(store, registry, sealer);
    this.connections = new Connections(store, sealer);
    this.auth = new AuthEngine(this.integrations, this.connections, lock, log);
    this.connect = new ConnectFlow(store, this.integrations, this.auth, this.finishConnection, config, sealer, log);
  }

  /** Loads the providers (throws ProviderLoadError listing every error) and opens the store. */
  static async start(config: Config, log: Logger): Promise<Engine> {
    const registry = new ProviderRegistry(config.providersDirs);
    registry.load();
    registry.watch();
    registry.on('reloaded', (count) => log.info({ providers: count }, 'provider files reloaded'));
    registry.on('rejected', (errors) => log.error({ errors }, 'provider change rejected: the previous version stays live'));
    limits.responseBytes = config.maxResponseBytes;
    const store = await Store.open(config);
    const lock = config.databaseUrl ? new PostgresLock(config.databaseUrl) : new LocalLock();
    return new Engine(config, registry, store, lock, log);
  }

  async stop(): Promise<void> {
    await this.idle();
    this.registry.close();
    await this.lock.close();
    await this.store.disconnect();
  }

  /** createConnection: credentials the app already holds. */
  async createConnection(input: { connection_id: string; provider_config_key: string; credentials?: Record<string, unknown>; metadata?: Record<string, unknown>; connection_config?: Record<string, unknown> }): Promise<ConnectionView> {
    checkJson(input.metadata, 'metadata', { maxBytes: MAX_METADATA_BYTES, storable: true });
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
      const post = provider.post_connection;
      try {
        const values = templateValues(config, credentials, integration.oauth_client_id);
        const res = await callProvider(apiRequest(provider, values, post.request), provider.api.retry);
        if (res.status >= 400) throw providerFailed(`${provider.display_name} answered HTTP ${res.status} to the post-connection request`);
        for (const [name, expr] of Object.entries(post.config ?? {})) {
          const v = await evaluate(expr, res.body);
          if (typeof v === 'string') config[name] = v;
        }
        for (const [name, expr] of Object.entries(post.metadata ?? {})) metadata[name] = await evaluate(expr, res.body);
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
    try {
      if (!input.replace) return this.connections.view(await this.connections.create(integration, record, credentials));
      const { record: written, replaced } = await this.connections.put(integration, record, credentials);
      // Connecting again replaces the grant: the old one must not stay alive at the provider.
      if (replaced) await this.auth.revokeReplaced(provider, integration, replaced, credentials);
      return this.connections.view(written);
    } catch (e) {
      // This process's copy of the integration may be one another server has deleted since.
      if ((e as { code?: string }).code === 'unknown_integration') this.integrations.forget(input.integration);
      throw e;
    }
  };

  async deleteConnection(integrationKey: string, id: string): Promise<void> {
    const { integration, provider } = await this.integrations.withProvider(integrationKey);
    const record = await this.connections.delete(integrationKey, id);
    if (!record) throw notFound('unknown_connection', `there is no connection "${id}" in integration "${integrationKey}"`);
    // What was deleted is what is revoked: a refresh that wrote new tokens just before is covered.
    await this.auth.revokeRecord(provider, integration, record);
  }

  /**
   * Deletes an integration, its connections and everything hanging off them: the integration row
   * first, after which no connection can be made under it, then every connection of its key.
   */
  async deleteIntegration(key: string): Promise<void> {
    const integration = await this.integrations.delete(key);
    const provider = this.registry.get(integration.provider);
    for (const record of await this.connections.deleteAll(key)) {
      if (provider) await this.auth.revokeRecord(provider, integration, record);
    }
  }

  /** getAuthToken (PRODUCT.md): the credential in the shape the app uses it. */
  async token(integrationKey: string, id: string, forceRefresh: boolean): Promise<AuthTokenView> {
    const { credentials } = await this.auth.fresh(integrationKey, id, forceRefresh);
    switch (credentials.type) {
      case 'oauth2':
      case 'oauth2_client_credentials':
        return { type: 'Bearer', access_token: credentials.access_token!, ...(credentials.expires_at ? { expires_at: credentials.expires_at } : {}), raw: withoutRefreshToken(credentials) };
      case 'api_key':
        return { type: 'ApiKey', access_token: credentials.api_key };
      case 'basic':
        return { type: 'Basic', access_token: basicAuth(credentials.username, credentials.password) };
      case 'none':
        throw badRequest('no_credentials', `connection "${id}" uses a provider without credentials: there is no token`);
    }
  }

  /** triggerSync: starts each named sync now, in the background; getSyncStatus follows it. */
  async triggerSyncs(integrationKey: string, id: string, names: string[]): Promise<{ success: true; syncs: { name: string; status: string }[] }> {
    const { provider } = await this.integrations.withProvider(integrationKey);
    if (!names.length) throw badRequest('invalid_request', 'body.syncs must name at least one sync');
    for (const name of names) this.syncOf(provider, name);
    const fresh = await this.auth.fresh(integrationKey, id);
    const started = [];
    for (const name of new Set(names)) {
      const key = Store.key('sync', integrationKey, id, name);
      if (!this.running.has(key)) {
        const sync = this.syncOf(provider, name);
        const previous = await this.store.get<SyncState>(key);
        const state: SyncState = { ...previous, sync_name: name, connection_id: id, status: 'running', records_count: previous?.records_count ?? 0 };
        await this.store.set(key, state);
        const run = runSync(fresh, sync, previous?.checkpoint)
          .then(async (result) => {
            const now = new Date();
            await this.store.set(key, { ...state, status: 'success', last_sync_date: now.toISOString(), next_sync_date: new Date(now.getTime() + frequencyMs(sync.frequency)).toISOString(), records_count: result.records.length, checkpoint: result.checkpoint, error: undefined });
          })
          .catch(async (e) => {
            this.log.warn({ integration: integrationKey, connection: id, sync: name, err: (e as Error).message }, 'sync failed');
            await this.store.set(key, { ...state, status: 'error', last_sync_date: new Date().toISOString(), error: (e as Error).message }).catch(() => {});
          })
          .finally(() => this.running.delete(key));
        this.running.set(key, run);
      }
      started.push({ name, status: 'running' });
    }
    return { success: true, syncs: started };
  }

  async syncStatus(integrationKey: string, id: string, name: string): Promise<Omit<SyncState, 'checkpoint'>> {
    const { provider } = await this.integrations.withProvider(integrationKey);
    this.syncOf(provider, name);
    await this.connections.get(integrationKey, id);
    const state = await this.store.get<SyncState>(Store.key('sync', integrationKey, id, name));
    if (!state) throw notFound('sync_not_run', `sync "${name}" has not run yet for connection "${id}": POST /sync/trigger starts it`);
    const { checkpoint: _checkpoint, ...view } = state;
    return view;
  }

  /** Waits for the syncs running in this process (tests, shutdown). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.running.values()]);
  }

  private syncOf(provider: Provider, name: string): Sync {
    const sync = own(provider.syncs, name);
    if (!sync) throw notFound('unknown_sync', `provider "${provider.name}" has no sync "${name}"${provider.syncs ? `; its syncs are ${Object.keys(provider.syncs).join(', ')}` : ''}`);
    return sync;
  }

  /**
   * The proxy: any request to the provider's API, with the connection's credentials put where the
   * provider file says. Only requests that cannot have been applied (429) are retried for POST and
   * PATCH; the others follow the provider's retry rules.
   */
  async proxy(integrationKey: string, id: string, req: { method: string; path: string; query: Record<string, string>; headers: Record<string, string>; body?: unknown }): Promise<StreamedResponse> {
    checkProxyPath(req.path);
    const fresh = await this.auth.fresh(integrationKey, id);
    try {
      return await this.proxyWith(fresh, req);
    } catch (e) {
      throw reworded(e, fresh.scrub);
    }
  }

  private async proxyWith(fresh: Fresh, req: Parameters<Engine['proxy']>[2]): Promise<StreamedResponse> {
    const values = freshValues(fresh);
    const spec = { method: req.method as Method, path: Template.literal(`/${req.path.replace(/^\/+/, '')}`) };
    const built = apiRequest(fresh.provider, values, spec, { json: req.body, searchParams: req.query, headers: req.headers });
    // Whatever the path held, the request stays under the provider's base URL.
    const base = targetUrl(fresh.provider.api.base_url.renderUrl(values));
    const target = targetUrl(built.url);
    if (target.origin !== base.origin || !target.pathname.startsWith(base.pathname.replace(/\/?$/, '/'))) throw outsideBase();
    const retry = fresh.provider.api.retry ?? {};
    const safe = !['POST', 'PATCH'].includes(req.method);
    return callProviderStreamed(built, safe ? retry : { ...retry, statuses: (retry.statuses ?? [429]).filter((s) => s === 429) });
  }

  /** triggerAction: input checked against the action's schema, request built by JSONata. */
  async runAction(integrationKey: string, id: string, name: string, input: Record<string, unknown> = {}): Promise<{ success: true; action_name: string; output: Record<string, unknown> }> {
    const { provider } = await this.integrations.withProvider(integrationKey);
    const action = own(provider.actions, name);
    if (!action) throw notFound('unknown_action', `provider "${provider.name}" has no action "${name}"${provider.actions ? `; its actions are ${Object.keys(provider.actions).join(', ')}` : ''}`);
    let validate = this.inputValidators.get(action);
    if (!validate) this.inputValidators.set(action, (validate = compileInputSchema(action.input)));
    if (!validate(input)) {
      const problems = (validate.errors ?? []).map((e) => `input${e.instancePath.replace(/\//g, '.')} ${e.message}`).join('; ');
      throw badRequest('invalid_input', `the input of action "${name}" does not match its schema: ${problems}`);
    }
    const fresh = await this.auth.fresh(integrationKey, id);
    try {
      const values = { ...freshValues(fresh), input };
      const json = action.request.body ? await evaluate(action.request.body, input, { input, config: fresh.record.connection_config }) : undefined;
      const res = await callProvider(apiRequest(provider, values, action.request, { json }), provider.api.retry);
      if (res.status >= 400) {
        throw providerFailed(`${provider.display_name} answered HTTP ${res.status} to action "${name}": ${fresh.scrub(res.text.slice(0, 10_000)).slice(0, 300)}`);
      }
      const output = action.output ? await evaluate(action.output, res.body, { input }) : res.body;
      return { success: true, action_name: name, output: (output && typeof output === 'object' && !Array.isArray(output) ? output : { result: output ?? null }) as Record<string, unknown> };
    } catch (e) {
      // Provider text in any error (a body, an expression's message) may repeat the credentials.
      throw reworded(e, fresh.scrub);
    }
  }
}

/**
 * The provider's token response as the app sees it: without the refresh token, wherever the
 * response put it. Refreshing is Terapi's job; an app that used a rotating refresh token once
 * would break the connection.
 */
function withoutRefreshToken(credentials: Extract<Credentials, { type: 'oauth2' | 'oauth2_client_credentials' }>): Record<string, unknown> {
  const refresh = credentials.type === 'oauth2' ? credentials.refresh_token : undefined;
  return JSON.parse(JSON.stringify(credentials.raw ?? {}, (key, value) => (key === 'refresh_token' || (refresh !== undefined && value === refresh) ? undefined : value)));
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
