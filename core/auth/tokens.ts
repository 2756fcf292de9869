import { EventEmitter } from 'node:events';
import { TerapiError, badRequest } from '../errors.ts';
import type { ConnectionRecord, Connections, Credentials } from './connections.ts';
import { callProvider, providerFailed, send, type HttpRequest } from '../http/send.ts';
import type { IntegrationRecord, Integrations } from './integrations.ts';
import type { Lock } from '../store/lock.ts';
import { apiRequest, templateValues } from '../http/provider-request.ts';
import type { ClientAuth, ClientCredentialsAuth, OAuth2Auth, Provider } from '../format/provider-types.ts';
import type { Logger } from '../logger.ts';

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
}

/** The values a fresh connection's templates may name: its configuration and credentials. */
export const freshValues = (fresh: Fresh) => templateValues(fresh.record.connection_config, fresh.credentials, fresh.integration.oauth_client_id);

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
export class AuthEngine extends EventEmitter<{ needs_reauth: [{ provider_config_key: string; connection_id: string; reason: string }] }> {
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
  async fresh(integrationKey: string, connectionId: string, forceRefresh = false, requestId?: string): Promise<Fresh> {
    const { integration, provider } = await this.integrations.withProvider(integrationKey);
    const record = await this.connections.get(integrationKey, connectionId);
    if (record.needs_reauth) throw reauthNeeded(record.id, record.reauth_reason ?? 'the provider revoked its grant');
    const credentials = this.connections.credentials(record);
    if (!forceRefresh && !needsRefresh(provider, credentials)) return { record, credentials, provider, integration };
    if (credentials.type === 'oauth2' && !credentials.refresh_token) {
      if (!forceRefresh && !isExpired(credentials.expires_at, 0)) return { record, credentials, provider, integration };
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

  /** Under the lock: read the connection again, since another server may have refreshed it while we waited. */
  private async refreshLocked(integration: IntegrationRecord, provider: Provider, seen: ConnectionRecord, requestId?: string): Promise<Fresh> {
    const record = await this.connections.get(seen.provider_config_key, seen.id);
    if (record.needs_reauth) throw reauthNeeded(record.id, record.reauth_reason ?? 'the provider revoked its grant');
    const current = this.connections.credentials(record);
    if (record.credentials !== seen.credentials) return { record, credentials: current, provider, integration };

    let result: TokenResult;
    try {
      if (provider.auth.mode === 'oauth2' && current.type === 'oauth2') {
        const auth = provider.auth;
        result = await this.tokenRequest(provider, auth, integration, record.connection_config, {
          grant_type: 'refresh_token',
          refresh_token: current.refresh_token!,
          ...auth.refresh_params,
        }, auth.refresh_url);
        // A provider that does not rotate refresh tokens sends none back: the old one stays good.
        result.credentials.type === 'oauth2' && (result.credentials.refresh_token ??= current.refresh_token);
      } else if (provider.auth.mode === 'oauth2_client_credentials') {
        result = await this.clientCredentialsToken(provider, provider.auth, integration, record.connection_config);
      } else {
        return { record, credentials: current, provider, integration };
      }
    } catch (e) {
      if (e instanceof OAuthError && e.error === 'invalid_grant') {
        await this.connections.markNeedsReauth(record, `the provider answered invalid_grant to a token refresh`);
        this.log.warn({ request_id: requestId, connection: record.id, integration: record.provider_config_key }, 'refresh refused with invalid_grant: connection needs re-authorisation');
        this.emit('needs_reauth', { provider_config_key: record.provider_config_key, connection_id: record.id, reason: 'the provider answered invalid_grant to a token refresh' });
        throw reauthNeeded(record.id, 'the provider answered invalid_grant to a token refresh');
      }
      this.log.error({ request_id: requestId, connection: record.id, integration: record.provider_config_key, err: e }, 'token refresh failed');
      throw e instanceof TerapiError ? e : providerFailed(`refreshing the token failed: ${(e as Error).message}`);
    }
    const saved = await this.connections.save({ ...record, connection_config: { ...record.connection_config, ...result.config } }, result.credentials);
    this.log.info({ request_id: requestId, connection: record.id, integration: record.provider_config_key }, 'token refreshed');
    return { record: saved, credentials: result.credentials, provider, integration };
  }

  /** Exchanges an authorization code (the connect flow's callback). */
  async exchangeCode(provider: Provider, auth: OAuth2Auth, integration: IntegrationRecord, config: Record<string, string>, code: string, redirectUri: string, verifier?: string): Promise<TokenResult> {
    const params: Record<string, string> = { grant_type: 'authorization_code', code, redirect_uri: redirectUri, ...auth.token_params };
    if (verifier) params.code_verifier = verifier;
    return this.tokenRequest(provider, auth, integration, config, params);
  }

  async clientCredentialsToken(provider: Provider, auth: ClientCredentialsAuth, integration: IntegrationRecord, config: Record<string, string>): Promise<TokenResult> {
    const scopes = integration.oauth_scopes ?? auth.scopes;
    const params: Record<string, string> = { grant_type: 'client_credentials', ...auth.token_params };
    if (scopes?.length) params.scope = scopes.join(auth.scope_separator ?? ' ');
    return this.tokenRequest(provider, auth, integration, config, params);
  }

  private async tokenRequest(provider: Provider, auth: OAuth2Auth | ClientCredentialsAuth, integration: IntegrationRecord, config: Record<string, string>, params: Record<string, string>, url = auth.token_url): Promise<TokenResult> {
    const req = this.clientRequest(integration, auth.client_auth, auth.token_request_format, 'POST', url.renderUrl(config), params);
    const res = await callProvider(req, { statuses: [500, 502, 503, 504], max_attempts: 2 });
    const data = (typeof res.body === 'object' && res.body ? res.body : {}) as Record<string, unknown>;
    if (res.status >= 400 || typeof data.error === 'string') {
      throw new OAuthError(typeof data.error === 'string' ? data.error : 'token_request_failed', typeof data.error_description === 'string' ? data.error_description : undefined, res.status);
    }
    return readTokenResponse(provider, auth, data, auth.mode);
  }

  /**
   * A request to the provider's OAuth server (token or revocation URL) carrying the integration's
   * client id and secret: in the body, or as basic auth with both form-encoded (RFC 6749, 2.3.1).
   */
  private clientRequest(integration: IntegrationRecord, clientAuth: ClientAuth = 'body', format: 'form' | 'json' = 'form', method: string, url: string, params: Record<string, string>): HttpRequest {
    const clientId = integration.oauth_client_id ?? '';
    const clientSecret = this.integrations.clientSecret(integration) ?? '';
    const body = { ...params };
    const headers: Record<string, string> = { accept: 'application/json' };
    if (clientAuth === 'basic') {
      headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`;
    } else Object.assign(body, { client_id: clientId, client_secret: clientSecret });
    return format === 'json' ? { method, url, headers, json: body } : { method, url, headers, form: body };
  }

  /** Revokes a connection's grant where the provider has a revocation URL. Best effort: logged, never thrown. */
  async revoke(provider: Provider, integration: IntegrationRecord, record: ConnectionRecord, requestId?: string): Promise<void> {
    if (provider.auth.mode !== 'oauth2' || !provider.auth.revocation) return;
    const revocation = provider.auth.revocation;
    try {
      const credentials = this.connections.credentials(record);
      if (credentials.type !== 'oauth2') return;
      const token = revocation.token === 'refresh_token' ? credentials.refresh_token ?? credentials.access_token : credentials.access_token;
      const req = this.clientRequest(integration, revocation.client_auth ?? provider.auth.client_auth, revocation.format, revocation.method ?? 'POST', revocation.url.renderUrl(record.connection_config), {
        [revocation.token_param ?? 'token']: token,
      });
      const res = await send(req, { max_attempts: 2 });
      if (res.status >= 400) this.log.warn({ request_id: requestId, connection: record.id, status: res.status }, 'revocation refused by the provider');
      else this.log.info({ request_id: requestId, connection: record.id }, 'grant revoked');
    } catch (e) {
      this.log.warn({ request_id: requestId, connection: record.id, err: e }, 'revocation failed');
    }
  }
}


export async function readTokenResponse(provider: Provider, auth: OAuth2Auth | ClientCredentialsAuth, data: Record<string, unknown>, type: 'oauth2' | 'oauth2_client_credentials'): Promise<TokenResult> {
  const pick = auth.token_response ?? {};
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
  const metadata: Record<string, unknown> = {};
  for (const [name, expr] of Object.entries(pick.metadata ?? {})) metadata[name] = await expr.evaluate(data);
  const config: Record<string, string> = {};
  for (const [name, field] of Object.entries(provider.connection_config ?? {})) {
    if (!field.from_token_response) continue;
    const v = await field.from_token_response.evaluate(data);
    if (typeof v !== 'string' || !new RegExp(`^(?:${field.pattern})$`).test(v)) {
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

function isExpired(expiresAt: string | undefined, bufferSeconds: number): boolean {
  return expiresAt !== undefined && Date.parse(expiresAt) - bufferSeconds * 1000 <= Date.now();
}

function needsRefresh(provider: Provider, credentials: Credentials): boolean {
  const buffer = 'refresh_buffer_seconds' in provider.auth ? provider.auth.refresh_buffer_seconds ?? 300 : 300;
  if (credentials.type === 'oauth2') return isExpired(credentials.expires_at, buffer);
  if (credentials.type === 'oauth2_client_credentials') return !credentials.access_token || isExpired(credentials.expires_at, buffer);
  return false;
}

/** Checks credentials with the provider's verification request, where its file declares one. */
export async function verifyCredentials(provider: Provider, config: Record<string, string>, credentials: Credentials): Promise<void> {
  if (!provider.verification) return;
  const res = await callProvider(apiRequest(provider, templateValues(config, credentials), provider.verification.request), { max_attempts: 2 });
  if (res.status === 401 || res.status === 403) throw badRequest('invalid_credentials', `${provider.display_name} rejected these credentials (HTTP ${res.status}): check them and try again`);
  if (res.status >= 400) throw providerFailed(`${provider.display_name} could not check the credentials (HTTP ${res.status})`);
}
