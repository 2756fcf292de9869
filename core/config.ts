import { availableParallelism } from 'node:os';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DEFAULT_MAX_RESPONSE_BYTES } from './http/send.ts';

export interface Config {
  port: number;
  /** The listen address; undefined listens on every address of the machine. */
  host?: string;
  secretKey: string;
  /** Current key first, then earlier keys still accepted for reading (rotation). */
  encryptionKeys: Buffer[];
  databaseUrl?: string;
  dataDir: string;
  providersDirs: string[];
  publicUrl: string;
  webhookUrl?: string;
  logLevel: string;
  /** How long a stop waits for requests and sync runs in flight before it cuts them (runs are handed back). */
  shutdownTimeoutMs: number;
  /** A run's hold on its sync lasts this long without renewal; a run whose process died is given up after it. */
  syncLeaseMs: number;
  /** How long one sync run may wait, in all, for a provider's rate limits before it ends and resumes later. */
  syncWaitBudgetMs: number;
  /** api: serves the API only; worker: runs syncs and delivers webhooks only; all: both (the embedded mode's only role). */
  role: 'api' | 'worker' | 'all';
  /** Sync runs one process carries out at once. */
  syncConcurrency: number;
  /** The first retry of a webhook delivery waits this long; each later one twice as long. */
  webhookRetryMs: number;
  /** The most bytes of a provider's answer read into memory (TERAPI_MAX_RESPONSE_BYTES). */
  maxResponseBytes: number;
  /**
   * The origins of the app's pages that open the connect popup (TERAPI_ALLOWED_ORIGINS): the only
   * windows the callback page tells how the flow ended. Unset: the public URL's origin.
   */
  allowedOrigins?: string[];
  /** How many recent operations the operations log keeps (TERAPI_OPERATIONS_LOG_SIZE). */
  operationsLogSize: number;
}

/** What stops a start: one line per problem, each naming the setting and what to change. */
export class ConfigError extends Error {
  readonly problems: string[];

  constructor(problems: string | string[]) {
    const list = typeof problems === 'string' ? [problems] : problems;
    super(list.join('\n'));
    this.problems = list;
  }
}

export interface LoadedConfig {
  config: Config;
  /** Set only on the first start in embedded mode: the secret key that was just generated. */
  generatedSecretKey?: string;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const KEY_HINT = 'must be 32 bytes, as 64 hex characters or base64 (openssl rand -hex 32)';

/** Reads a 32-byte key given as 64 hex characters or as base64. */
export function parseKey(value: string, name: string): Buffer {
  const key = /^[0-9a-f]{64}$/i.test(value) ? Buffer.from(value, 'hex') : Buffer.from(value, 'base64');
  if (key.length !== 32) throw new ConfigError(`${name} ${KEY_HINT}`);
  return key;
}

/** The folders of TERAPI_PROVIDERS_DIR, absolute. */
export const providersDirs = (env: NodeJS.ProcessEnv = process.env) => (env.TERAPI_PROVIDERS_DIR ?? '').split(':').filter(Boolean).map((d) => resolve(d));

/**
 * Configuration from the environment (README, "Configuration"), every problem found at once. An
 * empty variable counts as unset. In embedded mode a missing secret or encryption key is generated
 * once and kept in the data directory (mode 0600); with PostgreSQL both must be given, since
 * several servers must share them. `embeddedKeys: false` neither reads nor makes keys.json.
 */
export function loadConfig(options: { embeddedKeys: boolean } = { embeddedKeys: true }, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const problems: string[] = [];
  const given = (name: string) => env[name] || undefined;

  const port = Number(given('PORT') ?? 3003);
  if (!/^\d+$/.test(given('PORT') ?? '0') || port > 65535) problems.push(`PORT must be a whole number from 0 to 65535, not "${env.PORT}"`);
  const logLevel = given('TERAPI_LOG_LEVEL') ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`TERAPI_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}, not "${logLevel}"`);
  const shutdownSeconds = Number(given('TERAPI_SHUTDOWN_TIMEOUT_SECONDS') ?? 10);
  if (!(shutdownSeconds >= 0 && shutdownSeconds <= 3600)) problems.push(`TERAPI_SHUTDOWN_TIMEOUT_SECONDS must be a number of seconds from 0 to 3600, not "${env.TERAPI_SHUTDOWN_TIMEOUT_SECONDS}"`);
  const databaseUrl = given('TERAPI_DATABASE_URL');
  // Never echoed: the URL may hold a password.
  if (databaseUrl) {
    const protocol = URL.canParse(databaseUrl) ? new URL(databaseUrl).protocol : undefined;
    if (protocol !== 'postgresql:' && protocol !== 'postgres:') {
      problems.push(`TERAPI_DATABASE_URL must be a PostgreSQL URL such as postgresql://user:password@host:5432/database; ${protocol ? `its scheme is "${protocol}"` : 'it is not a URL'}`);
    }
  }
  const isHttp = (url: string) => URL.canParse(url) && /^https?:$/.test(new URL(url).protocol);
  const publicUrl = given('TERAPI_PUBLIC_URL');
  if (publicUrl && !isHttp(publicUrl)) problems.push(`TERAPI_PUBLIC_URL must be an http:// or https:// URL, not "${publicUrl}"`);
  // Not echoed: a webhook URL may carry a token.
  const webhookUrl = given('TERAPI_WEBHOOK_URL');
  if (webhookUrl && !isHttp(webhookUrl)) problems.push('TERAPI_WEBHOOK_URL must be an http:// or https:// URL');

