import { EventEmitter } from 'node:events';
import { TerapiError, badRequest, notFound, reworded } from '../errors.ts';
import { scrubberOf, secretsOf } from './secrets.ts';
import { belongsTo, withDefaults, type ConnectionRecord, type Connections, type Credentials } from './connections.ts';
import { callProvider, providerFailed, providerWords, send, type HttpRequest } from '../http/send.ts';
import type { IntegrationRecord, Integrations } from './integrations.ts';
import type { Lock } from '../store/lock.ts';
import { apiRequest, OAUTH1_KEYS, templateValues } from '../http/provider-request.ts';
import type { ClientAuth, ClientCredentialsAuth, OAuth2Auth, Provider } from '../format/provider-types.ts';
import { scrubbedError, type Logger } from '../logger.ts';
import { fullMatch } from '../expression/regex.ts';
import type { Template } from '../format/template.ts';
import type { TokenResponse } from '../format/provider-types.ts';
import { exchangeOf, exchangeToken, isExchanged } from './token-exchange.ts';

export const reauthNeeded = (id: string, reason: string) =>
  new TerapiError(424, 'connection_needs_reauth', `connection "${id}" needs the end user to connect again: ${reason}`);

/** An OAuth error answer from a token URL (RFC 6749 section 5.2). */
export class OAuthError extends Error {
  constructor(
    readonly error: string,
    readonly description: string | undefined,
    readonly status: number,
  ) {
    super(`${error}${description ? `: ${description}` : ''} (HTTP ${status})`);
  }
}

export interface Fresh {
  record: ConnectionRecord;
  credentials: Credentials;
  provider: Provider;
  integration: IntegrationRecord;
  /**
   * Takes this connection's secrets (and its OAuth client's), in every form they may come back in,
   * out of a provider's text before it is logged, stored (sync status) or answered.
   */
  scrub: (text: string) => string;
  /** OAuth 1.0a: the integration's consumer secret, which signs every request with the token's. */
  client_secret?: string;
}

/** The values a fresh connection's templates may name: its configuration and credentials. */
export function freshValues(fresh: Fresh): Record<string, unknown> {
  const values = templateValues(fresh.record.connection_config, fresh.credentials, fresh.integration.oauth_client_id);
  const c = fresh.credentials;
  if (c.type === 'oauth1') Object.assign(values, { [OAUTH1_KEYS]: { consumerKey: fresh.integration.oauth_client_id ?? '', consumerSecret: fresh.client_secret ?? '', token: c.token, tokenSecret: c.token_secret } });
  return values;
}

/** What a token response gives, read with the provider's token_response expressions. */
export interface TokenResult {
  credentials: Extract<Credentials, { type: 'oauth2' | 'oauth2_client_credentials' }>;
  metadata: Record<string, unknown>;
  config: Record<string, string>;
}

/**
 * Credentials for every outgoing request (syncs, actions, proxy, the token endpoint) come from
 * here: fresh ones, refreshed before expiry, one refresh per connection at a time across every
 * server (an in-process single flight in front of a lock shared through the database).
 */
/** A token request made for a connection (a refresh, or a client-credentials token) that worked. */
export interface RefreshedEvent {
  provider_config_key: string;
  /** The provider's name (its file's): metrics count refreshes by it. */
  provider: string;
  connection_id: string;
  request_id?: string;
  duration_ms: number;
}

/** One that failed: `error` is invalid_grant when the provider refused the grant (the connection then needs its user again). */
export interface RefreshFailedEvent extends RefreshedEvent {
  error: string;
  /** Scrubbed of the connection's secrets. */
  message: string;
  needs_reauth: boolean;
}

