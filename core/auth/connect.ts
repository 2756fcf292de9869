import { createHash, randomBytes } from 'node:crypto';
import { AuthEngine, OAuthError, verifyCredentials } from './tokens.ts';
import type { Credentials } from './connections.ts';
import { checkConnectionConfig, parseCredentials } from './connections.ts';
import { badRequest, TerapiError } from '../errors.ts';
import { checkKey, type Integrations } from './integrations.ts';
import type { Logger } from '../logger.ts';
import type { OAuth2Auth } from '../format/provider-types.ts';
import { Store } from '../store/store.ts';
import { own } from '../own.ts';
import { checkJson, MAX_METADATA_BYTES } from '../json-limits.ts';

export const SESSION_TTL_MS = 30 * 60_000;
export const STATE_TTL_MS = 10 * 60_000;

/** What the app allows one end user to connect, handed to the browser as a short-lived token. */
export interface ConnectSession {
  connection_id: string;
  allowed_integrations: string[];
  connection_config: Record<string, Record<string, string>>;
  metadata: Record<string, unknown>;
  expires_at: string;
}

interface OAuthState {
  session_token: string;
  integration: string;
  verifier?: string;
  connection_config: Record<string, string>;
}

/** The end of a connect flow, for the page that reports to the opener window. */
export type ConnectOutcome =
  | { ok: true; provider_config_key: string; connection_id: string }
  | { ok: false; error: string; message: string; provider_config_key?: string; connection_id?: string };

export type FinishConnection = (input: { integration: string; connection_id: string; credentials: Credentials; connection_config: Record<string, string>; metadata: Record<string, unknown>; replace: boolean }) => Promise<unknown>;

const sessionKey = (token: string) => Store.key('connect_session', hash(token));
const stateKey = (state: string) => Store.key('oauth_state', hash(state));
// Tokens are kept by their hash: a read of the database gives nothing a browser could use.
const hash = (s: string) => createHash('sha256').update(s).digest('hex');
const token = () => randomBytes(32).toString('base64url');

/**
 * The end-user connect flow: a session made by the app with its secret key, then in the browser
 * either the OAuth 2 redirect and callback (state single-use, PKCE S256 where the provider allows
 * it) or a form that posts an API key or password.
 */
export class ConnectFlow {
  constructor(
    private readonly store: Store,
    private readonly integrations: Integrations,
    private readonly auth: AuthEngine,
    private readonly finish: FinishConnection,
    private readonly config: { publicUrl: string },
    private readonly log: Logger,
  ) {}

  /** The redirect URI to register with each provider's OAuth app. */
  get callbackUrl() {
    return `${this.config.publicUrl}/oauth/callback`;
  }

  async createSession(input: { connection_id: string; allowed_integrations: string[]; connection_config?: Record<string, Record<string, string>>; metadata?: Record<string, unknown> }): Promise<{ token: string; expires_at: string }> {
    checkKey(input.connection_id, 'connection_id');
    checkJson(input.metadata, 'metadata', MAX_METADATA_BYTES);
    if (!input.allowed_integrations.length) throw badRequest('invalid_request', 'allowed_integrations must name at least one integration');
    for (const key of input.allowed_integrations) {
      const { provider } = await this.integrations.withProvider(key);
      checkConnectionConfig(provider, own(input.connection_config, key) ?? {}, 'before_auth');
    }
    for (const key of Object.keys(input.connection_config ?? {})) {
      if (!input.allowed_integrations.includes(key)) throw badRequest('invalid_request', `connection_config names "${key}", which is not in allowed_integrations`);
    }
    const expires_at = new Date(Date.now() + SESSION_TTL_MS).toISOString();
    const session: ConnectSession = { connection_id: input.connection_id, allowed_integrations: input.allowed_integrations, connection_config: input.connection_config ?? {}, metadata: input.metadata ?? {}, expires_at };
    const t = `cs_${token()}`;
    await this.store.set(sessionKey(t), session, SESSION_TTL_MS);
    return { token: t, expires_at };
  }

  async session(sessionToken: string | undefined, integration: string): Promise<ConnectSession> {
    const session = sessionToken ? await this.store.get<ConnectSession>(sessionKey(sessionToken)) : undefined;
    if (!session) throw new TerapiError(401, 'invalid_session', 'this connect session is unknown or has expired: ask the app for a new one');
    if (!session.allowed_integrations.includes(integration)) throw new TerapiError(403, 'integration_not_allowed', `this connect session does not allow integration "${integration}"`);
    return session;
  }

