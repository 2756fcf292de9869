import { createHmac, randomBytes } from 'node:crypto';

/** The keys that sign an OAuth 1.0a request: the client's (consumer) and, once granted, the token's. */
export interface OAuth1Keys {
  consumerKey: string;
  consumerSecret: string;
  token?: string;
  tokenSecret?: string;
}

/** RFC 3986 percent-encoding, as OAuth 1.0a wants it (RFC 5849, 3.6): also ! ' ( ) *. */
const enc = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/**
 * The Authorization header of a request signed with HMAC-SHA1 (RFC 5849, 3.4): the signature covers
 * the method, the URL without its query, and every parameter (oauth_*, the query's, a form body's),
 * sorted. `extra` adds oauth_* parameters of the handshake (oauth_callback, oauth_verifier).
 */
export function oauth1Header(method: string, url: URL, keys: OAuth1Keys, form: Record<string, string> = {}, extra: Record<string, string> = {}, now = Date.now()): string {
  const oauth: Record<string, string> = {
    oauth_consumer_key: keys.consumerKey,
    oauth_nonce: randomBytes(16).toString('hex'),
    oauth_signature_method: 'HMAC-SHA1',
    oauth_timestamp: String(Math.floor(now / 1000)),
    oauth_version: '1.0',
    ...(keys.token ? { oauth_token: keys.token } : {}),
    ...extra,
  };
  const params: [string, string][] = [...Object.entries(oauth), ...url.searchParams.entries(), ...Object.entries(form)].map(([k, v]) => [enc(k), enc(v)]);
  params.sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  // The URL parser already lower-cases scheme and host and drops a default port (RFC 5849, 3.4.1.2).
  const base = `${url.protocol}//${url.host}${url.pathname}`;
  const text = [method.toUpperCase(), enc(base), enc(params.map(([k, v]) => `${k}=${v}`).join('&'))].join('&');
  const signature = createHmac('sha1', `${enc(keys.consumerSecret)}&${enc(keys.tokenSecret ?? '')}`).update(text).digest('base64');
  return `OAuth ${Object.entries({ ...oauth, oauth_signature: signature }).map(([k, v]) => `${enc(k)}="${enc(v)}"`).join(', ')}`;
}
