import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';

export interface Config {
  port: number;
  secretKey: string;
  /** Current key first, then earlier keys still accepted for reading (rotation). */
  encryptionKeys: Buffer[];
  databaseUrl?: string;
  dataDir: string;
  providersDirs: string[];
  publicUrl: string;
  webhookUrl?: string;
  logLevel: string;
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
  /** How long a stopping process waits for requests and runs in flight before it hands them back. */
  shutdownMs: number;
}

export class ConfigError extends Error {}

export interface LoadedConfig {
  config: Config;
  /** Set only on the first start in embedded mode: the secret key that was just generated. */
  generatedSecretKey?: string;
}

/** Reads a 32-byte key given as 64 hex characters or as base64. */
export function parseKey(value: string, name: string): Buffer {
  const key = /^[0-9a-f]{64}$/i.test(value) ? Buffer.from(value, 'hex') : Buffer.from(value, 'base64');
  if (key.length !== 32) throw new ConfigError(`${name} must be 32 bytes, as 64 hex characters or base64 (openssl rand -hex 32)`);
  return key;
}

/**
 * Configuration from the environment (README, "Configuration"). In embedded mode a missing secret
 * or encryption key is generated once and kept in the data directory (mode 0600); with PostgreSQL
 * both must be given, since several servers must share them.
 */
export function loadConfig(options: { embeddedKeys: boolean } = { embeddedKeys: true }, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const port = Number(env.PORT ?? 3003);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`PORT must be a port number, not "${env.PORT}"`);
  const dataDir = resolve(env.TERAPI_DATA_DIR ?? './data');
  const databaseUrl = env.TERAPI_DATABASE_URL || undefined;
  let secretKey = env.TERAPI_SECRET_KEY || undefined;
  let encryptionKey = env.TERAPI_ENCRYPTION_KEY || undefined;
  let generatedSecretKey: string | undefined;

  if ((!secretKey || !encryptionKey) && options.embeddedKeys) {
    if (databaseUrl) {
      throw new ConfigError('with TERAPI_DATABASE_URL set, TERAPI_SECRET_KEY and TERAPI_ENCRYPTION_KEY must both be set (every server must share them)');
    }
    mkdirSync(dataDir, { recursive: true });
    const file = join(dataDir, 'keys.json');
    let kept: { secret_key?: string; encryption_key?: string } = {};
    if (existsSync(file)) kept = JSON.parse(readFileSync(file, 'utf8'));
    else {
      kept = { secret_key: `sk_${randomBytes(24).toString('hex')}`, encryption_key: randomBytes(32).toString('hex') };
      writeFileSync(file, JSON.stringify(kept, null, 2), { mode: 0o600 });
      if (!secretKey) generatedSecretKey = kept.secret_key;
    }
    secretKey ??= kept.secret_key;
    encryptionKey ??= kept.encryption_key;
  }
  if (options.embeddedKeys && (!secretKey || !encryptionKey)) throw new ConfigError('TERAPI_SECRET_KEY and TERAPI_ENCRYPTION_KEY are required');

  const previous = (env.TERAPI_PREVIOUS_ENCRYPTION_KEYS ?? '').split(',').filter(Boolean);
  return {
    generatedSecretKey,
    config: {
      port,
      secretKey: secretKey ?? '',
      encryptionKeys: encryptionKey ? [encryptionKey, ...previous].map((k, i) => parseKey(k, i ? 'TERAPI_PREVIOUS_ENCRYPTION_KEYS' : 'TERAPI_ENCRYPTION_KEY')) : [],
      databaseUrl,
      dataDir,
      providersDirs: (env.TERAPI_PROVIDERS_DIR ?? '').split(':').filter(Boolean).map((d) => resolve(d)),
      publicUrl: (env.TERAPI_PUBLIC_URL ?? `http://localhost:${port}`).replace(/\/$/, ''),
      webhookUrl: env.TERAPI_WEBHOOK_URL || undefined,
      logLevel: env.TERAPI_LOG_LEVEL ?? 'info',
      syncLeaseMs: seconds(env, 'TERAPI_SYNC_LEASE_SECONDS', 60) * 1000,
      syncWaitBudgetMs: seconds(env, 'TERAPI_SYNC_WAIT_BUDGET_SECONDS', 300) * 1000,
      role: role(env.TERAPI_ROLE, databaseUrl),
      syncConcurrency: Math.max(1, Math.floor(seconds(env, 'TERAPI_SYNC_CONCURRENCY', Math.max(2, availableParallelism() * 2)))),
      webhookRetryMs: seconds(env, 'TERAPI_WEBHOOK_RETRY_SECONDS', 10) * 1000,
      shutdownMs: seconds(env, 'TERAPI_SHUTDOWN_SECONDS', 10) * 1000,
    },
  };
}

function role(value: string | undefined, databaseUrl: string | undefined): Config['role'] {
  const r = value || 'all';
  if (r !== 'api' && r !== 'worker' && r !== 'all') throw new ConfigError(`TERAPI_ROLE must be api, worker or all, not "${value}"`);
  if (r !== 'all' && !databaseUrl) throw new ConfigError(`TERAPI_ROLE=${r} needs TERAPI_DATABASE_URL: the embedded store serves one process, which does everything`);
  return r;
}

function seconds(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const value = Number(env[name] ?? fallback);
  if (!Number.isFinite(value) || value <= 0) throw new ConfigError(`${name} must be a number of seconds above 0, not "${env[name]}"`);
  return value;
}