export class AuthEngine extends EventEmitter<{
  needs_reauth: [{ provider_config_key: string; connection_id: string; reason: string }];
  refreshed: [RefreshedEvent];
  refresh_failed: [RefreshFailedEvent];
}> {
  private inflight = new Map<string, Promise<Fresh>>();

  constructor(
    private readonly integrations: Integrations,
    private readonly connections: Connections,
    private readonly lock: Lock,
    private readonly log: Logger,
  ) {
    super();
  }

  /**
   * The connection with credentials good for at least the provider's refresh buffer. `requestId`
   * (here and below) is the API request this serves, for its log lines (README, "Request ids").
   */
  async fresh(integrationKey: string, connectionId: string, refresh: boolean | { stale: string } = false, requestId?: string): Promise<Fresh> {
    const { integration, provider, record } = await this.bound(integrationKey, connectionId);
    if (record.needs_reauth) throw reauthNeeded(record.id, record.reauth_reason ?? 'the provider revoked its grant');
    // { stale }: the API refused the credentials sealed as `stale` (refresh_on_401). Refreshed only if
    // they are still the connection's: many requests refused together make one refresh.
    const forceRefresh = typeof refresh === 'object' ? record.credentials === refresh.stale : refresh;
    const credentials = this.connections.credentials(record);
    if (!forceRefresh && !needsRefresh(provider, credentials)) return this.made(integration, provider, record, credentials);
    if (credentials.type === 'oauth2' && !credentials.refresh_token) {
      if (!forceRefresh && !isExpired(credentials.expires_at, 0)) return this.made(integration, provider, record, credentials);
      throw reauthNeeded(record.id, 'its access token expired and the provider gave no refresh token');
    }
    const key = `refresh:${integrationKey}:${connectionId}`;
    let flight = this.inflight.get(key);
    if (!flight) {
      flight = this.lock.run(key, () => this.refreshLocked(integration, provider, record, requestId)).finally(() => this.inflight.delete(key));
      this.inflight.set(key, flight);
    }
    return flight;
  }

  /**
   * The connection with its integration, which must be the one it was made under: a connection of
   * an earlier integration of the same key never has its credentials used (they were given for
   * another provider, or another OAuth app). This process's copy of the integration may be older
   * than the connection, so it is read again before a connection is refused.
   */
  private async bound(integrationKey: string, connectionId: string): Promise<{ integration: IntegrationRecord; provider: Provider; record: ConnectionRecord }> {
    let { integration, provider } = await this.integrations.withProvider(integrationKey);
    const record = await this.connections.get(integrationKey, connectionId);
    if (!belongsTo(record, integration)) {
      this.integrations.forget(integrationKey);
      ({ integration, provider } = await this.integrations.withProvider(integrationKey));
      if (!belongsTo(record, integration)) {
        throw notFound('unknown_connection', `there is no connection "${connectionId}" in integration "${integrationKey}" (one was left from an earlier integration of that key; delete it)`);
      }
    }
    return { integration, provider, record };
  }

  /**
   * Under the lock: read the connection again, since another server may have refreshed it while we
   * waited. The new credentials are written over those the refresh started from: if the connection
   * was deleted (or reconnected) meanwhile, nothing is written, and what the provider just gave is
   * revoked, so a delete stays final even against a refresh in flight on another server.
   */
  private async refreshLocked(integration: IntegrationRecord, provider: Provider, seen: ConnectionRecord, requestId?: string): Promise<Fresh> {
    const stored = await this.connections.get(seen.provider_config_key, seen.id);
    const record = { ...stored, connection_config: withDefaults(provider, stored.connection_config) };
    if (record.needs_reauth) throw reauthNeeded(record.id, record.reauth_reason ?? 'the provider revoked its grant');
    const current = this.connections.credentials(record);
    if (record.credentials !== seen.credentials) return this.made(integration, provider, record, current);
    const scrub = this.scrubber(integration, current);
    const started = performance.now();
    const told = { provider_config_key: record.provider_config_key, provider: provider.name, connection_id: record.id, ...(requestId ? { request_id: requestId } : {}) };
    const failed = (error: string, message: string, needsReauth = false) =>
      this.emit('refresh_failed', { ...told, duration_ms: performance.now() - started, error, message, needs_reauth: needsReauth });

    let result: Pick<TokenResult, 'config' | 'metadata'> & { credentials: Credentials };
    const exchange = exchangeOf(provider);
    try {
      if (provider.auth.mode === 'oauth2' && current.type === 'oauth2') {
        const auth = provider.auth;
        result = await this.tokenRequest(provider, auth, integration, record.connection_config, {
          grant_type: 'refresh_token',
          refresh_token: current.refresh_token!,
          ...rendered(auth.refresh_params, authValues(auth, integration, record.connection_config)),
        }, auth.refresh_url);
        // A provider that does not rotate refresh tokens sends none back: the old one stays good.
        result.credentials.type === 'oauth2' && (result.credentials.refresh_token ??= current.refresh_token);
      } else if (provider.auth.mode === 'oauth2_client_credentials' && current.type === 'oauth2_client_credentials') {
        result = await this.clientCredentialsToken(provider, provider.auth, integration, record.connection_config, current);
      } else if (exchange && isExchanged(current)) {
        result = await exchangeToken(provider, exchange, record.connection_config, current);
      } else {
        return this.made(integration, provider, record, current);
      }
    } catch (e) {
      if (e instanceof OAuthError && e.error === 'invalid_grant') {
        const reason = exchange ? `the provider refused the credentials at the token exchange (HTTP ${e.status})` : 'the provider answered invalid_grant to a token refresh';
        const marked = await this.connections.markNeedsReauth(record, reason);
        failed('invalid_grant', scrub(e.message), marked);
        if (!marked) return this.overtaken(integration, provider, record);
        this.log.warn({ request_id: requestId, connection: record.id, integration: record.provider_config_key }, 'refresh refused with invalid_grant: connection needs re-authorisation');
        this.emit('needs_reauth', { provider_config_key: record.provider_config_key, connection_id: record.id, reason });
        throw reauthNeeded(record.id, reason);
      }
      // The provider's own words, which may repeat the refresh token or the client secret.
      const message = scrub((e as Error).message);
      this.log.error({ request_id: requestId, connection: record.id, integration: record.provider_config_key, err: scrubbedError(e, scrub) }, 'token refresh failed');
      const answered = e instanceof TerapiError ? (reworded(e, scrub) as TerapiError) : providerFailed(`refreshing the token failed: ${message}`);
      failed(answered.code, answered.message);
      throw answered;
    }
    const saved = await this.connections.update(record, result.credentials, { connection_config: { ...record.connection_config, ...result.config } });
    if (!saved) {
      this.log.warn({ request_id: requestId, connection: record.id, integration: record.provider_config_key }, 'connection deleted or reconnected during a token refresh: the new tokens are revoked');
      await this.revoke(provider, integration, record.connection_config, result.credentials);
      failed('connection_changed', 'the connection was deleted or connected again during the refresh: the new tokens were revoked');
      return this.overtaken(integration, provider, record);
    }
    this.emit('refreshed', { ...told, duration_ms: performance.now() - started });
    this.log.info({ request_id: requestId, connection: record.id, integration: record.provider_config_key }, 'token refreshed');
    return this.made(integration, provider, saved, result.credentials);
  }

  /** After a write lost its race: the connection as it is now (reconnected), or 404 if it was deleted. */
  private async overtaken(integration: IntegrationRecord, provider: Provider, record: ConnectionRecord): Promise<Fresh> {
    const now = await this.connections.get(record.provider_config_key, record.id);
    if (now.needs_reauth) throw reauthNeeded(now.id, now.reauth_reason ?? 'the provider revoked its grant');
    return this.made(integration, provider, now, this.connections.credentials(now));
  }

  private made(integration: IntegrationRecord, provider: Provider, record: ConnectionRecord, credentials: Credentials): Fresh {
    const config = withDefaults(provider, record.connection_config);
    if (config !== record.connection_config) record = { ...record, connection_config: config };
    const oauth1 = provider.auth.mode === 'oauth1' ? { client_secret: this.integrations.clientSecret(integration) ?? '' } : {};
    return { record, credentials, provider, integration, scrub: this.scrubber(integration, credentials), ...oauth1 };
  }

  /**
   * Takes these credentials and the integration's client secret out of provider text. Lazy: most
   * requests never scrub anything, and the client secret may be sealed with a key this server no
   * longer holds (rotation), which must not fail a request that does not need it.
   */
  scrubber(integration: IntegrationRecord, credentials?: Credentials, ...more: (string | undefined)[]): (text: string) => string {
    let scrub: ((text: string) => string) | undefined;
    return (text) => {
      scrub ??= scrubberOf(this.secrets(integration, credentials, ...more));
      return scrub(text);
    };
  }

  /** The strings `scrubber` takes out (a worker thread that runs a sync gets them, to scrub its errors). */
  secrets(integration: IntegrationRecord, credentials?: Credentials, ...more: (string | undefined)[]): string[] {
    let secret: string | undefined;
    try {
      secret = this.integrations.clientSecret(integration);
    } catch {
      // Unreadable here, so it cannot have been sent from here either.
    }
    const extra = more.filter((s): s is string => typeof s === 'string' && s.length > 0);
    return [...secretsOf(credentials, { id: integration.oauth_client_id, secret }), ...extra];
  }

  /** Exchanges an authorization code (the connect flow's callback). */
  async exchangeCode(provider: Provider, auth: OAuth2Auth, integration: IntegrationRecord, config: Record<string, string>, code: string, redirectUri: string, verifier?: string): Promise<TokenResult> {
    const params: Record<string, string> = { grant_type: 'authorization_code', code, redirect_uri: redirectUri, ...rendered(auth.token_params, authValues(auth, integration, config)) };
    if (verifier) params.code_verifier = verifier;
    return this.tokenRequest(provider, auth, integration, config, params);
  }

  /**
   * A client-credentials token, asked for with the connection's own OAuth client where it brought
   * one (kept with the new token), else the integration's.
   */
  async clientCredentialsToken(provider: Provider, auth: ClientCredentialsAuth, integration: IntegrationRecord, config: Record<string, string>, current: Extract<Credentials, { type: 'oauth2_client_credentials' }>): Promise<TokenResult> {
    const scopes = integration.oauth_scopes ?? auth.scopes;
    const own = current.client_id && current.client_secret ? { id: current.client_id, secret: current.client_secret } : undefined;
    const params: Record<string, string> = { grant_type: 'client_credentials', ...rendered(auth.token_params, authValues(auth, integration, config, own?.id)) };
    if (scopes?.length) params.scope ??= scopes.join(auth.scope_separator ?? ' ');
    if (!own && !integration.oauth_client_id) throw badRequest('missing_oauth_client', `connection has no OAuth client of its own and integration "${integration.unique_key}" has none: connections of provider "${provider.name}" give credentials {"type": "oauth2_client_credentials", "client_id", "client_secret"}`);
    const result = await this.tokenRequest(provider, auth, integration, config, params, auth.token_url, own);
    if (own) Object.assign(result.credentials, { client_id: own.id, client_secret: own.secret });
    return result;
  }

  private async tokenRequest(provider: Provider, auth: OAuth2Auth | ClientCredentialsAuth, integration: IntegrationRecord, config: Record<string, string>, params: Record<string, string>, url = auth.token_url, client?: { id: string; secret: string }): Promise<TokenResult> {
    const values = authValues(auth, integration, config, client?.id);
    const req = this.clientRequest(integration, auth.client_auth, auth.token_request_format, 'POST', url.renderUrl(values), params, client);
    Object.assign(req.headers!, lowerKeys(rendered(auth.token_headers, values)));
    const res = await callProvider(req, { statuses: [500, 502, 503, 504], max_attempts: 2 });
    const data = (typeof res.body === 'object' && res.body ? res.body : {}) as Record<string, unknown>;
    if (res.status >= 400 || typeof data.error === 'string') {
      throw new OAuthError(typeof data.error === 'string' ? data.error : 'token_request_failed', typeof data.error_description === 'string' ? data.error_description : undefined, res.status);
    }
    return readTokenResponse(provider, auth.token_response, data, auth.mode);
  }

  /**
   * A request to the provider's OAuth server (token or revocation URL) carrying the integration's
   * client id and secret: in the body, or as basic auth with both form-encoded (RFC 6749, 2.3.1).
   */
  private clientRequest(integration: IntegrationRecord, clientAuth: ClientAuth | 'none' = 'body', format: 'form' | 'json' = 'form', method: string, url: string, params: Record<string, string>, client?: { id: string; secret: string }): HttpRequest {
    const body = { ...params };
    const headers: Record<string, string> = { accept: 'application/json' };
    if (clientAuth !== 'none') {
      const clientId = client ? client.id : integration.oauth_client_id ?? '';
      const clientSecret = client ? client.secret : this.integrations.clientSecret(integration) ?? '';
      if (clientAuth === 'basic') {
        headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`;
      } else Object.assign(body, { client_id: clientId, client_secret: clientSecret });
    }
    // A request with nothing to say in its body (a DELETE authenticated by its header) sends none.
    if (!Object.keys(body).length) return { method, url, headers };
    return format === 'json' ? { method, url, headers, json: body } : { method, url, headers, form: body };
  }

  /**
   * Revokes a grant where the provider has a revocation URL: a deleted connection's, a replaced one's,
   * or the tokens a discarded refresh obtained. Best effort: logged, never thrown.
   */
  async revoke(provider: Provider, integration: IntegrationRecord, config: Record<string, string>, credentials: Credentials): Promise<void> {
    if (provider.auth.mode !== 'oauth2' || !provider.auth.revocation || credentials.type !== 'oauth2') return;
    config = withDefaults(provider, config);
    const revocation = provider.auth.revocation;
    try {
      const kind = revocation.token === 'refresh_token' && credentials.refresh_token ? 'refresh_token' : 'access_token';
      const token = credentials[kind]!;
      const values = { ...authValues(provider.auth, integration, config), token };
      const params = rendered(revocation.params, values);
      if (revocation.token_in_body !== false) params[revocation.token_param ?? 'token'] = token;
      if (revocation.token_type_hint) params.token_type_hint = kind;
      const req = this.clientRequest(integration, revocation.client_auth ?? provider.auth.client_auth, revocation.format, revocation.method ?? 'POST', revocation.url.renderUrl(values), params);
      Object.assign(req.headers!, lowerKeys(rendered(revocation.headers, values)));
      const res = await send(req, { max_attempts: 2 });
      if (res.status >= 400) this.log.warn({ integration: integration.unique_key, status: res.status }, 'revocation refused by the provider');
      else this.log.info({ integration: integration.unique_key }, 'grant revoked');
    } catch (e) {
      this.log.warn({ integration: integration.unique_key, err: this.scrubber(integration, credentials)((e as Error).message) }, 'revocation failed');
    }
  }

  /**
   * Revokes the grant a reconnect replaced, unless the provider gave the same token again, or its
   * file says revoking an old token would end the new grant too (one grant per user and app).
   */
  async revokeReplaced(provider: Provider, integration: IntegrationRecord, replaced: ConnectionRecord, now: Credentials): Promise<void> {
    if (provider.auth.mode !== 'oauth2' || provider.auth.revocation?.on_reconnect === false) return;
    let old: Credentials;
    try {
      old = this.connections.credentials(replaced);
    } catch {
      return; // sealed with a key this server no longer has: nothing it could send
    }
    if (old.type !== 'oauth2' || now.type !== 'oauth2') return;
    const kept = new Set([now.access_token, now.refresh_token]);
    if (kept.has(old.access_token) || (old.refresh_token && kept.has(old.refresh_token))) return;
    await this.revoke(provider, integration, replaced.connection_config, old);
  }

  /** Revokes the grant of a connection as it was stored (`requestId`: the deletion's request, for the log). */
  async revokeRecord(provider: Provider, integration: IntegrationRecord, record: ConnectionRecord, requestId?: string): Promise<void> {
    let credentials: Credentials;
    try {
      credentials = this.connections.credentials(record);
    } catch (e) {
      this.log.warn({ request_id: requestId, connection: record.id, err: (e as Error).message }, 'revocation failed');
      return;
    }
    await this.revoke(provider, integration, record.connection_config, credentials);
  }
}

export async function readTokenResponse(provider: Provider, tokenResponse: TokenResponse | undefined, data: Record<string, unknown>, type: 'oauth2' | 'oauth2_client_credentials'): Promise<TokenResult> {
  const pick = tokenResponse ?? {};
  const value = async (expr: typeof pick.access_token, fallback: string) => (expr ? await expr.evaluate(data) : data[fallback]);
  const accessToken = await value(pick.access_token, 'access_token');
  if (typeof accessToken !== 'string' || !accessToken) throw providerFailed('the token response has no access token where the provider file says it is');
  const refreshToken = await value(pick.refresh_token, 'refresh_token');
  let expiresAt: string | undefined;
  const at = pick.expires_at ? await pick.expires_at.evaluate(data) : undefined;
  const expiresIn = await value(pick.expires_in, 'expires_in');
  if (typeof at === 'number') expiresAt = new Date(at * 1000).toISOString();
  else if (typeof at === 'string' && !Number.isNaN(Date.parse(at))) expiresAt = new Date(at).toISOString();
  else if (expiresIn !== undefined && Number.isFinite(Number(expiresIn))) expiresAt = new Date(Date.now() + Number(expiresIn) * 1000).toISOString();
  else if (pick.default_expires_in !== undefined) expiresAt = new Date(Date.now() + pick.default_expires_in * 1000).toISOString();
  const metadata: Record<string, unknown> = {};
  for (const [name, expr] of Object.entries(pick.metadata ?? {})) metadata[name] = await expr.evaluate(data);
  const config: Record<string, string> = {};
  for (const [name, field] of Object.entries(provider.connection_config ?? {})) {
    if (!field.from_token_response) continue;
    const v = await field.from_token_response.evaluate(data);
    if (typeof v !== 'string' || !fullMatch(field.pattern, v)) {
      throw providerFailed(`the token response's ${name} does not match the pattern the provider file declares`);
    }
    config[name] = v;
  }
  const credentials =
    type === 'oauth2'
      ? { type, access_token: accessToken, refresh_token: typeof refreshToken === 'string' && refreshToken ? refreshToken : undefined, expires_at: expiresAt, raw: data }
      : { type, access_token: accessToken, expires_at: expiresAt, raw: data };
  return { credentials, metadata, config };
}

/**
 * Whether an API answer means: refresh the token and send the request once more. A 401, where the
 * provider file asks for it (refresh_on_401), for credentials that can be refreshed.
 */
export function refreshesOn401(fresh: Fresh, status: number): boolean {
  if (status !== 401) return false;
  const auth = fresh.provider.auth;
  const c = fresh.credentials;
  if (isExchanged(c)) return exchangeOf(fresh.provider)?.refresh_on_401 === true;
  if (!('refresh_on_401' in auth) || !auth.refresh_on_401) return false;
  return c.type === 'oauth2_client_credentials' || (c.type === 'oauth2' && c.refresh_token !== undefined);
}

/**
 * What templates of token, refresh and revocation requests may name: the connection's
 * configuration, the OAuth client's id (the connection's own where it has one) and the
 * integration's scopes.
 */
function authValues(auth: OAuth2Auth | ClientCredentialsAuth, integration: IntegrationRecord, config: Record<string, string>, clientId?: string): Record<string, string> {
  const scopes = integration.oauth_scopes ?? auth.scopes ?? [];
  return { ...config, client_id: clientId ?? integration.oauth_client_id ?? '', scopes: scopes.join(auth.scope_separator ?? ' ') };
}

const rendered = (map: Record<string, Template> | undefined, values: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(map ?? {}).map(([k, t]) => [k, t.renderText(values)]));

const lowerKeys = (h: Record<string, string>) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));

