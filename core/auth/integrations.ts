import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Sealer } from './crypto.ts';
import { badRequest, conflict, notFound } from '../errors.ts';
import type { ProviderRegistry } from '../format/provider-registry.ts';
import type { Provider } from '../format/provider-types.ts';
import { Store } from '../store/store.ts';

/** An integration as stored: the client secret is sealed like every credential. */
export interface IntegrationRecord {
  unique_key: string;
  /**
   * Minted at creation: the key names whatever integration holds it now, this names one. Every
   * connection keeps the id of the integration it was made under, and its credentials are used only
   * with that one (absent on integrations made before it existed).
   */
  id?: string;
  provider: string;
  oauth_client_id?: string;
  oauth_client_secret?: string;
  oauth_scopes?: string[];
  /** Sync frequencies that override the provider file's, by sync name. */
  sync_frequencies?: Record<string, string>;
  created_at: string;
  updated_at: string;
}

/** What the API shows of an integration: never the client secret. */
export interface IntegrationView {
  unique_key: string;
  provider: string;
  display_name?: string;
  auth_mode?: string;
  oauth_client_id?: string;
  oauth_scopes?: string;
  sync_frequencies?: Record<string, string>;
  connection_count: number;
  created_at: string;
  updated_at: string;
}

export interface IntegrationInput {
  provider_config_key: string;
  provider: string;
  oauth_client_id?: string;
  oauth_client_secret?: string;
  oauth_scopes?: string;
  sync_frequencies?: Record<string, string | null>;
}

export const KEY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$/;
const OAUTH_MODES = new Set(['oauth2', 'oauth2_client_credentials', 'oauth1']);

export const integrationKey = (key: string) => Store.key('integration', key);
export const connectionsPrefix = (key: string) => `${Store.key('connection', key)}/`;

/**
 * How long an integration read from the store is trusted. Every request reads its integration, and
 * integrations change rarely (a PATCH): this process forgets its copy when it writes one, and
 * another server sharing PostgreSQL sees the change within this time.
 */
const CACHE_MS = 5_000;

export class Integrations {
  private readonly cache = new LRUCache<string, IntegrationRecord>({ max: 10_000, ttl: CACHE_MS });

  constructor(
    private readonly store: Store,
    private readonly registry: ProviderRegistry,
    private readonly sealer: Sealer,
  ) {}

  async create(input: IntegrationInput): Promise<IntegrationView> {
    checkKey(input.provider_config_key, 'provider_config_key');
    const provider = this.registry.get(input.provider);
    if (!provider) throw badRequest('unknown_provider', `there is no provider "${input.provider}" in the catalogue: GET /providers lists them`);
    const oauth = OAUTH_MODES.has(provider.auth.mode);
    // Where every connection brings its own OAuth client, the integration's is optional.
    const clientOptional = provider.auth.mode === 'oauth2_client_credentials' && provider.auth.connection_client === 'required';
    if (oauth && !clientOptional && (!input.oauth_client_id || !input.oauth_client_secret)) {
      throw badRequest('missing_oauth_client', `provider "${provider.name}" uses ${provider.auth.mode}: give oauth_client_id and oauth_client_secret from your OAuth app`);
    }
    if (clientOptional && !input.oauth_client_id !== !input.oauth_client_secret) {
      throw badRequest('missing_oauth_client', `give both oauth_client_id and oauth_client_secret, or neither (connections of provider "${provider.name}" bring their own)`);
    }
    if (!oauth && (input.oauth_client_id || input.oauth_client_secret || input.oauth_scopes)) {
      throw badRequest('oauth_not_used', `provider "${provider.name}" uses ${provider.auth.mode} auth: remove oauth_client_id, oauth_client_secret and oauth_scopes`);
    }
    const now = new Date().toISOString();
    const record: IntegrationRecord = {
      unique_key: input.provider_config_key,
      id: randomUUID(),
      provider: provider.name,
      oauth_client_id: input.oauth_client_id,
      oauth_client_secret: input.oauth_client_secret ? this.sealer.seal(input.oauth_client_secret) : undefined,
      oauth_scopes: parseScopes(input.oauth_scopes),
      created_at: now,
      updated_at: now,
    };
    if (!(await this.store.add(integrationKey(record.unique_key), record))) {
      throw conflict('integration_exists', `an integration "${input.provider_config_key}" already exists: choose another provider_config_key or PATCH it`);
    }
    this.cache.delete(record.unique_key);
    return this.view(record, 0);
  }

