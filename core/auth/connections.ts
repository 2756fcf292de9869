import type { Sealer } from './crypto.ts';
import { badRequest, conflict, notFound } from '../errors.ts';
import { checkKey } from './integrations.ts';
import type { AuthMode, Provider } from '../format/provider-types.ts';
import { Store } from '../store/store.ts';

/** Credentials as sealed at rest, by auth mode (PRODUCT.md, "Credentials in createConnection"). */
export type Credentials =
  | { type: 'oauth2'; access_token: string; refresh_token?: string; expires_at?: string; raw?: Record<string, unknown> }
  | { type: 'oauth2_client_credentials'; access_token?: string; expires_at?: string; raw?: Record<string, unknown> }
  | { type: 'api_key'; api_key: string }
  | { type: 'basic'; username: string; password: string }
  | { type: 'none' };

export interface ConnectionRecord {
  id: string;
  provider_config_key: string;
  provider: string;
  metadata: Record<string, unknown>;
  connection_config: Record<string, string>;
  /** Sealed Credentials. */
  credentials: string;
  credentials_type: AuthMode;
  expires_at?: string;
  needs_reauth?: boolean;
  reauth_reason?: string;
  created_at: string;
  updated_at: string;
}

export interface ConnectionView {
  id: string;
  provider_config_key: string;
  provider: string;
  metadata: Record<string, unknown>;
  connection_config: Record<string, string>;
  credentials: { type: AuthMode; expires_at?: string };
  needs_reauth: boolean;
  reauth_reason?: string;
  created_at: string;
  updated_at: string;
}

const exists = (integration: string, id: string) =>
  conflict('connection_exists', `connection "${id}" already exists in integration "${integration}": delete it first, or use another connection_id`);

export const connectionKey = (integration: string, id: string) => Store.key('connection', integration, id);

export class Connections {
  constructor(
    private readonly store: Store,
    private readonly sealer: Sealer,
  ) {}

  async get(integration: string, id: string): Promise<ConnectionRecord> {
    const record = await this.store.get<ConnectionRecord>(connectionKey(integration, id));
    if (!record) throw notFound('unknown_connection', `there is no connection "${id}" in integration "${integration}"`);
    return record;
  }

  async list(integration?: string): Promise<ConnectionRecord[]> {
    const prefix = integration === undefined ? `${Store.key('connection')}/` : `${Store.key('connection', integration)}/`;
    return this.store.list<ConnectionRecord>(prefix);
  }

  async assertNew(integration: string, id: string): Promise<void> {
    checkKey(id, 'connection_id');
    if (await this.store.get(connectionKey(integration, id))) throw exists(integration, id);
  }

  /**
   * Writes a connection; its credentials are sealed here and nowhere else. With `onlyIfNew`, the
   * write happens only if no connection has that id (atomically), else it is a 409.
   */
  async save(record: Omit<ConnectionRecord, 'credentials' | 'credentials_type' | 'expires_at'>, credentials: Credentials, onlyIfNew = false): Promise<ConnectionRecord> {
    const full: ConnectionRecord = {
      ...record,
      credentials: this.sealer.seal(credentials),
      credentials_type: credentials.type,
      expires_at: 'expires_at' in credentials ? credentials.expires_at : undefined,
      updated_at: new Date().toISOString(),
    };
    const key = connectionKey(record.provider_config_key, record.id);
    if (!onlyIfNew) await this.store.set(key, full);
    else if (!(await this.store.add(key, full))) throw exists(record.provider_config_key, record.id);
    return full;
  }

  async markNeedsReauth(record: ConnectionRecord, reason: string): Promise<void> {
    await this.store.set(connectionKey(record.provider_config_key, record.id), { ...record, needs_reauth: true, reauth_reason: reason, updated_at: new Date().toISOString() });
  }

  credentials(record: ConnectionRecord): Credentials {
    return this.sealer.open<Credentials>(record.credentials);
  }

  async delete(record: ConnectionRecord): Promise<void> {
    await this.store.delete(connectionKey(record.provider_config_key, record.id));
    // Sync state and records hang off the connection's key.
    await this.store.deletePrefix(`${Store.key('sync', record.provider_config_key, record.id)}/`);
  }