  const number = (name: string, fallback: number, min: number, max: number, unit = 'seconds') => {
    const value = Number(given(name) ?? fallback);
    if (!(value >= min && value <= max)) problems.push(`${name} must be a number of ${unit} from ${min} to ${max}, not "${env[name]}"`);
    return value;
  };
  const syncLeaseSeconds = number('TERAPI_SYNC_LEASE_SECONDS', 60, 1, 3600);
  const syncWaitBudgetSeconds = number('TERAPI_SYNC_WAIT_BUDGET_SECONDS', 300, 0, 86_400);
  const syncConcurrency = number('TERAPI_SYNC_CONCURRENCY', Math.max(2, availableParallelism() * 2), 1, 1000, 'runs');
  const webhookRetrySeconds = number('TERAPI_WEBHOOK_RETRY_SECONDS', 10, 0.1, 3600);
  const maxResponseBytes = number('TERAPI_MAX_RESPONSE_BYTES', DEFAULT_MAX_RESPONSE_BYTES, 1, Number.MAX_SAFE_INTEGER, 'bytes');
  const operationsLogSize = number('TERAPI_OPERATIONS_LOG_SIZE', 10_000, 100, 10_000_000, 'operations');
  const allowedOrigins = given('TERAPI_ALLOWED_ORIGINS') ? parseOrigins(given('TERAPI_ALLOWED_ORIGINS')!, problems) : undefined;
  const role = given('TERAPI_ROLE') ?? 'all';
  if (role !== 'api' && role !== 'worker' && role !== 'all') problems.push(`TERAPI_ROLE must be api, worker or all, not "${role}"`);
  else if (role !== 'all' && !databaseUrl) problems.push(`TERAPI_ROLE=${role} needs TERAPI_DATABASE_URL: the embedded store serves one process, which does everything`);

