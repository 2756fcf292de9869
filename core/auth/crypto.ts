import { LRUCache } from 'lru-cache';
import { TerapiError } from '../errors.ts';
import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * AES-256-GCM for credentials at rest. Each value names the key it was sealed with (the first
 * 8 hex digits of the key's SHA-256), so earlier keys can still open old values while the current
 * key seals new ones: that is how a key is rotated without losing connections (README).
 */
export class Sealer {
  private readonly keys: Map<string, Buffer>;
  private readonly currentId: string;
  /** Opened texts by sealed text (see open). */
  private readonly opened = new LRUCache<string, string>({ max: 10_000 });

  constructor(keys: Buffer[]) {
    if (!keys.length) throw new Error('an encryption key is required');
    this.keys = new Map(keys.map((k) => [keyId(k), k]));
    this.currentId = keyId(keys[0]);
  }

  seal(value: unknown): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.keys.get(this.currentId)!, iv);
    const data = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final()]);
    return ['v1', this.currentId, iv.toString('base64'), cipher.getAuthTag().toString('base64'), data.toString('base64')].join('.');
  }

  open<T = unknown>(sealed: string): T {
    const known = this.opened.get(sealed);
    if (known !== undefined) return JSON.parse(known) as T;
    const text = this.decrypt(sealed);
    // Every sealing has its own IV, so a sealed text never changes meaning: opening it once is
    // enough. Decrypting was a seventh of a token request's time (bench/api.ts). The process
    // holds the key anyway, so this copy exposes nothing the process could not read already.
    this.opened.set(sealed, text);
    return JSON.parse(text) as T;
  }

  private decrypt(sealed: string): string {
    const [version, id, iv, tag, data] = sealed.split('.');
    const key = this.keys.get(id);
    if (version !== 'v1' || !key) {
      throw new TerapiError(500, 'encryption_key_missing', `these credentials were sealed with an encryption key this server does not have (${id}): add it to TERAPI_PREVIOUS_ENCRYPTION_KEYS`);
    }
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64'));
    decipher.setAuthTag(Buffer.from(tag, 'base64'));
    return Buffer.concat([decipher.update(Buffer.from(data, 'base64')), decipher.final()]).toString('utf8');
  }

  /** Whether a value was sealed with an earlier key and should be sealed again. */
  isStale(sealed: string): boolean {
    return sealed.split('.')[1] !== this.currentId;
  }
}

const keyId = (key: Buffer) => createHash('sha256').update(key).digest('hex').slice(0, 8);

/**
 * A check of a given secret against the expected one, in time that does not depend on where they
 * differ: both sides are compared as SHA-256 digests of equal length, the expected one hashed once.
 */
export function secretChecker(expected: string): (given: string) => boolean {
  const digest = createHash('sha256').update(expected).digest();
  return (given) => timingSafeEqual(createHash('sha256').update(given).digest(), digest);
}