  view(r: ConnectionRecord): ConnectionView {
    return {
      id: r.id,
      provider_config_key: r.provider_config_key,
      provider: r.provider,
      metadata: r.metadata,
      connection_config: r.connection_config,
      credentials: r.expires_at ? { type: r.credentials_type, expires_at: r.expires_at } : { type: r.credentials_type },
      needs_reauth: r.needs_reauth === true,
      ...(r.reauth_reason ? { reauth_reason: r.reauth_reason } : {}),
      created_at: r.created_at,
      updated_at: r.updated_at,
    };
  }
}

/**
 * Checks connection configuration against the fields the provider declares. Fields filled later
 * (from the token response or the post-connection request) may be absent now.
 */
export function checkConnectionConfig(provider: Provider, config: Record<string, unknown> = {}, stage: 'before_auth' | 'complete' = 'complete'): Record<string, string> {
  const fields = provider.connection_config ?? {};
  const filledLater = new Set([...Object.keys(provider.post_connection?.config ?? {}), ...Object.entries(fields).filter(([, f]) => f.from_token_response).map(([n]) => n)]);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(config)) {
    const field = fields[name];
    if (!field) {
      const known = Object.keys(fields);
      throw badRequest('invalid_connection_config', `provider "${provider.name}" has no connection_config field "${name}"${known.length ? `; its fields are ${known.join(', ')}` : ''}`);
    }
    if (typeof value !== 'string' || !new RegExp(`^(?:${field.pattern})$`).test(value)) {
      throw badRequest('invalid_connection_config', `connection_config.${name} must match ${field.pattern}${field.example ? ` (e.g. ${field.example})` : ''}; got ${JSON.stringify(value)}`);
    }
    out[name] = value;
  }
  for (const [name, field] of Object.entries(fields)) {
    if (out[name] === undefined && !field.optional && !(stage === 'before_auth' || filledLater.has(name))) {
      throw badRequest('invalid_connection_config', `provider "${provider.name}" needs connection_config.${name}${field.description ? ` (${field.description})` : ''}`);
    }
  }
  return out;
}

/** Checks that given credentials have the shape the integration's auth mode needs. */
export function parseCredentials(provider: Provider, input: Record<string, unknown> | undefined): Credentials {
  const mode = provider.auth.mode;
  const str = (v: unknown) => typeof v === 'string' && v.length > 0;
  const mismatch = (shape: string) =>
    badRequest('invalid_credentials', `provider "${provider.name}" uses ${mode} auth: credentials must be ${shape}`);
  switch (mode) {
    case 'oauth2': {
      if (!input || input.type !== 'oauth2' || !str(input.access_token)) throw mismatch('{"type": "oauth2", "access_token", "refresh_token"?, "expires_at"?}');
      if (input.refresh_token !== undefined && !str(input.refresh_token)) throw mismatch('{"type": "oauth2", ...} with refresh_token a string');
      let expires_at: string | undefined;
      if (input.expires_at !== undefined) {
        const t = typeof input.expires_at === 'string' ? Date.parse(input.expires_at) : NaN;
        if (Number.isNaN(t)) throw mismatch('{"type": "oauth2", ...} with expires_at an ISO 8601 date-time');
        expires_at = new Date(t).toISOString();
      }
      return { type: 'oauth2', access_token: input.access_token as string, refresh_token: input.refresh_token as string | undefined, expires_at };
    }
    case 'api_key':
      if (!input || input.type !== 'api_key' || !str(input.api_key)) throw mismatch('{"type": "api_key", "api_key"}');
      if (provider.auth.pattern && !new RegExp(`^(?:${provider.auth.pattern})$`).test(input.api_key as string)) {
        throw badRequest('invalid_credentials', `this ${provider.auth.label ?? 'API key'} does not look like one of ${provider.display_name}'s`);
      }
      return { type: 'api_key', api_key: input.api_key as string };
    case 'basic':
      if (!input || input.type !== 'basic' || !str(input.username) || typeof input.password !== 'string' || (!provider.auth.password_optional && !input.password)) {
        throw mismatch('{"type": "basic", "username", "password"}');
      }
      return { type: 'basic', username: input.username as string, password: input.password as string };
    case 'oauth2_client_credentials':
      if (input !== undefined) throw badRequest('invalid_credentials', `provider "${provider.name}" uses oauth2_client_credentials: its connections take no credentials (the integration's client id and secret are used)`);
      return { type: 'oauth2_client_credentials' };
    case 'none':
      if (input !== undefined) throw badRequest('invalid_credentials', `provider "${provider.name}" needs no credentials: remove "credentials"`);
      return { type: 'none' };
  }
}
