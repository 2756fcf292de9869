import { sign } from 'node:crypto';
import type { Credentials } from './connections.ts';
import { OAuthError, readTokenResponse } from './tokens.ts';
import { callProvider, providerFailed, providerWords, type HttpRequest } from '../http/send.ts';
import { templateValues } from '../http/provider-request.ts';
import { evaluate } from '../format/evaluate.ts';
import type { Template } from '../format/template.ts';
import type { AuthJwtBearer, Provider, TokenExchange } from '../format/provider-types.ts';

/** Credentials a token exchange turns into a short-lived token: a key, a password, a private key. */
export type ExchangedCredentials = Extract<Credentials, { type: 'api_key' | 'basic' | 'jwt_bearer' }>;

export const isExchanged = (c: Credentials): c is ExchangedCredentials => c.type === 'api_key' || c.type === 'basic' || c.type === 'jwt_bearer';

/** The token exchange of a provider whose auth declares one (auth.token_exchange; always in jwt_bearer). */
export const exchangeOf = (provider: Provider): TokenExchange | undefined =>
  provider.auth.mode === 'api_key' || provider.auth.mode === 'basic' || provider.auth.mode === 'jwt_bearer' ? provider.auth.token_exchange : undefined;

/** Only what the end user gave: a token from an earlier exchange is not sent to the next one. */
function given(credentials: ExchangedCredentials): ExchangedCredentials {
  switch (credentials.type) {
    case 'basic':
      return { type: 'basic', username: credentials.username, password: credentials.password };
    case 'api_key':
      return { type: 'api_key', api_key: credentials.api_key };
    case 'jwt_bearer':
      return { type: 'jwt_bearer', issuer: credentials.issuer, private_key: credentials.private_key, ...(credentials.key_id ? { key_id: credentials.key_id } : {}) };
  }
}

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/**
 * A JWT assertion signed with the connection's private key (RFC 7523): the file's claims, rendered,
 * with iat 60 s in the past (clocks drift) and exp `lifetime_seconds` after it. A claim of digits
 * only goes as a number (GitHub's iss is the app id, a number).
 */
export function signJwt(auth: AuthJwtBearer, config: Record<string, string>, credentials: Extract<Credentials, { type: 'jwt_bearer' }>, now = Date.now()): string {
  const values = { ...config, issuer: credentials.issuer, key_id: credentials.key_id };
  const iat = Math.floor(now / 1000) - 60;
  const claims: Record<string, unknown> = {};
  for (const [name, template] of Object.entries(auth.claims) as [string, Template][]) {
    const text = template.renderText(values);
    claims[name] = /^[0-9]{1,15}$/.test(text) ? Number(text) : text;
  }
  Object.assign(claims, { iat, exp: iat + (auth.lifetime_seconds ?? 3600) });
  const algorithm = auth.algorithm ?? 'RS256';
  const header = { alg: algorithm, typ: 'JWT', ...(credentials.key_id ? { kid: credentials.key_id } : {}) };
  const signing = `${b64url(header)}.${b64url(claims)}`;
  // ES256 signatures are r||s (IEEE P1363), not DER (RFC 7518, 3.4).
  const signature = sign('sha256', Buffer.from(signing), algorithm === 'ES256' ? { key: credentials.private_key, dsaEncoding: 'ieee-p1363' } : credentials.private_key);
  return `${signing}.${signature.toString('base64url')}`;
}

/**
 * Exchanges the credentials an end user gave for a token (a two-step auth: Tableau's sign-in). A
 * refusal (401, 403, or 400 invalid_grant) is an OAuthError invalid_grant, as a refused refresh is: the credentials no
 * longer work and the end user must give them again. The answer keeps the credentials given, with
 * the token and its expiry beside them; connection_config fields with from_token_response are read
 * from the response.
 */
export async function exchangeToken(provider: Provider, exchange: TokenExchange, config: Record<string, string>, credentials: ExchangedCredentials) {
  const own = given(credentials);
  let values: Record<string, unknown>;
  let bindings: Record<string, unknown>;
  if (own.type === 'jwt_bearer') {
    if (provider.auth.mode !== 'jwt_bearer') throw new Error('jwt_bearer credentials for a provider of another auth mode');
    const assertion = signJwt(provider.auth, config, own);
    values = { ...config, issuer: own.issuer, key_id: own.key_id, assertion };
    bindings = { assertion, config, credentials: { issuer: own.issuer, key_id: own.key_id } };
  } else {
    const { type: _type, ...fields } = own;
    values = templateValues(config, own);
    bindings = { credentials: fields, config };
  }
  const spec = exchange.request;
  const path = spec.path.renderUrl(values);
  const url = path.startsWith('/') ? `${provider.api.base_url.renderUrl(values).replace(/\/$/, '')}${path}` : path;
  const headers: Record<string, string> = { accept: 'application/json' };
  for (const [k, t] of Object.entries(spec.headers ?? {})) headers[k.toLowerCase()] = t.renderText(values);
  const searchParams = Object.fromEntries(Object.entries(spec.params ?? {}).map(([k, t]) => [k, t.renderText(values)]));
  const body = spec.body ? await evaluate(spec.body, {}, bindings) : undefined;
  const req: HttpRequest = { method: spec.method ?? 'POST', url, headers, searchParams };
  if (body !== undefined && exchange.format === 'form') req.form = Object.fromEntries(Object.entries(body as object).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
  else if (body !== undefined) req.json = body;
  const res = await callProvider(req, { statuses: [500, 502, 503, 504], max_attempts: 2 });
  // A refusal: 401 or 403, or an OAuth token endpoint's invalid_grant (a JWT it does not accept: RFC 7523, 3.1).
  const oauthError = (res.body as { error?: unknown } | undefined)?.error;
  if (res.status === 401 || res.status === 403 || (res.status === 400 && oauthError === 'invalid_grant')) throw new OAuthError('invalid_grant', providerWords(res.body), res.status);
  if (res.status >= 400) throw providerFailed(`${provider.display_name} answered HTTP ${res.status} to the token exchange${providerWords(res.body) ? `: ${providerWords(res.body)}` : ''}`);
  const data = (typeof res.body === 'object' && res.body ? res.body : {}) as Record<string, unknown>;
  const read = await readTokenResponse(provider, exchange.token_response, data, 'oauth2_client_credentials');
  const exchanged: ExchangedCredentials = { ...own, access_token: read.credentials.access_token, ...(read.credentials.expires_at ? { expires_at: read.credentials.expires_at } : {}) };
  return { credentials: exchanged, metadata: read.metadata, config: read.config };
}
