import { LRUCache } from 'lru-cache';
import { deepFreeze } from '../deep-freeze.ts';
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
  /** Opened values by sealed text (see open). */
  private readonly opened = new LRUCache<string, { value: unknown }>({ max: 10_000 });

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

  /**
   * The value sealed in `sealed`, deep-frozen and shared by every caller (as the store's read cache
   * shares its values): a caller that wants to change it must copy it.
   */
  open<T = unknown>(sealed: string): T {
    const known = this.opened.get(sealed);
    if (known !== undefined) return known.value as T;
    // Every sealing has its own IV, so a sealed text never changes meaning: opening it once is
    // enough. Decrypting was a seventh of a token request's time, and parsing the opened text
    // again on each read a twentieth (bench/api.ts). The process holds the key anyway, so this
    // copy exposes nothing the process could not read already.
    const value = deepFreeze(JSON.parse(this.decrypt(sealed)));
    this.opened.set(sealed, { value });
    return value as T;
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
 * differ, nor on the expected one's length: the given one is cut or padded to the expected one's
 * size and compared with timingSafeEqual, then its own length (a number, known to the caller) must
 * be the expected one's. The expected bytes are made once; hashing each given key to compare
 * digests, as before, was the largest part of the server's own work on a token read (bench/api.ts).
 */
export function secretChecker(expected: string): (given: string) => boolean {
  const want = Buffer.from(expected, 'utf8');
  const size = want.length;
  // One buffer for every check: a check runs to its end before another starts (no await inside).
  const got = Buffer.alloc(size);
  return (given) => {
    got.fill(0);
    got.write(given, 'utf8');
    return timingSafeEqual(got, want) && Buffer.byteLength(given, 'utf8') === size;
  };
}