function isExpired(expiresAt: string | undefined, bufferSeconds: number): boolean {
  return expiresAt !== undefined && Date.parse(expiresAt) - bufferSeconds * 1000 <= Date.now();
}

function needsRefresh(provider: Provider, credentials: Credentials): boolean {
  const buffer = 'refresh_buffer_seconds' in provider.auth ? provider.auth.refresh_buffer_seconds ?? 300 : 300;
  if (credentials.type === 'oauth2') return isExpired(credentials.expires_at, buffer);
  if (credentials.type === 'oauth2_client_credentials') return !credentials.access_token || isExpired(credentials.expires_at, buffer);
  const exchange = exchangeOf(provider);
  if (exchange && isExchanged(credentials)) return !credentials.access_token || isExpired(credentials.expires_at, exchange.refresh_buffer_seconds ?? 300);
  return false;
}

/**
 * Checks credentials with the provider's verification request, where its file declares one. A
 * refusal says what the provider said (scrubbed by the caller), for the end user who typed them.
 */
export async function verifyCredentials(provider: Provider, config: Record<string, string>, credentials: Credentials): Promise<void> {
  if (!provider.verification) return;
  const res = await callProvider(apiRequest(provider, templateValues(config, credentials), provider.verification.request), { max_attempts: 2 });
  // A status the file lists as valid: the key is known, only this endpoint is not open to it.
  if (res.status < 400 || provider.verification.valid_statuses?.includes(res.status)) return;
  const words = providerWords(res.body);
  const said = words ? `: "${words}"` : '';
  if (res.status === 401 || res.status === 403) throw badRequest('invalid_credentials', `${provider.display_name} rejected these credentials (HTTP ${res.status})${said}. Check them and try again`);
  throw providerFailed(`${provider.display_name} could not check the credentials (HTTP ${res.status})${said}`);
}
