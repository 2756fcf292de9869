import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, connect, type Server as TcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { loadConfig } from '../core/config.ts';
import { Engine } from '../core/engine.ts';
import { createLogger } from '../core/logger.ts';
import { createApp } from '../server/app.ts';

/** PostgreSQL for tests (PRODUCT.md): TERAPI_TEST_DATABASE_URL; in CI a missing URL fails, never skips. */
export const PG_URL = process.env.TERAPI_TEST_DATABASE_URL;
if (process.env.CI === 'true' && !PG_URL) throw new Error('CI=true but TERAPI_TEST_DATABASE_URL is not set: the PostgreSQL tests cannot run');
export const pgSkip = PG_URL ? false : 'TERAPI_TEST_DATABASE_URL is not set (CI sets it)';

/** A database of its own for one test file (or bench run), on the server of `adminUrl`, dropped at the end. */
export async function freshDatabase(adminUrl = PG_URL!, prefix = 'terapi_test'): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

/** Polls `probe` every 100 ms until it answers something other than undefined; fails after `ms`, naming `what`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, ms = 30_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const tempDir = (prefix = 'terapi-') => mkdtempSync(join(tmpdir(), prefix));

/** Writes provider files into a new folder, for TERAPI_PROVIDERS_DIR. */
export function providersDir(files: Record<string, string>): string {
  const dir = tempDir('terapi-providers-');
  mkdirSync(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, `${name}.yaml`), text);
  return dir;
}

export const TEST_ENCRYPTION_KEY = 'a'.repeat(64);

export interface Running {
  url: string;
  secret: string;
  engine: Engine;
  logs: string[];
  call: (method: string, path: string, body?: unknown, headers?: Record<string, string>) => Promise<{ status: number; body: any; headers: Headers; text: string }>;
  close: () => Promise<void>;
}

