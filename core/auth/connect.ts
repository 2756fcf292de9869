import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Sealer } from './crypto.ts';
import { AuthEngine, OAuthError, verifyCredentials } from './tokens.ts';
import type { Credentials } from './connections.ts';
import { checkConnectionConfig, filledLater, parseCredentials } from './connections.ts';
import { badRequest, reworded, TerapiError } from '../errors.ts';
import { checkKey, type Integrations } from './integrations.ts';
import type { Logger } from '../logger.ts';
import type { AuthOAuth1, OAuth2Auth, Provider } from '../format/provider-types.ts';
import type { IntegrationRecord } from './integrations.ts';
import { oauth1Header, type OAuth1Keys } from './oauth1.ts';
import { callProvider, providerFailed, providerWords } from '../http/send.ts';
import { Store } from '../store/store.ts';
import { own } from '../own.ts';
import { checkJson, MAX_METADATA_BYTES } from '../json-limits.ts';
import { fullMatch } from '../expression/regex.ts';

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

/** A flow between the redirect to the provider and its callback; kept 10 minutes, taken once. */
interface OAuthState {
  /** The connect session's key, the hash of its token: the token itself is never stored. */
  session: string;
  integration: string;
  /** The integration's id when the flow started: an integration made since under the same key is not this one. */
  integration_id?: string;
  /** The PKCE verifier, sealed like credentials. */
  verifier?: string;
  /** The hash of the cookie value given to the browser that started the flow. */
  browser: string;
  connection_config: Record<string, string>;
  /** OAuth 1.0a: the request token the end user authorises, and its secret (sealed). */
  oauth1?: { token: string; secret: string };
}

/** The cookie that binds a flow to the browser that started it, for the server to set with the redirect. */
export interface BrowserCookie {
  name: string;
  value: string;
  maxAgeSeconds: number;
}

/** The end of a connect flow, for the page that reports to the opener window. */
export type ConnectOutcome =
  | { ok: true; provider_config_key: string; connection_id: string }
  | { ok: false; error: string; message: string; provider_config_key?: string; connection_id?: string };

/** A field the end user fills in the connect UI: a credential, or a connection_config value. */
export interface ConnectField {
  name: string;
  /** What the provider file calls it (auth.label, username_label...), for credentials. */
  label?: string;
  description?: string;
  /** RE2 syntax, matched against the whole value (anchored). */
  pattern?: string;
  example?: string;
  /** The value used when the end user leaves the field empty. */
  default?: string;
  optional: boolean;
  /** Shown masked, never echoed back. */
  secret: boolean;
  /** url: an https origin such as https://acme.example.com. */
  format?: 'text' | 'url';
}

/** What a connect session lets its browser do (GET /connect/session): the connect UI is drawn from it. */
export interface ConnectSessionView {
  connection_id: string;
  expires_at: string;
  integrations: {
    provider_config_key: string;
    provider: string;
    display_name: string;
    logo?: string;
    auth_mode: string;
    credentials: ConnectField[];
    connection_config: ConnectField[];
  }[];
}

export type FinishConnection = (input: { integration: string; connection_id: string; credentials: Credentials; connection_config: Record<string, string>; metadata: Record<string, unknown>; replace: boolean }) => Promise<unknown>;

