import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DEFAULT_MAX_RESPONSE_BYTES } from './http/send.ts';

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
  /** The most bytes of a provider's answer read into memory (TERAPI_MAX_RESPONSE_BYTES). */
  maxResponseBytes: number;
  /**
   * The origins of the app's pages that open the connect popup (TERAPI_ALLOWED_ORIGINS): the only
   * windows the callback page tells how the flow ended. Unset: the public URL's origin.
   */
  allowedOrigins?: string[];
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
  const maxResponseBytes = Number(env.TERAPI_MAX_RESPONSE_BYTES ?? DEFAULT_MAX_RESPONSE_BYTES);
  if (!Number.isSafeInteger(maxResponseBytes) || maxResponseBytes < 1) throw new ConfigError(`TERAPI_MAX_RESPONSE_BYTES must be a number of bytes, not "${env.TERAPI_MAX_RESPONSE_BYTES}"`);
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
      maxResponseBytes,
      allowedOrigins: env.TERAPI_ALLOWED_ORIGINS ? parseOrigins(env.TERAPI_ALLOWED_ORIGINS) : undefined,
    },
  };
}

/** TERAPI_ALLOWED_ORIGINS: origins (scheme, host, port) separated by commas, such as https://app.example.com. */
function parseOrigins(value: string): string[] {
  return value
    .split(',')
    .map((o) => o.trim())
    .filter(Boolean)
    .map((o) => {
      let url: URL | undefined;
      try {
        url = new URL(o);
      } catch {}
      if (!url || !/^https?:$/.test(url.protocol) || url.origin !== o.replace(/\/$/, '')) {
        throw new ConfigError(`TERAPI_ALLOWED_ORIGINS must list origins such as https://app.example.com (scheme, host and port, no path), not "${o}"`);
      }
      return url.origin;
    });
}
