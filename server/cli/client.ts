import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';

/** How the server's commands (deploy, dryrun) reach a running server. */
export interface ServerOptions {
  url: string;
  secretKey?: string;
}

/** Adds --url and --secret-key to a command that talks to a running server. */
export function serverOptions(command: Command): Command {
  return command
    .option('--url <url>', 'the running Terapi server', process.env.TERAPI_URL ?? 'http://127.0.0.1:3003')
    .option('--secret-key <key>', 'the secret key (default: TERAPI_SECRET_KEY, else the embedded mode\'s keys.json in TERAPI_DATA_DIR or ./data)');
}

export interface Answer {
  status: number;
  body: any;
}

/** A client of the server's API with the secret key; an unreachable server or a missing key is an error saying what to do. */
export function apiClient(options: ServerOptions) {
  const secret = options.secretKey ?? process.env.TERAPI_SECRET_KEY ?? embeddedKey();
  if (!secret) throw new Error('no secret key: set TERAPI_SECRET_KEY or give --secret-key');
  const base = options.url.replace(/\/$/, '');
  return async (method: string, path: string, body?: { text: string; type: string }): Promise<Answer> => {
    let res: Response;
    try {
      res = await fetch(base + path, { method, headers: { authorization: `Bearer ${secret}`, ...(body ? { 'content-type': body.type } : {}) }, body: body?.text });
    } catch (e) {
      throw new Error(`cannot reach the server at ${base} (${(e as Error & { cause?: Error }).cause?.message ?? (e as Error).message}): start it, or give --url`);
    }
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {}
    if (res.status === 401) throw new Error(`the server at ${base} refused the secret key: give the one it was started with`);
    return { status: res.status, body: parsed };
  };
}

/** An API answer that is an error, as one line: its code and message. */
export const failure = (a: Answer) => (a.body && typeof a.body === 'object' ? `${a.body.error}: ${a.body.message}` : `HTTP ${a.status}`);

/** The embedded mode's generated secret key, when this folder's server made one. */
function embeddedKey(): string | undefined {
  const file = join(process.env.TERAPI_DATA_DIR || './data', 'keys.json');
  if (!existsSync(file)) return undefined;
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { secret_key?: string }).secret_key;
  } catch {
    return undefined;
  }
}