const sessionKey = (token: string) => Store.key('connect_session', hash(token));
const stateKey = (state: string) => Store.key('oauth_state', hash(state));
/** One cookie per flow, named after its state: two flows in two popups of one browser do not collide. */
const cookieName = (state: string) => `terapi_connect_${hash(state).slice(0, 16)}`;
const sameHash = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
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
    private readonly sealer: Sealer,
    private readonly log: Logger,
  ) {}

  /** The redirect URI to register with each provider's OAuth app. */
  get callbackUrl() {
    return `${this.config.publicUrl}/oauth/callback`;
  }

  async createSession(input: { connection_id: string; allowed_integrations: string[]; connection_config?: Record<string, Record<string, string>>; metadata?: Record<string, unknown> }): Promise<{ token: string; expires_at: string }> {
    checkKey(input.connection_id, 'connection_id');
    checkJson(input.metadata, 'metadata', { maxBytes: MAX_METADATA_BYTES, storable: true });
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

  async session(sessionToken: string | undefined, integration?: string): Promise<ConnectSession> {
    const session = sessionToken ? await this.store.get<ConnectSession>(sessionKey(sessionToken)) : undefined;
    if (!session) throw new TerapiError(401, 'invalid_session', 'this connect session is unknown or has expired: ask the app for a new one');
    if (integration !== undefined && !session.allowed_integrations.includes(integration)) throw new TerapiError(403, 'integration_not_allowed', `this connect session does not allow integration "${integration}"`);
    return session;
  }

  /**
   * What the connect UI shows for a session: each allowed integration that still exists, how it
   * connects, and the fields the end user fills in (those the app did not set in the session, and
   * not those the provider fills after connecting).
   */
  async describe(sessionToken: string | undefined): Promise<ConnectSessionView> {
    const session = await this.session(sessionToken);
    const integrations: ConnectSessionView['integrations'] = [];
    for (const key of session.allowed_integrations) {
      const found = await this.integrations.withProvider(key).catch((e) => {
        if ((e as TerapiError).status === 404) return undefined; // deleted since the session was made
        throw e;
      });
      if (!found) continue;
      const { provider } = found;
      const preset = own(session.connection_config, key) ?? {};
      integrations.push({
        provider_config_key: key,
        provider: provider.name,
        display_name: provider.display_name,
        ...(provider.logo ? { logo: provider.logo } : {}),
        auth_mode: provider.auth.mode,
        credentials: credentialFields(provider),
        connection_config: Object.entries(provider.connection_config ?? {})
          .filter(([name]) => preset[name] === undefined && !filledLater(provider).has(name))
          .map(([name, f]) => ({ name, ...(f.description ? { description: f.description } : {}), pattern: f.pattern, ...(f.example ? { example: f.example } : {}), ...(f.default ? { default: f.default } : {}), optional: (f.optional ?? false) || f.default !== undefined, secret: false, format: f.format ?? 'text' })),
      });
    }
    return { connection_id: session.connection_id, expires_at: session.expires_at, integrations };
  }

  /**
   * The provider's authorization URL to send the browser to, and the cookie to set in that browser:
   * the callback needs it back, so that a victim who opens someone else's authorization URL cannot
   * end up with that person's account stored as theirs (login CSRF).
   */
  async authorizationUrl(sessionToken: string | undefined, integrationKey: string, given: Record<string, unknown> = {}): Promise<{ url: string; cookie: BrowserCookie }> {
    const session = await this.session(sessionToken, integrationKey);
    const { integration, provider } = await this.integrations.withProvider(integrationKey);
    if (provider.auth.mode === 'oauth1') return this.oauth1Start(sessionToken!, session, integrationKey, integration, provider, provider.auth, given);
    if (provider.auth.mode !== 'oauth2') throw badRequest('not_oauth', `integration "${integrationKey}" uses ${provider.auth.mode} auth: post the credentials to /connect/${integrationKey}/credentials instead`);
    const auth: OAuth2Auth = provider.auth;
    const config = sessionConfig(provider, session, integrationKey, given, 'before_auth');
    const state = token();
    const verifier = auth.pkce ? token() : undefined;
    const browser = token();
    const kept: OAuthState = { session: hash(sessionToken!), integration: integrationKey, integration_id: integration.id, verifier: verifier && this.sealer.seal(verifier), browser: hash(browser), connection_config: config };
    await this.store.set(stateKey(state), kept, STATE_TTL_MS);
    const url = new URL(auth.authorization_url.renderUrl(config));
    const scopes = integration.oauth_scopes ?? auth.scopes ?? [];
    const values = { ...config, client_id: integration.oauth_client_id ?? '', scopes: scopes.join(auth.scope_separator ?? ' ') };
    for (const [k, t] of Object.entries(auth.authorization_params ?? {})) url.searchParams.set(k, t.renderText(values));
    url.searchParams.set('response_type', 'code');
    url.searchParams.set('client_id', integration.oauth_client_id ?? '');
    url.searchParams.set('redirect_uri', this.callbackUrl);
    url.searchParams.set('state', state);
    if (scopes.length) url.searchParams.set(auth.scope_param ?? 'scope', scopes.join(auth.scope_separator ?? ' '));
    if (verifier) {
      url.searchParams.set('code_challenge', createHash('sha256').update(verifier).digest('base64url'));
      url.searchParams.set('code_challenge_method', 'S256');
    }
    return { url: url.toString(), cookie: { name: cookieName(state), value: browser, maxAgeSeconds: STATE_TTL_MS / 1000 } };
  }

  /**
   * OAuth 1.0a's first leg: a request token, asked for with the consumer key and secret and the
   * callback (which carries the flow's state, since OAuth 1.0a has none of its own), then the
   * provider's authorization URL for that token.
   */
  private async oauth1Start(sessionToken: string, session: ConnectSession, integrationKey: string, integration: IntegrationRecord, provider: Provider, auth: AuthOAuth1, given: Record<string, unknown>): Promise<{ url: string; cookie: BrowserCookie }> {
    const config = sessionConfig(provider, session, integrationKey, given, 'before_auth');
    const state = token();
    const browser = token();
    const keys = { consumerKey: integration.oauth_client_id ?? '', consumerSecret: this.integrations.clientSecret(integration) ?? '' };
    const callback = `${this.callbackUrl}?state=${encodeURIComponent(state)}`;
    const got = await oauth1Leg('POST', auth.request_token_url.renderUrl(config), keys, { oauth_callback: callback });
    if (!got.oauth_token || !got.oauth_token_secret) throw providerFailed(`${provider.display_name} gave no request token`);
    const kept: OAuthState = { session: hash(sessionToken), integration: integrationKey, integration_id: integration.id, browser: hash(browser), connection_config: config, oauth1: { token: got.oauth_token, secret: this.sealer.seal(got.oauth_token_secret) } };
    await this.store.set(stateKey(state), kept, STATE_TTL_MS);
    const url = new URL(auth.authorization_url.renderUrl(config));
    const values = { ...config, client_id: integration.oauth_client_id ?? '', scopes: (integration.oauth_scopes ?? []).join(',') };
    for (const [k, t] of Object.entries(auth.authorization_params ?? {})) url.searchParams.set(k, t.renderText(values));
    url.searchParams.set('oauth_token', got.oauth_token);
    return { url: url.toString(), cookie: { name: cookieName(state), value: browser, maxAgeSeconds: STATE_TTL_MS / 1000 } };
  }

  /** OAuth 1.0a's last leg: the authorised request token and its verifier traded for the connection's token. */
  private async oauth1Finish(provider: Provider, auth: AuthOAuth1, integration: IntegrationRecord, state: OAuthState, query: Record<string, string | undefined>): Promise<Credentials> {
    if (!state.oauth1 || query.oauth_token !== state.oauth1.token) throw badRequest('invalid_callback', 'the provider sent back another request token than the one this sign-in started with: nothing was stored');
    if (!query.oauth_verifier) throw badRequest('missing_code', 'the provider sent no oauth_verifier');
    const keys = { consumerKey: integration.oauth_client_id ?? '', consumerSecret: this.integrations.clientSecret(integration) ?? '', token: state.oauth1.token, tokenSecret: this.sealer.open<string>(state.oauth1.secret) };
    const got = await oauth1Leg('POST', auth.access_token_url.renderUrl(state.connection_config), keys, { oauth_verifier: query.oauth_verifier });
    if (!got.oauth_token || !got.oauth_token_secret) throw badRequest('token_exchange_failed', `${provider.display_name} gave no access token for the verifier`);
    return { type: 'oauth1', token: got.oauth_token, token_secret: got.oauth_token_secret };
  }

  /**
   * The OAuth callback; `cookie` reads a cookie the browser sent. Never throws: every failure is an
   * outcome for the page, and is logged (with `requestId`).
   */
  async callback(query: Record<string, string | undefined>, cookie: (name: string) => string | undefined, requestId?: string): Promise<ConnectOutcome> {
    let scrub = (text: string) => text;
    const fail = (error: string, message: string, extra: Partial<ConnectOutcome> = {}): ConnectOutcome => {
      message = scrub(message);
      this.log.warn({ request_id: requestId, error, ...extra }, `connect flow failed: ${message}`);
      return { ok: false, error, message, ...extra } as ConnectOutcome;
    };
    // Taken, not read: a state works once, whatever happens next.
    const state = query.state ? await this.store.take<OAuthState>(stateKey(query.state)).catch(() => undefined) : undefined;
    if (!state) return fail('invalid_state', 'this sign-in link is unknown, was already used, or has expired: start again from the app');
    const browser = cookie(cookieName(query.state!));
    if (!browser || !sameHash(hash(browser), state.browser)) {
      return fail('wrong_browser', 'this sign-in was not started in this browser (or the browser did not send its cookie back): start again from the app, in this browser');
    }
    const session = await this.store.get<ConnectSession>(Store.key('connect_session', state.session)).catch(() => undefined);
    const where = { provider_config_key: state.integration, connection_id: session?.connection_id };
    if (!session) return fail('invalid_session', 'the connect session expired during sign-in: start again from the app', where);
    try {
      const { integration, provider } = await this.integrations.withProvider(state.integration);
      if ((integration.id ?? '') !== (state.integration_id ?? '')) return fail('integration_changed', 'the integration was deleted and made again during sign-in: start again from the app', where);
      if (provider.auth.mode === 'oauth1') {
        scrub = this.auth.scrubber(integration, undefined, query.oauth_verifier);
        if (query.denied) return fail('access_denied', 'the end user did not allow access', where);
        const credentials = await this.oauth1Finish(provider, provider.auth, integration, state, query);
        await this.finish({ integration: state.integration, connection_id: session.connection_id, credentials, connection_config: state.connection_config, metadata: session.metadata, replace: true });
        this.log.info({ request_id: requestId, ...where }, 'connection made through the connect flow');
        return { ok: true, provider_config_key: state.integration, connection_id: session.connection_id };
      }
      if (provider.auth.mode !== 'oauth2') return fail('not_oauth', 'this integration no longer uses OAuth 2', where);
      const verifier = state.verifier ? this.sealer.open<string>(state.verifier) : undefined;
      scrub = this.auth.scrubber(integration, undefined, query.code, verifier);
      // RFC 9207: where the provider names its issuer, an answer from any other server is refused.
      const issuer = provider.auth.issuer;
      if (issuer !== undefined && query.iss !== issuer) {
        return fail('issuer_mismatch', `the sign-in answer names ${query.iss ? `the issuer ${JSON.stringify(query.iss)}` : 'no issuer'}, not ${issuer}: it may come from another authorization server, so nothing was stored`, where);
      }
      if (query.error) return fail(query.error, `the provider answered ${query.error}${query.error_description ? `: ${query.error_description}` : ''}`, where);
      if (!query.code) return fail('missing_code', 'the provider sent no authorization code', where);
      // Values the provider sends back with the code (Shopify's shop): checked before the token URL may use them.
      const config = { ...state.connection_config, ...callbackConfig(provider, query) };
      const result = await this.auth.exchangeCode(provider, provider.auth, integration, config, query.code, this.callbackUrl, verifier);
      await this.finish({
        integration: state.integration,
        connection_id: session.connection_id,
        credentials: result.credentials,
        connection_config: { ...config, ...result.config },
        metadata: { ...session.metadata, ...result.metadata },
        replace: true,
      });
      this.log.info({ request_id: requestId, ...where }, 'connection made through the connect flow');
      return { ok: true, provider_config_key: state.integration, connection_id: session.connection_id };
    } catch (e) {
      if (e instanceof OAuthError) return fail('token_exchange_failed', `the provider refused the authorization code: ${e.message}`, where);
      if (e instanceof TerapiError) return fail(e.code, e.message, where);
      return fail('token_exchange_failed', (e as Error).message, where);
    }
  }

  /**
   * Integrations without an OAuth redirect: the browser posts the API key or the username and
   * password (checked with the provider first), or for client-credentials and no-auth providers
   * nothing but the connection_config values the end user fills in.
   */
  async postCredentials(sessionToken: string | undefined, integrationKey: string, input: { connection_config?: Record<string, unknown> } & Record<string, unknown>): Promise<{ provider_config_key: string; connection_id: string }> {
    const session = await this.session(sessionToken, integrationKey);
    const { integration, provider } = await this.integrations.withProvider(integrationKey);
    if (provider.auth.mode === 'oauth2' || provider.auth.mode === 'oauth1') {
      throw badRequest('not_credentials', `integration "${integrationKey}" uses oauth2: the end user signs in at the provider (POST /connect/${integrationKey}/oauth)`);
    }
    const { connection_config: given, ...fields } = input;
    const mode = provider.auth.mode;
    const typed = mode === 'api_key' || mode === 'basic' || mode === 'jwt_bearer' || (mode === 'oauth2_client_credentials' && Object.keys(fields).length);
    const credentials = parseCredentials(provider, typed ? { type: mode, ...fields } : Object.keys(fields).length ? fields : undefined);
    const config = sessionConfig(provider, session, integrationKey, given ?? {}, 'complete');
    try {
      await verifyCredentials(provider, config, credentials);
    } catch (e) {
      throw reworded(e, this.auth.scrubber(integration, credentials));
    }
    await this.finish({ integration: integrationKey, connection_id: session.connection_id, credentials, connection_config: config, metadata: session.metadata, replace: true });
    return { provider_config_key: integrationKey, connection_id: session.connection_id };
  }
}