  const dataDir = resolve(given('TERAPI_DATA_DIR') ?? './data');
  let secretKey = given('TERAPI_SECRET_KEY');
  let encryptionKey = given('TERAPI_ENCRYPTION_KEY');
  let encryptionKeyName = 'TERAPI_ENCRYPTION_KEY';
  let generate = false;
  const keysFile = join(dataDir, 'keys.json');
  if (options.embeddedKeys && (!secretKey || !encryptionKey)) {
    if (databaseUrl) {
      problems.push('with TERAPI_DATABASE_URL set, TERAPI_SECRET_KEY and TERAPI_ENCRYPTION_KEY must both be set (every server must share them)');
    } else if (!existsSync(keysFile)) {
      generate = true;
    } else {
      const kept = readKeysFile(keysFile, problems);
      secretKey ??= kept.secret_key;
      if (!encryptionKey && kept.encryption_key) [encryptionKey, encryptionKeyName] = [kept.encryption_key, `encryption_key in ${keysFile}`];
    }
  }
  const previous = (given('TERAPI_PREVIOUS_ENCRYPTION_KEYS') ?? '').split(',').filter(Boolean);
  const named: [string | undefined, string][] = [[encryptionKey, encryptionKeyName], ...previous.map((k, i): [string, string] => [k, `TERAPI_PREVIOUS_ENCRYPTION_KEYS (key ${i + 1})`])];
  const keys: Buffer[] = [];
  for (const [value, name] of named) {
    try {
      if (value !== undefined) keys.push(parseKey(value, name));
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  if (problems.length) throw new ConfigError(problems);

  // Only once nothing else is wrong: the first start is the one that prints the secret key.
  let generatedSecretKey: string | undefined;
  if (generate) {
    const made = { secret_key: `sk_${randomBytes(24).toString('hex')}`, encryption_key: randomBytes(32).toString('hex') };
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(keysFile, JSON.stringify(made, null, 2), { mode: 0o600 });
    if (!secretKey) generatedSecretKey = secretKey = made.secret_key;
    if (!encryptionKey) keys.unshift(parseKey(made.encryption_key, 'encryption_key'));
  }
  return {
    generatedSecretKey,
    config: {
      port,
      host: given('HOST'),
      secretKey: secretKey ?? '',
      encryptionKeys: keys,
      databaseUrl,
      dataDir,
      providersDirs: providersDirs(env),
      publicUrl: (publicUrl ?? `http://localhost:${port}`).replace(/\/$/, ''),
      webhookUrl,
      logLevel,
      shutdownTimeoutMs: shutdownSeconds * 1000,
      syncLeaseMs: syncLeaseSeconds * 1000,
      syncWaitBudgetMs: syncWaitBudgetSeconds * 1000,
      role: role as Config['role'],
      syncConcurrency: Math.floor(syncConcurrency),
      webhookRetryMs: webhookRetrySeconds * 1000,
      maxResponseBytes,
      allowedOrigins,
      operationsLogSize: Math.floor(operationsLogSize),
    },
  };
}

/** keys.json as the first start wrote it; what is wrong with it goes to `problems`. */
function readKeysFile(file: string, problems: string[]): { secret_key?: string; encryption_key?: string } {
  const restore = 'restore it from a backup, or set TERAPI_SECRET_KEY and TERAPI_ENCRYPTION_KEY (a new encryption key cannot open the credentials already stored)';
  let kept: unknown;
  try {
    kept = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    problems.push(`${file} cannot be read (${(e as Error).message}): ${restore}`);
    return {};
  }
  const valid = (k: string) => typeof (kept as Record<string, unknown>)?.[k] === 'string' && (kept as Record<string, string>)[k] !== '';
  if (!valid('secret_key') || !valid('encryption_key')) {
    problems.push(`${file} must be a JSON object with the strings "secret_key" and "encryption_key": ${restore}`);
    return {};
  }
  return kept as { secret_key: string; encryption_key: string };
}

/** TERAPI_ALLOWED_ORIGINS: origins (scheme, host, port) separated by commas, such as https://app.example.com; a wrong one goes to `problems`. */
function parseOrigins(value: string, problems: string[]): string[] {
  const origins: string[] = [];
  for (const o of value.split(',').map((x) => x.trim()).filter(Boolean)) {
    let url: URL | undefined;
    try {
      url = new URL(o);
    } catch {}
    if (!url || !/^https?:$/.test(url.protocol) || url.origin !== o.replace(/\/$/, '')) {
      problems.push(`TERAPI_ALLOWED_ORIGINS must list origins such as https://app.example.com (scheme, host and port, no path), not "${o}"`);
    } else origins.push(url.origin);
  }
  return origins;
}
