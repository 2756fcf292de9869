import type { Credentials } from '../auth/connections.ts';
import { TerapiError } from '../errors.ts';
import { evaluate } from '../format/evaluate.ts';
import type { Provider, RequestSpec, Retry } from '../format/provider-types.ts';
import { formFields } from './form-body.ts';
import { providerWords, truthy, type HttpRequest, type SendOptions } from './send.ts';
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
 * Builds a request to the provider's API: base URL, the API's headers and params, the request's
 * own params and headers, its body (JSON, or form fields with body_format: form), and the
 * credentials where the provider file says they go. The one place credentials are put on an
 * outgoing request.
 */
export function apiRequest(provider: Provider, values: Record<string, unknown>, spec: Pick<RequestSpec, 'method' | 'path' | 'params' | 'headers' | 'body_format'>, extra: { json?: unknown; searchParams?: Record<string, string>; headers?: Record<string, string> } = {}): HttpRequest {
  const path = spec.path.renderUrl(values);
  const url = path.startsWith('/') ? `${provider.api.base_url.renderUrl(values).replace(/\/$/, '')}${path}` : path;
  const headers: Record<string, string> = { accept: 'application/json' };
  for (const [k, t] of Object.entries(provider.api.headers ?? {})) headers[k.toLowerCase()] = t.renderText(values);
  for (const [k, t] of Object.entries(spec.headers ?? {})) headers[k.toLowerCase()] = t.renderText(values);
  Object.assign(headers, lowerKeys(extra.headers ?? {}));
  const searchParams: Record<string, string> = {};
  for (const [k, t] of Object.entries(provider.api.params ?? {})) searchParams[k] = t.renderText(values);
  for (const [k, t] of Object.entries(spec.params ?? {})) searchParams[k] = t.renderText(values);
  Object.assign(searchParams, extra.searchParams);
  injectCredentials(provider, values, headers, searchParams);
  const body = spec.body_format === 'form' ? { form: formBody(extra.json) } : { json: extra.json };
  const req: HttpRequest = { method: spec.method ?? 'GET', url, headers, searchParams, ...body, timeoutMs: provider.api.timeout_seconds === undefined ? undefined : provider.api.timeout_seconds * 1000 };
  // OAuth 1.0a: each attempt is signed with the URL it goes to (a next page's, with its query).
  const keys = (values as { [OAUTH1_KEYS]?: OAuth1Keys })[OAUTH1_KEYS];
  if (provider.auth.mode === 'oauth1' && !provider.api.credentials && keys) req.sign = (target, sent) => ({ authorization: oauth1Header(sent.method, target, keys, sent.form) });
  return req;
}

function formBody(body: unknown): Record<string, string> | undefined {
  if (body === undefined) return undefined;
  try {
    return formFields(body);
  } catch (e) {
    throw new TerapiError(502, 'expression_error', `"request.body" of a request with body_format: form gave no object of fields: ${(e as Error).message}`);
  }
}

/** Methods that may be sent twice with the effect of once (RFC 9110, 9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);

/**
 * The retry rules of one request: the API's, with the request's own merged over them (`retry:
 * false`: one attempt). A sync's request only reads, so it is always repeatable; an action's POST
 * or PATCH is not, unless declared idempotent: only the API's statuses that say the request was
 * not applied (429) are kept, and statuses the request itself lists.
 */
export function requestRetry(provider: Provider, spec: Pick<RequestSpec, 'method' | 'retry' | 'idempotent'>, reads: boolean): { retry: Retry; options: Pick<SendOptions, 'repeatable'> } {
  if (spec.retry === false) return { retry: { ...provider.api.retry, max_attempts: 1 }, options: {} };
  const own = spec.retry ?? {};
  const repeatable = reads || (spec.idempotent ?? IDEMPOTENT.has(spec.method ?? 'GET'));
  const retry: Retry = { ...provider.api.retry, ...own };
  if (!repeatable && !own.statuses) retry.statuses = (provider.api.retry?.statuses ?? [429]).filter((s) => s === 429);
  return { retry, options: { repeatable } };
}

/**
 * What the provider's error rule (the request's `error`, else the API's) finds in an answer's
 * body: the provider's message when the call failed although its status says success (GraphQL
 * errors, Slack's ok: false), undefined when it did not.
 */
export async function bodyError(provider: Provider, spec: Pick<RequestSpec, 'error'>, body: unknown, scrub?: (text: string) => string): Promise<string | undefined> {
  const rule = spec.error ?? provider.api.error;
  if (!rule || body === undefined) return undefined;
  const found = await evaluate(rule, body, {}, scrub);
  if (!truthy(found)) return undefined;
  const words = typeof found === 'string' ? found : Array.isArray(found) && found.every((f) => typeof f === 'string') ? found.join('; ') : providerWords(typeof found === 'object' ? found : body);
  const line = (words ?? 'the answer holds an error').replace(/\s+/g, ' ').trim();
  return line.length > 300 ? `${line.slice(0, 299)}…` : line;
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