/**
 * A connection's configuration from the connect UI: the values the app set in the session, and
 * those the end user gave for the other fields (a value the app set cannot be changed by the end
 * user), checked against the provider's fields.
 */
function sessionConfig(provider: Provider, session: ConnectSession, key: string, given: Record<string, unknown>, stage: 'before_auth' | 'complete'): Record<string, string> {
  const preset = own(session.connection_config, key) ?? {};
  for (const name of Object.keys(given)) {
    if (Object.hasOwn(preset, name)) throw badRequest('invalid_connection_config', `connection_config.${name} is set by the app for this connect session and cannot be changed here`);
  }
  return checkConnectionConfig(provider, { ...given, ...preset }, stage);
}

/**
 * One leg of the OAuth 1.0a handshake: a signed POST whose answer is form-encoded (RFC 5849, 2.1
 * and 2.3). A refusal is the provider's words as a 502 (a consumer key it does not know).
 */
async function oauth1Leg(method: string, url: string, keys: OAuth1Keys, extra: Record<string, string>): Promise<Record<string, string>> {
  const res = await callProvider({ method, url, headers: { accept: 'application/x-www-form-urlencoded, application/json' }, sign: (target) => ({ authorization: oauth1Header(method, target, keys, {}, extra) }) }, { statuses: [500, 502, 503, 504], max_attempts: 2 });
  if (res.status >= 400) throw providerFailed(`the OAuth 1.0a ${extra.oauth_verifier ? 'access' : 'request'} token request failed (HTTP ${res.status})${providerWords(res.body) ? `: ${providerWords(res.body)}` : ''}`);
  return typeof res.body === 'object' && res.body ? (res.body as Record<string, string>) : Object.fromEntries(new URLSearchParams(res.text));
}