/** The real app on 127.0.0.1 on a free port, with the embedded store or a PostgreSQL URL. */
export async function startTerapi(options: { databaseUrl?: string; providersDirs?: string[]; env?: Record<string, string>; dataDir?: string } = {}): Promise<Running> {
  // A given data directory outlives the server (restart tests); a fresh one is removed with it.
  const dataDir = options.dataDir ?? tempDir('terapi-data-');
  const secret = options.env?.TERAPI_SECRET_KEY ?? `sk_test_${randomBytes(8).toString('hex')}`;
  const env: NodeJS.ProcessEnv = {
    TERAPI_DATA_DIR: dataDir,
    TERAPI_SECRET_KEY: secret,
    TERAPI_ENCRYPTION_KEY: TEST_ENCRYPTION_KEY,
    TERAPI_PROVIDERS_DIR: (options.providersDirs ?? []).join(':'),
    ...(options.databaseUrl ? { TERAPI_DATABASE_URL: options.databaseUrl } : {}),
    PORT: '0',
    ...options.env,
  };
  const { config } = loadConfig({ embeddedKeys: true }, env);
  const logs: string[] = [];
  const log = createLogger('info', { write: (line: string) => void logs.push(line) });
  const engine = await Engine.start(config, log);
  const server: Server = createApp(engine).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  engine.config.publicUrl = url;
  const call = caller(url, secret);
  return {
    url,
    secret,
    engine,
    logs,
    call,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await engine.stop();
      if (!options.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A real HTTP server on 127.0.0.1 standing in for a provider's API. */
export async function fakeApi(handler: (req: IncomingMessage & { body: any }, res: ServerResponse) => void | Promise<void>): Promise<{ url: string; requests: { method: string; url: string; headers: IncomingMessage['headers']; body: any }[]; close: () => Promise<void> }> {
  const requests: { method: string; url: string; headers: IncomingMessage['headers']; body: any }[] = [];
  const server = createServer(async (req, res) => {
    let text = '';
    for await (const chunk of req) text += chunk;
    const body = text ? (() => { try { return JSON.parse(text); } catch { return text; } })() : undefined;
    requests.push({ method: req.method!, url: req.url!, headers: req.headers, body });
    await handler(Object.assign(req, { body }), res);
  });
  server.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

export const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
};

type Call = Running['call'];

/** A fetch of one server's API with the secret key; the body parsed as JSON when it is JSON. */
function caller(url: string, secret: string): Call {
  return async (method, path, body, headers = {}) => {
    const res = await fetch(url + path, {
      method,
      redirect: 'manual',
      headers: { authorization: `Bearer ${secret}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {}
    return { status: res.status, body: parsed, headers: res.headers, text };
  };
}

export interface ServerProcess {
  url: string;
  secret: string;
  dataDir: string;
  child: ChildProcess;
  /** Log lines (stdout) and stderr so far. */
  output: () => string;
  call: Call;
  /** Whether the process is still running. */
  alive: () => boolean;
  /** Stops the process (its process group, when started as one) with this signal (SIGTERM by default) and waits for it to end. */
  stop: (signal?: NodeJS.Signals) => Promise<void>;
  /** The exit code once it has ended (null when a signal ended it). */
  exitCode: () => number | null;
}

/** A spawned server process (the name the sync tests use). */
export type Spawned = ServerProcess;

export const ROOT = new URL('..', import.meta.url).pathname;

/**
 * The server as `npm start` runs it (node --import tsx server/main.ts), in a child process on a free
 * port, with the test encryption key; resolves once it listens. For races between real processes.
 */
export async function spawnTerapi(env: Record<string, string> = {}, how: { command?: string[]; group?: boolean } = {}): Promise<ServerProcess> {
  const dataDir = env.TERAPI_DATA_DIR ?? tempDir('terapi-data-');
  const secret = env.TERAPI_SECRET_KEY ?? `sk_test_${randomBytes(8).toString('hex')}`;
  // `command` runs another way (`node server/bin.mjs worker`, `npm start`); `group` starts it in a process group of its own, as a service manager does, and signals the group.
  const [file, ...args] = how.command ?? [process.execPath, '--import', 'tsx', 'server/main.ts'];
  const child = spawn(file, args, {
    detached: how.group ?? false,
    cwd: ROOT,
    // At info level: the line saying which port it listens on is how this finds it.
    env: { PATH: process.env.PATH!, PORT: '0', TERAPI_DATA_DIR: dataDir, TERAPI_SECRET_KEY: secret, TERAPI_ENCRYPTION_KEY: TEST_ENCRYPTION_KEY, ...env, TERAPI_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start:\n${output}`)), 60_000);
    const look = () => {
      const m = /"port":(\d+)[^\n]*terapi listening/.exec(output);
      if (m) {
        clearTimeout(timer);
        child.stdout!.off('data', look);
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on('data', look);
    void exited.then(() => reject(new Error(`the server exited before listening:\n${output}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    secret,
    dataDir,
    child,
    output: () => output,
    call: caller(url, secret),
    alive: () => child.exitCode === null && child.signalCode === null,
    exitCode: () => child.exitCode,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) {
        if (how.group) process.kill(-child.pid!, signal);
        else child.kill(signal);
      }
      await exited;
      if (!env.TERAPI_DATA_DIR) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Runs a command in a child process to its end: its exit code and what it printed. */
export function runCommand([file, ...args]: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(file, args, options);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A TCP hop in front of a server (PostgreSQL) that a test can cut and restore: a real outage, seen from Terapi. */
export async function tcpHop(target: { host: string; port: number }) {
  const sockets = new Set<Socket>();
  let server: TcpServer | undefined;
  let port = 0;
  const open = async () => {
    server = createTcpServer((client) => {
      const upstream = connect(target.port, target.host);
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      const drop = () => { client.destroy(); upstream.destroy(); };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
    });
    server.listen(port, '127.0.0.1');
    await new Promise((r) => server!.once('listening', r));
    port = (server.address() as AddressInfo).port;
  };
  await open();
  return {
    get port() { return port; },
    /** A database URL that goes through the hop. */
    via(url: string) {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    cut: async () => {
      for (const s of sockets) s.destroy();
      sockets.clear();
      await new Promise((r) => server!.close(r));
    },
    restore: open,
  };
}

/** A GET sent as written: fetch would resolve dot segments and backslashes before sending. Answers the status. */
export function rawGet(t: { url: string; secret: string }, path: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(t.url);
    const req = request({ hostname, port, path, headers: { ...headers, authorization: `Bearer ${t.secret}` } }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Answers `size` bytes in 64 KiB chunks, as fast as the reader takes them: a provider's large export. */
export function sendBytes(res: ServerResponse, size: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  const chunk = Buffer.alloc(65536, 120);
  let sent = 0;
  const pump = () => {
    while (sent < size) {
      const part = chunk.subarray(0, Math.min(chunk.length, size - sent));
      sent += part.length;
      if (!res.write(part)) return void res.once('drain', pump);
    }
    res.end();
  };
  pump();
}