  /** The provider's authorization URL to send the browser to. */
  async authorizationUrl(sessionToken: string | undefined, integrationKey: string): Promise<string> {
    const session = await this.session(sessionToken, integrationKey);
    const { integration, provider } = await this.integrations.withProvider(integrationKey);
    if (provider.auth.mode !== 'oauth2') throw badRequest('not_oauth', `integration "${integrationKey}" uses ${provider.auth.mode} auth: post the credentials to /connect/${integrationKey}/credentials instead`);
    const auth: OAuth2Auth = provider.auth;
    const config = checkConnectionConfig(provider, own(session.connection_config, integrationKey) ?? {}, 'before_auth');
    const state = token();
    const verifier = auth.pkce ? token() : undefined;
    await this.store.set(stateKey(state), { session_token: sessionToken!, integration: integrationKey, verifier, connection_config: config } satisfies OAuthState, STATE_TTL_MS);
    const url = new URL(auth.authorization_url.renderUrl(config));
    for (const [k, t] of Object.entries(auth.authorization_params ?? {})) url.searchParams.set(k, t.renderText(config));
    url.searchParams.set('response_type', 'code');
    url.searchParams.set('client_id', integration.oauth_client_id ?? '');
    url.searchParams.set('redirect_uri', this.callbackUrl);
    url.searchParams.set('state', state);
    const scopes = integration.oauth_scopes ?? auth.scopes ?? [];
    if (scopes.length) url.searchParams.set(auth.scope_param ?? 'scope', scopes.join(auth.scope_separator ?? ' '));
    if (verifier) {
      url.searchParams.set('code_challenge', createHash('sha256').update(verifier).digest('base64url'));
      url.searchParams.set('code_challenge_method', 'S256');
    }
    return url.toString();
  }

  /** The OAuth callback. Never throws: every failure is an outcome for the page, and is logged. */
  async callback(query: Record<string, string | undefined>): Promise<ConnectOutcome> {
    const fail = (error: string, message: string, extra: Partial<ConnectOutcome> = {}): ConnectOutcome => {
      this.log.warn({ error, ...extra }, `connect flow failed: ${message}`);
      return { ok: false, error, message, ...extra } as ConnectOutcome;
    };
    // Taken, not read: a state works once, whatever happens next.
    const state = query.state ? await this.store.take<OAuthState>(stateKey(query.state)).catch(() => undefined) : undefined;
    if (!state) return fail('invalid_state', 'this sign-in link is unknown, was already used, or has expired: start again from the app');
    const session = await this.store.get<ConnectSession>(sessionKey(state.session_token));
    const where = { provider_config_key: state.integration, connection_id: session?.connection_id };
    if (!session) return fail('invalid_session', 'the connect session expired during sign-in: start again from the app', where);
    if (query.error) return fail(query.error, `the provider answered ${query.error}${query.error_description ? `: ${query.error_description}` : ''}`, where);
    if (!query.code) return fail('missing_code', 'the provider sent no authorization code', where);
    try {
      const { integration, provider } = await this.integrations.withProvider(state.integration);
      if (provider.auth.mode !== 'oauth2') return fail('not_oauth', 'this integration no longer uses OAuth 2', where);
      const result = await this.auth.exchangeCode(provider, provider.auth, integration, state.connection_config, query.code, this.callbackUrl, state.verifier);
      await this.finish({
        integration: state.integration,
        connection_id: session.connection_id,
        credentials: result.credentials,
        connection_config: { ...state.connection_config, ...result.config },
        metadata: { ...session.metadata, ...result.metadata },
        replace: true,
      });
      this.log.info(where, 'connection made through the connect flow');
      return { ok: true, provider_config_key: state.integration, connection_id: session.connection_id };
    } catch (e) {
      if (e instanceof OAuthError) return fail('token_exchange_failed', `the provider refused the authorization code: ${e.message}`, where);
      if (e instanceof TerapiError) return fail(e.code, e.message, where);
      return fail('token_exchange_failed', (e as Error).message, where);
    }
  }

  /** API key and basic integrations: the browser posts the credentials, checked with the provider first. */
  async postCredentials(sessionToken: string | undefined, integrationKey: string, input: Record<string, unknown>): Promise<{ provider_config_key: string; connection_id: string }> {
    const session = await this.session(sessionToken, integrationKey);
    const { provider } = await this.integrations.withProvider(integrationKey);
    if (provider.auth.mode !== 'api_key' && provider.auth.mode !== 'basic') {
      throw badRequest('not_credentials', `integration "${integrationKey}" uses ${provider.auth.mode}: use GET /oauth/connect/${integrationKey}`);
    }
    const credentials = parseCredentials(provider, { type: provider.auth.mode, ...input });
    const config = checkConnectionConfig(provider, own(session.connection_config, integrationKey) ?? {});
    await verifyCredentials(provider, config, credentials);
    await this.finish({ integration: integrationKey, connection_id: session.connection_id, credentials, connection_config: config, metadata: session.metadata, replace: true });
    return { provider_config_key: integrationKey, connection_id: session.connection_id };
  }
}
