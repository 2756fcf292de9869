import type { Sealer } from './crypto.ts';
import { badRequest, conflict, notFound } from '../errors.ts';
import { checkKey, integrationKey, type IntegrationRecord } from './integrations.ts';
import type { AuthMode, Provider } from '../format/provider-types.ts';
import { Store } from '../store/store.ts';
import { own } from '../own.ts';
import { fullMatch } from '../expression/regex.ts';
import { createPrivateKey } from 'node:crypto';

/**
 * A PEM private key as given: with real line breaks, or pasted on one line (a form field), or with
 * `\n` escapes (copied out of a JSON key file). Refused unless it is a key of the algorithm's kind.
 */
function readPrivateKey(text: string, algorithm: 'RS256' | 'ES256'): string {
  let pem = text.replace(/\\n/g, '\n').trim();
  const m = /^(-----BEGIN [A-Z ]+-----)\s*([A-Za-z0-9+/=\s]+?)\s*(-----END [A-Z ]+-----)$/.exec(pem);
  if (m) pem = [m[1], ...(m[2].replace(/\s+/g, '').match(/.{1,64}/g) ?? []), m[3]].join('\n');
  let type: string | undefined;
  try {
    type = createPrivateKey(pem).asymmetricKeyType;
  } catch {
    throw badRequest('invalid_credentials', 'private_key is not a PEM private key (-----BEGIN PRIVATE KEY----- ...)');
  }
  const wanted = algorithm === 'RS256' ? 'rsa' : 'ec';
  if (type !== wanted) throw badRequest('invalid_credentials', `private_key is an ${type} key; this provider signs with ${algorithm}, which needs an ${wanted.toUpperCase()} key`);
  return pem;
}

/** Credentials as sealed at rest, by auth mode (PRODUCT.md, "Credentials in createConnection"). */
export type Credentials =
  | { type: 'oauth2'; access_token: string; refresh_token?: string; expires_at?: string; raw?: Record<string, unknown> }
  /** client_id and client_secret: the connection's own OAuth client, where it brings one (else the integration's). */
  | { type: 'oauth2_client_credentials'; client_id?: string; client_secret?: string; access_token?: string; expires_at?: string; raw?: Record<string, unknown> }
  /** access_token and expires_at: the short-lived token a token exchange gave for the key or password (auth.token_exchange). */
  | { type: 'api_key'; api_key: string; access_token?: string; expires_at?: string }
  | { type: 'basic'; username: string; password: string; access_token?: string; expires_at?: string }
  /** A private key that signs JWT assertions (auth mode jwt_bearer), and the token the last one was exchanged for. */
  | { type: 'jwt_bearer'; issuer: string; private_key: string; key_id?: string; access_token?: string; expires_at?: string }
  /** OAuth 1.0a: the token and its secret, which sign every request with the client's (consumer) secret. */
  | { type: 'oauth1'; token: string; token_secret: string }
  | { type: 'none' };

export interface ConnectionRecord {
  id: string;
  provider_config_key: string;
  /**
   * The id of the integration it was made under (IntegrationRecord.id): an integration deleted and
   * made again under the same key is another integration, and this connection is not its own.
   */
  integration_id?: string;
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

const integrationGone = (integration: string) => notFound('unknown_integration', `integration "${integration}" was deleted while the connection was being made: nothing was stored`);

export const connectionKey = (integration: string, id: string) => Store.key('connection', integration, id);

/** A connection as its writer gives it: what Connections adds (sealed credentials, integration id, times) left out. */
export type NewConnection = Omit<ConnectionRecord, 'credentials' | 'credentials_type' | 'expires_at' | 'integration_id' | 'updated_at'>;

/** Whether a connection belongs to this integration, and not to an earlier one of the same key. */
export const belongsTo = (record: ConnectionRecord, integration: IntegrationRecord) => (record.integration_id ?? '') === (integration.id ?? '');

/**
 * Every write of a connection after its creation is made over what the writer read: it happens
 * only if the connection is still there with the same sealed credentials (each sealing is unique),
 * in one statement. A delete, or a reconnect, that came in between wins; the writer learns it.
 */
const unchanged = (seen: ConnectionRecord) => ({ field: 'credentials', equals: seen.credentials });

export class Connections {
  constructor(
    private readonly store: Store,
    private readonly sealer: Sealer,
  ) {}

  async get(integration: string, id: string): Promise<ConnectionRecord> {
    const record = await this.find(integration, id);
    if (!record) throw notFound('unknown_connection', `there is no connection "${id}" in integration "${integration}"`);
    return record;
  }