  /** Changes the OAuth client, scopes or sync frequencies in place; connections are untouched. */
  async update(key: string, patch: Omit<Partial<IntegrationInput>, 'provider' | 'provider_config_key'>): Promise<IntegrationView> {
    this.cache.delete(key);
    const current = await this.record(key);
    const record = { ...current }; // a copy: the cached one must not change before the write does
    const provider = this.registry.get(record.provider);
    const oauthPatch = patch.oauth_client_id !== undefined || patch.oauth_client_secret !== undefined || patch.oauth_scopes !== undefined;
    if (provider && oauthPatch && !OAUTH_MODES.has(provider.auth.mode)) {
      throw badRequest('oauth_not_used', `provider "${record.provider}" uses ${provider.auth.mode} auth: there is no OAuth client to change`);
    }
    if (patch.sync_frequencies) {
      const frequencies = { ...record.sync_frequencies };
      for (const [name, frequency] of Object.entries(patch.sync_frequencies)) {
        if (!provider || !Object.hasOwn(provider.syncs ?? {}, name)) throw notFound('unknown_sync', `provider "${record.provider}" has no sync "${name}"`);
        if (frequency === null) delete frequencies[name];
        else frequencies[name] = frequency;
      }
      record.sync_frequencies = frequencies;
    }
    if (patch.oauth_client_id !== undefined) record.oauth_client_id = patch.oauth_client_id;
    if (patch.oauth_client_secret !== undefined) record.oauth_client_secret = this.sealer.seal(patch.oauth_client_secret);
    if (patch.oauth_scopes !== undefined) record.oauth_scopes = parseScopes(patch.oauth_scopes);
    record.updated_at = new Date().toISOString();
    this.cache.delete(key);
    // Only over the integration it read: a PATCH that races a DELETE must not bring it back.
    if (!(await this.store.replace(integrationKey(key), record, { field: 'id', equals: current.id ?? '' }))) {
      throw notFound('unknown_integration', `integration "${key}" was deleted while it was being updated`);
    }
    return this.view(record, await this.store.count(connectionsPrefix(key)));
  }

  /** Forgets this process's copy: the next read goes to the store (another server may have changed it). */
  forget(key: string): void {
    this.cache.delete(key);
  }

  async record(key: string): Promise<IntegrationRecord> {
    const cached = this.cache.get(key);
    if (cached) return cached;
    const record = await this.store.get<IntegrationRecord>(integrationKey(key));
    if (!record) throw notFound('unknown_integration', `there is no integration "${key}": POST /integration creates one`);
    this.cache.set(key, record);
    return record;
  }

  /** The integration and its provider, which must still be in the catalogue. */
  async withProvider(key: string): Promise<{ integration: IntegrationRecord; provider: Provider }> {
    const integration = await this.record(key);
    const provider = this.registry.get(integration.provider);
    if (!provider) throw notFound('unknown_provider', `integration "${key}" uses provider "${integration.provider}", which is no longer in the catalogue`);
    return { integration, provider };
  }

  clientSecret(record: IntegrationRecord): string | undefined {
    return record.oauth_client_secret ? this.sealer.open<string>(record.oauth_client_secret) : undefined;
  }

  async get(key: string): Promise<IntegrationView> {
    const record = await this.record(key);
    return this.view(record, await this.store.count(connectionsPrefix(key)));
  }

  async list(): Promise<IntegrationView[]> {
    const records = await this.store.list<IntegrationRecord>(`${Store.key('integration')}/`);
    return Promise.all(records.map(async (r) => this.view(r, await this.store.count(connectionsPrefix(r.unique_key)))));
  }

  /**
   * Deletes the integration row and answers it. From the moment it is gone no connection can be made
   * under it (Connections.create needs the row): the caller then deletes its connections.
   */
  async delete(key: string): Promise<IntegrationRecord> {
    this.cache.delete(key);
    const record = await this.store.take<IntegrationRecord>(integrationKey(key));
    if (!record) throw notFound('unknown_integration', `there is no integration "${key}": POST /integration creates one`);
    return record;
  }

  private view(r: IntegrationRecord, connectionCount: number): IntegrationView {
    const provider = this.registry.get(r.provider);
    return {
      unique_key: r.unique_key,
      provider: r.provider,
      display_name: provider?.display_name,
      auth_mode: provider?.auth.mode,
      oauth_client_id: r.oauth_client_id,
      oauth_scopes: r.oauth_scopes?.join(','),
      ...(r.sync_frequencies && Object.keys(r.sync_frequencies).length ? { sync_frequencies: r.sync_frequencies } : {}),
      connection_count: connectionCount,
      created_at: r.created_at,
      updated_at: r.updated_at,
    };
  }
}

export function checkKey(value: string, field: string) {
  if (!KEY_PATTERN.test(value)) {
    throw badRequest('invalid_request', `${field} must be 1 to 100 letters, digits or _ . : @ -, starting with a letter or digit; got ${JSON.stringify(value)}`);
  }
}

function parseScopes(scopes: string | undefined): string[] | undefined {
  if (scopes === undefined) return undefined;
  return scopes.split(',').map((s) => s.trim()).filter(Boolean);
}
