import type { Credentials } from './connections.ts';
import { basicAuth } from '../http/provider-request.ts';

/** Shorter secrets are not looked for: they would blank ordinary words out of every message. */
const MIN_LENGTH = 4;

/**
 * A connection's secrets, and its OAuth client's: tokens, keys, passwords, the client secret, and
 * the basic-auth values built from them. What must never be kept or shown in provider text.
 */
export function secretsOf(credentials: Credentials | undefined, client: { id?: string; secret?: string } = {}): string[] {
  const out: string[] = [];
  switch (credentials?.type) {
    case 'oauth2':
      out.push(credentials.access_token, credentials.refresh_token ?? '');
      break;
    case 'oauth2_client_credentials':
      out.push(credentials.access_token ?? '', credentials.client_secret ?? '');
      if (credentials.client_secret) out.push(...clientForms(credentials.client_id ?? '', credentials.client_secret));
      break;
    case 'api_key':
      out.push(credentials.api_key, credentials.access_token ?? '');
      break;
    case 'oauth1':
      out.push(credentials.token, credentials.token_secret);
      break;
    case 'jwt_bearer':
      out.push(credentials.private_key, credentials.access_token ?? '');
      break;
    case 'basic':
      out.push(credentials.password, basicAuth(credentials.username, credentials.password), credentials.access_token ?? '');
      break;
  }
  if (client.secret) out.push(client.secret, ...clientForms(client.id ?? '', client.secret));
  return out.filter((s) => s.length >= MIN_LENGTH);
}

/** An OAuth client's id and secret as basic auth, plain and form-encoded (RFC 6749, 2.3.1). */
const clientForms = (id: string, secret: string) => [basicAuth(id, secret), basicAuth(encodeURIComponent(id), encodeURIComponent(secret))];

/** The forms in which a secret comes back in a provider's text: as is, URL- or form-encoded, JSON-escaped, base64. */
function forms(secret: string): string[] {
  const base64 = Buffer.from(secret).toString('base64');
  return [secret, encodeURIComponent(secret), new URLSearchParams({ s: secret }).toString().slice(2), JSON.stringify(secret).slice(1, -1), base64, base64.replace(/=+$/, ''), Buffer.from(secret).toString('base64url')];
}

/**
 * Takes the given secrets, in each of their forms, out of a provider's text (an error body, an
 * OAuth error description, an expression's error) before it is logged, stored or answered: a
 * provider that echoes the request's credentials must not make Terapi repeat them. Longest first,
 * so that a secret inside another (a key inside its basic-auth value) cannot leave a part behind.
 */
export function scrubSecrets(text: string, secrets: Iterable<string>): string {
  const found = new Set<string>();
  for (const secret of secrets) for (const form of forms(secret)) if (form.length >= MIN_LENGTH) found.add(form);
  for (const form of [...found].sort((a, b) => b.length - a.length)) text = text.split(form).join('[redacted]');
  return text;
}

/** A scrubber for one connection's secrets. */
export const scrubberOf = (secrets: string[]) => (text: string) => (secrets.length ? scrubSecrets(text, secrets) : text);