  async find(integration: string, id: string): Promise<ConnectionRecord | undefined> {
    return this.store.get<ConnectionRecord>(connectionKey(integration, id));
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
   * Makes a connection, atomically: only if no connection has that id (else 409), and only while
   * its integration, that very one, exists (else 404): a connection can never outlive the
   * integration it was made under. Its credentials are sealed here and nowhere else.
   */
  async create(integration: IntegrationRecord, record: NewConnection, credentials: Credentials): Promise<ConnectionRecord> {
    const full = this.seal(integration, record, credentials);
    const key = connectionKey(integration.unique_key, record.id);
    if (await this.store.add(key, full, { key: integrationKey(integration.unique_key), field: 'id', equals: integration.id ?? '' })) return full;
    if (await this.find(integration.unique_key, record.id)) throw exists(integration.unique_key, record.id);
    throw integrationGone(integration.unique_key);
  }

  /**
   * Writes a connection's new credentials (a refresh) over those it was read with. Undefined when it
   * was deleted or written since: then nothing is written, and the caller must not use what it got.
   */
  async update(seen: ConnectionRecord, credentials: Credentials, changes: Partial<Pick<ConnectionRecord, 'connection_config' | 'metadata'>> = {}): Promise<ConnectionRecord | undefined> {
    const full = { ...seen, ...changes, ...this.sealed(credentials) };
    return (await this.store.replace(connectionKey(seen.provider_config_key, seen.id), full, unchanged(seen))) ? full : undefined;
  }

  /** False when the connection was deleted or written since it was read: the mark is then dropped. */
  async markNeedsReauth(seen: ConnectionRecord, reason: string): Promise<boolean> {
    const marked = { ...seen, needs_reauth: true, reauth_reason: reason, updated_at: new Date().toISOString() };
    return this.store.replace(connectionKey(seen.provider_config_key, seen.id), marked, unchanged(seen));
  }

  /**
   * The end user connected again (the connect flow): the connection's credentials replaced, or the
   * connection made. Answers the connection written and the one it replaced (whose grant the caller
   * revokes). Each attempt is conditional on what it read, so a concurrent write is never lost.
   */
  async put(integration: IntegrationRecord, record: NewConnection, credentials: Credentials): Promise<{ record: ConnectionRecord; replaced?: ConnectionRecord }> {
    const key = connectionKey(integration.unique_key, record.id);
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.find(integration.unique_key, record.id);
      if (!current) {
        try {
          return { record: await this.create(integration, record, credentials) };
        } catch (e) {
          if ((e as { code?: string }).code === 'connection_exists') continue; // made meanwhile: replace it
          throw e;
        }
      }
      const full = this.seal(integration, { ...record, created_at: current.created_at }, credentials);
      if (await this.store.replace(key, full, unchanged(current))) return { record: full, replaced: current };
    }
    throw conflict('connection_busy', `connection "${record.id}" kept changing while it was being written: try again`);
  }

  /** Deletes a connection and what hangs off it; answers what was deleted (undefined if it was already gone). */
  async delete(integration: string, id: string): Promise<ConnectionRecord | undefined> {
    const record = await this.store.take<ConnectionRecord>(connectionKey(integration, id));
    // Sync state and records hang off the connection's key.
    await this.store.deletePrefix(`${Store.key('sync', integration, id)}/`);
    return record;
  }

  /**
   * Deletes every connection of an integration key, in one statement: called after the integration
   * row itself is deleted, when no connection can be made under it any more, so none is left.
   */
  async deleteAll(integration: string): Promise<ConnectionRecord[]> {
    const records = await this.store.takePrefix<ConnectionRecord>(`${Store.key('connection', integration)}/`);
    await this.store.deletePrefix(`${Store.key('sync', integration)}/`);
    return records;
  }

  private seal(integration: IntegrationRecord, record: NewConnection, credentials: Credentials): ConnectionRecord {
    return { ...record, integration_id: integration.id, ...this.sealed(credentials) };
  }

  private sealed(credentials: Credentials) {
    return {
      credentials: this.sealer.seal(credentials),
      credentials_type: credentials.type,
      expires_at: 'expires_at' in credentials ? credentials.expires_at : undefined,
      updated_at: new Date().toISOString(),
    };
  }

