import { createHash, randomBytes } from 'node:crypto';
import { TerapiError } from '../errors.ts';
import { Store } from '../store/store.ts';

/** How long an operator stays signed in to the dashboard. */
export const DASHBOARD_SESSION_MS = 8 * 3600_000;

interface DashboardSession {
  /** A fingerprint of the secret key it was opened with: changing the secret key ends every session. */
  key: string;
  created_at: string;
}

const hash = (s: string) => createHash('sha256').update(s).digest('hex');
const sessionKey = (token: string) => Store.key('dashboard_session', hash(token));

/**
 * The operator dashboard's sign-in: the secret key, given once to a form, opens a session whose
 * random token lives in an HttpOnly cookie (the server sets it), so the key never sits in a URL,
 * in the page's script or in the browser's storage. Sessions are kept by the token's hash, shared
 * by every server on the store, and end after 8 hours, at sign-out, or when the secret key changes.
 */
export class DashboardSessions {
  constructor(
    private readonly store: Store,
    private readonly isSecret: (given: string) => boolean,
    private readonly secretKey: string,
  ) {}

  /** Opens a session for the holder of the secret key; answers its token. */
  async open(given: string): Promise<string> {
    if (!this.isSecret(given)) throw new TerapiError(401, 'unauthorized', "that is not this server's secret key (TERAPI_SECRET_KEY, or secret_key in the data directory's keys.json)");
    const token = randomBytes(32).toString('base64url');
    await this.store.set<DashboardSession>(sessionKey(token), { key: this.fingerprint(), created_at: new Date().toISOString() }, DASHBOARD_SESSION_MS);
    return token;
  }

  /** Whether this token is a live session opened with the current secret key. */
  async valid(token: string | undefined): Promise<boolean> {
    if (!token) return false;
    const session = await this.store.get<DashboardSession>(sessionKey(token));
    return session?.key === this.fingerprint();
  }

  async close(token: string | undefined): Promise<void> {
    if (token) await this.store.delete(sessionKey(token));
  }

  private fingerprint(): string {
    return hash(`terapi-dashboard:${this.secretKey}`).slice(0, 32);
  }
}
