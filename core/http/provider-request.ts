import type { Credentials } from '../auth/connections.ts';
import type { HttpRequest } from './send.ts';
import type { Provider, RequestSpec } from '../format/provider-types.ts';
import { oauth1Header, type OAuth1Keys } from '../auth/oauth1.ts';

/** Where template values carry an OAuth 1.0a connection's signing keys: a symbol, so no template can name them. */
export const OAUTH1_KEYS = Symbol('oauth1 keys');

/** HTTP basic credentials: base64 of `username:password`. */
export const basicAuth = (username: string, password: string) => Buffer.from(`${username}:${password}`).toString('base64');

/** The values templates may name for a connection: its configuration and its credentials. */
export function templateValues(config: Record<string, string>, credentials: Credentials, clientId?: string): Record<string, unknown> {
  const values: Record<string, unknown> = { ...config };
  switch (credentials.type) {
    case 'oauth2':
    case 'oauth2_client_credentials':
      values.access_token = credentials.access_token;
      values.client_id = (credentials.type === 'oauth2_client_credentials' && credentials.client_id) || clientId;
      break;
    case 'jwt_bearer':
      values.access_token = credentials.access_token;
      break;
    case 'oauth1':
      values.access_token = credentials.token;
      values.client_id = clientId;
      break;
    case 'api_key':
      values.api_key = credentials.api_key;
      if (credentials.access_token) values.access_token = credentials.access_token;
      break;
    case 'basic':
      values.username = credentials.username;
      values.password = credentials.password;
      values.basic_auth = basicAuth(credentials.username, credentials.password);
      // A token exchange's token (auth.token_exchange): it, not the password, goes on API requests.
      if (credentials.access_token) values.access_token = credentials.access_token;
      break;
  }
  return values;
}

/**
 * Builds a request to the provider's API: base URL, default headers, the request's own params and
 * headers, and the credentials where the provider file says they go. The one place credentials
 * are put on an outgoing request.
 */
export function apiRequest(provider: Provider, values: Record<string, unknown>, spec: Pick<RequestSpec, 'method' | 'path' | 'params' | 'headers'>, extra: { json?: unknown; searchParams?: Record<string, string>; headers?: Record<string, string> } = {}): HttpRequest {
  const path = spec.path.renderUrl(values);
  const url = path.startsWith('/') ? `${provider.api.base_url.renderUrl(values).replace(/\/$/, '')}${path}` : path;
  const headers: Record<string, string> = { accept: 'application/json' };
  for (const [k, t] of Object.entries(provider.api.headers ?? {})) headers[k.toLowerCase()] = t.renderText(values);
  for (const [k, t] of Object.entries(spec.headers ?? {})) headers[k.toLowerCase()] = t.renderText(values);
  Object.assign(headers, lowerKeys(extra.headers ?? {}));
  const searchParams: Record<string, string> = {};
  for (const [k, t] of Object.entries(spec.params ?? {})) searchParams[k] = t.renderText(values);
  Object.assign(searchParams, extra.searchParams);
  injectCredentials(provider, values, headers, searchParams);
  const req: HttpRequest = { method: spec.method ?? 'GET', url, headers, searchParams, json: extra.json, timeoutMs: provider.api.timeout_seconds === undefined ? undefined : provider.api.timeout_seconds * 1000 };
  // OAuth 1.0a: each attempt is signed with the URL it goes to (a next page's, with its query).
  const keys = (values as { [OAUTH1_KEYS]?: OAuth1Keys })[OAUTH1_KEYS];
  if (provider.auth.mode === 'oauth1' && !provider.api.credentials && keys) req.sign = (target, sent) => ({ authorization: oauth1Header(sent.method, target, keys, sent.form) });
  return req;
}

function injectCredentials(provider: Provider, values: Record<string, unknown>, headers: Record<string, string>, searchParams: Record<string, string>) {
  const declared = provider.api.credentials;
  if (declared) {
    const value = declared.value.renderText(values);
    if (declared.in === 'header') headers[declared.name.toLowerCase()] = value;
    else searchParams[declared.name] = value;
    return;
  }
  if (provider.auth.mode === 'oauth1') return; // signed when sent
  if (values.access_token) headers.authorization = `Bearer ${values.access_token}`;
  else if (values.basic_auth) headers.authorization = `Basic ${values.basic_auth}`;
}

const lowerKeys = (h: Record<string, string>) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