  credentials(record: ConnectionRecord): Credentials {
    return this.sealer.open<Credentials>(record.credentials);
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
  const later = filledLater(provider);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(config)) {
    const field = own(fields, name);
    if (!field) {
      const known = Object.keys(fields);
      throw badRequest('invalid_connection_config', `provider "${provider.name}" has no connection_config field "${name}"${known.length ? `; its fields are ${known.join(', ')}` : ''}`);
    }
    if (typeof value !== 'string' || !fullMatch(field.pattern, value)) {
      throw badRequest('invalid_connection_config', `connection_config.${name} must match ${field.pattern}${field.example ? ` (e.g. ${field.example})` : ''}; got ${JSON.stringify(value)}`);
    }
    out[name] = value;
  }
  for (const [name, field] of Object.entries(fields)) {
    if (out[name] === undefined && field.default !== undefined) out[name] = field.default;
    if (out[name] === undefined && !field.optional && !(stage === 'before_auth' || later.has(name))) {
      throw badRequest('invalid_connection_config', `provider "${provider.name}" needs connection_config.${name}${field.description ? ` (${field.description})` : ''}`);
    }
  }
  return out;
}

/**
 * A stored connection's configuration with the provider's defaults under it: a connection made
 * before a field got its default (Salesforce's host) still builds its URLs.
 */
export function withDefaults(provider: Provider, config: Record<string, string>): Record<string, string> {
  const defaults = Object.entries(provider.connection_config ?? {}).filter(([name, f]) => f.default !== undefined && config[name] === undefined);
  return defaults.length ? { ...Object.fromEntries(defaults.map(([name, f]) => [name, f.default!])), ...config } : config;
}

/** Names of the connection_config fields the provider fills itself (token response, post-connection request). */
export function filledLater(provider: Provider): Set<string> {
  return new Set([...Object.keys(provider.post_connection?.config ?? {}), ...Object.entries(provider.connection_config ?? {}).filter(([, f]) => f.from_token_response || f.from_callback).map(([n]) => n)]);
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
      if (provider.auth.pattern && !fullMatch(provider.auth.pattern, input.api_key as string)) {
        throw badRequest('invalid_credentials', `this ${provider.auth.label ?? 'API key'} does not look like one of ${provider.display_name}'s`);
      }
      return { type: 'api_key', api_key: input.api_key as string };
    case 'basic':
      if (!input || input.type !== 'basic' || !str(input.username) || typeof input.password !== 'string' || (!provider.auth.password_optional && !input.password)) {
        throw mismatch('{"type": "basic", "username", "password"}');
      }
      return { type: 'basic', username: input.username as string, password: input.password as string };
    case 'oauth2_client_credentials': {
      const required = provider.auth.connection_client === 'required';
      if (input === undefined && !required) return { type: 'oauth2_client_credentials' };
      const shape = `{"type": "oauth2_client_credentials", "client_id", "client_secret"}${required ? ' (each connection brings its own OAuth client)' : ", or none to use the integration's OAuth client"}`;
      if (!input || input.type !== 'oauth2_client_credentials' || !str(input.client_id) || !str(input.client_secret)) throw mismatch(shape);
      const extra = Object.keys(input).filter((k) => !['type', 'client_id', 'client_secret'].includes(k));
      if (extra.length) throw mismatch(`${shape}, without ${extra.join(', ')}`);
      return { type: 'oauth2_client_credentials', client_id: input.client_id as string, client_secret: input.client_secret as string };
    }
    case 'oauth1':
      if (!input || input.type !== 'oauth1' || !str(input.token) || !str(input.token_secret)) throw mismatch('{"type": "oauth1", "token", "token_secret"}');
      return { type: 'oauth1', token: input.token as string, token_secret: input.token_secret as string };
    case 'jwt_bearer': {
      const shape = '{"type": "jwt_bearer", "issuer", "private_key", "key_id"?} (a Google service account key file\'s client_email, private_key and private_key_id; a GitHub App\'s app id and private key)';
      if (!input || input.type !== 'jwt_bearer' || !str(input.issuer) || !str(input.private_key) || (input.key_id !== undefined && !str(input.key_id))) throw mismatch(shape);
      const privateKey = readPrivateKey(input.private_key as string, provider.auth.algorithm ?? 'RS256');
      return { type: 'jwt_bearer', issuer: input.issuer as string, private_key: privateKey, ...(input.key_id ? { key_id: input.key_id as string } : {}) };
    }
    case 'none':
      if (input !== undefined) throw badRequest('invalid_credentials', `provider "${provider.name}" needs no credentials: remove "credentials"`);
      return { type: 'none' };
  }
}