/** connection_config fields with from_callback, from the OAuth callback's query, each checked against its pattern. */
function callbackConfig(provider: Provider, query: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, field] of Object.entries(provider.connection_config ?? {})) {
    if (!field.from_callback) continue;
    const value = own(query, field.from_callback);
    if (value === undefined || !fullMatch(field.pattern, value)) {
      throw badRequest('invalid_callback', `the provider's callback ${value === undefined ? 'has no' : 'has an unexpected'} ${field.from_callback} parameter (connection_config.${name}): nothing was stored`);
    }
    out[name] = value;
  }
  return out;
}

/** The credentials the connect UI asks for, by auth mode. */
function credentialFields(provider: Provider): ConnectField[] {
  const auth = provider.auth;
  switch (auth.mode) {
    case 'api_key':
      return [{ name: 'api_key', label: auth.label ?? 'API key', ...(auth.pattern ? { pattern: auth.pattern } : {}), optional: false, secret: true }];
    case 'basic':
      return [
        { name: 'username', label: auth.username_label ?? 'Username', optional: false, secret: false },
        { name: 'password', label: auth.password_label ?? 'Password', optional: auth.password_optional ?? false, secret: true },
      ];
    case 'jwt_bearer':
      return [
        { name: 'issuer', label: auth.issuer_label ?? 'Issuer', optional: false, secret: false },
        { name: 'private_key', label: 'Private key (PEM)', optional: false, secret: true },
        { name: 'key_id', label: 'Key ID', optional: true, secret: false },
      ];
    case 'oauth2_client_credentials':
      // The end user's own OAuth app, where every connection brings one (an app may still give one
      // through createConnection where it is optional).
      if (auth.connection_client !== 'required') return [];
      return [
        { name: 'client_id', label: 'Client ID', optional: false, secret: false },
        { name: 'client_secret', label: 'Client secret', optional: false, secret: true },
      ];
    default:
      return [];
  }
}
