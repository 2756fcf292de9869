/**
 * The server side of bench/api.ts, run by it as a child process (never on its own): the real
 * Terapi app (createApp over Engine.start, embedded SQLite store, production logger) and a bare
 * Koa app, both on 127.0.0.1 on random ports. It answers the parent's messages over IPC: it
 * reports its CPU time and event-loop utilisation between two marks, runs the in-process
 * microbenchmarks of each stage of a request once the load is over, and stops.
 *
 * The logger is createLogger(level) with no destination, as in server/main.ts: pino's default
 * destination, stdout (asynchronous sonic-boom), which the parent points at a file.
 */
import Koa from 'koa';
import Router from '@koa/router';
import { rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { loadConfig } from '../core/config.ts';
import { connectionKey, type ConnectionRecord, type Credentials } from '../core/auth/connections.ts';
import { secretChecker, Sealer } from '../core/auth/crypto.ts';
import { Engine } from '../core/engine.ts';
import { integrationKey } from '../core/auth/integrations.ts';
import { createLogger } from '../core/logger.ts';
import { createApp } from '../server/app.ts';
import { operations } from '../server/openapi.ts';

export type Request =
  | { id: number; cmd: 'start'; env: Record<string, string> }
  | { id: number; cmd: 'bareBody'; body: unknown }
  | { id: number; cmd: 'mark'; label: string }
  | { id: number; cmd: 'measure' }
  | { id: number; cmd: 'micro'; secret: string; connection: { pck: string; id: string }; token: { pck: string; id: string } }
  | { id: number; cmd: 'stop' };

export interface Usage {
  /** Process CPU time (every thread: main, libuv pool running SQLite and log writes), ms. */
  cpuMs: number;
  /** Share of the wall time the main thread's event loop was busy. */
  elu: number;
  wallMs: number;
}

export interface Micro {
  name: string;
  /** Microseconds of wall time per call. */
  us: number;
  note?: string;
}

const send = (msg: unknown) => process.send!(msg);
// The parent gone (killed, crashed): never outlive it, nor leave its temporary directory.
let dataDir: string | undefined;
process.on('disconnect', () => {
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  process.exit(1);
});

let engine: Engine | undefined;
let terapi: Server | undefined;
let bare: Server | undefined;
let bareBody: unknown = {};
let mark: { cpu: NodeJS.CpuUsage; elu: EventLoopUtilization; t: number; label: string } | undefined;
/** With BENCH_PROFILE_DIR set, a V8 CPU profile of each measured run, <label>.cpuprofile. */
const profileDir = process.env.BENCH_PROFILE_DIR;
let profiler: Session | undefined;

const listen = (app: Koa) =>
  new Promise<Server>((resolve, reject) => {
    const server = app.listen(0, '127.0.0.1');
    server.once('listening', () => resolve(server));
    server.once('error', reject);
  });
const urlOf = (s: Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;

async function start(env: Record<string, string>) {
  const { config } = loadConfig({ embeddedKeys: true }, env);
  dataDir = config.dataDir;
  engine = await Engine.start(config, createLogger(config.logLevel));
  terapi = await listen(createApp(engine));
  engine.config.publicUrl = urlOf(terapi);

  // The bare app: Koa and @koa/router, no middleware, the same path and the same JSON body.
  const app = new Koa();
  const router = new Router();
  router.get('/connection/:connection_id', (ctx) => {
    ctx.body = bareBody;
  });
  app.use(router.routes());
  bare = await listen(app);
  return { terapi: urlOf(terapi), bare: urlOf(bare), store: engine.store.dialect, logLevel: config.logLevel };
}

// ---------------------------------------------------------------------------------------------
// Microbenchmarks: each stage of one request, on the objects the live server uses.

/** Median over `batches` of the µs per call of `n` calls of fn (after a warm-up). */
function timeSync(fn: () => unknown, n: number, batches = 7): number {
  for (let i = 0; i < n; i++) fn();
  const per: number[] = [];
  for (let b = 0; b < batches; b++) {
    const t = performance.now();
    for (let i = 0; i < n; i++) fn();
    per.push(((performance.now() - t) * 1000) / n);
  }
  return median(per);
}

/** µs per call with `inflight` calls outstanding at a time (1: the latency of one call). */
async function timeAsync(fn: () => Promise<unknown>, n: number, inflight: number, batches = 5): Promise<{ us: number; cpuUs: number }> {
  const run = async () => {
    let next = 0;
    await Promise.all(Array.from({ length: inflight }, async () => {
      while (next++ < n) await fn();
    }));
  };
  await run();
  const per: number[] = [];
  const cpu: number[] = [];
  for (let b = 0; b < batches; b++) {
    const c = process.cpuUsage();
    const t = performance.now();
    await run();
    per.push(((performance.now() - t) * 1000) / n);
    const d = process.cpuUsage(c);
    cpu.push((d.user + d.system) / n);
  }
  return { us: median(per), cpuUs: median(cpu) };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function micro(secret: string, conn: { pck: string; id: string }, tok: { pck: string; id: string }): Promise<Micro[]> {
  const e = engine!;
  const out: Micro[] = [];
  const header = `Bearer ${secret}`;
  const isSecret = secretChecker(secret);
  out.push({ name: 'secret key check', us: timeSync(() => isSecret(header.slice(7)), 20_000) });

  const getConnection = operations.get('getConnection')!;
  const getAuthToken = operations.get('getAuthToken')!;
  out.push({ name: 'request check getConnection', us: timeSync(() => getConnection.check({ connection_id: conn.id }, { provider_config_key: conn.pck }, undefined), 20_000) });
  out.push({ name: 'request check getAuthToken', us: timeSync(() => getAuthToken.check({ provider_config_key: tok.pck, connection_id: tok.id }, {}, undefined), 20_000) });

  const key = connectionKey(conn.pck, conn.id);
  const seq = await timeAsync(() => e.store.get(key), 1000, 1);
  const par = await timeAsync(() => e.store.get(key), 4000, 50);
  out.push({ name: 'store read, 1 in flight', us: seq.us, note: `latency; process CPU ${seq.cpuUs.toFixed(1)} µs/call` });
  out.push({ name: 'store read, 50 in flight', us: par.us, note: `throughput cost; process CPU ${par.cpuUs.toFixed(1)} µs/call` });
  const ikey = integrationKey(conn.pck);
  const ipar = await timeAsync(() => e.store.get(ikey), 4000, 50);
  out.push({ name: 'store read integration, 50 in flight', us: ipar.us });

  const record = (await e.store.get<ConnectionRecord>(key))!;
  const tokenRecord = (await e.store.get<ConnectionRecord>(connectionKey(tok.pck, tok.id)))!;
  const sealer = new Sealer(e.config.encryptionKeys);
  out.push({ name: 'decryption (Sealer.open)', us: timeSync(() => sealer.open(tokenRecord.credentials), 20_000) });

  out.push({ name: 'view building (connections.view)', us: timeSync(() => e.connections.view(record), 100_000) });
  const credentials = sealer.open<Credentials & { type: 'oauth2' }>(tokenRecord.credentials);
  out.push({
    name: 'view building (token, as Engine.token)',
    us: timeSync(() => ({ type: 'Bearer', access_token: credentials.access_token, ...(credentials.expires_at ? { expires_at: credentials.expires_at } : {}), raw: credentials.raw ?? {} }), 100_000),
  });
  const view = e.connections.view(record);
  out.push({ name: 'JSON.stringify of the connection view', us: timeSync(() => JSON.stringify(view), 50_000) });

  // One line as the request middleware writes it, through the live logger and destination; the
  // batch is flushed before the clock stops so the write to the file is counted.
  const log = e.log;
  const logBatch = async (n: number) => {
    for (let i = 0; i < n; i++) log.info({ method: 'GET', path: `/connection/${conn.id}`, status: 200, ms: 1.3 }, 'request');
    await new Promise<void>((r) => log.flush(() => r()));
  };
  await logBatch(2000);
  const per: number[] = [];
  for (let b = 0; b < 5; b++) {
    const t = performance.now();
    await logBatch(2000);
    per.push(((performance.now() - t) * 1000) / 2000);
  }
  out.push({ name: 'logging (one pino line)', us: median(per) });

  // The operations log (core/operations.ts): what a logged operation (an action, a proxy call)
  // costs its request, a push to a buffer, and what writing it costs later, off the request's path
  // (a batch of 500 in one statement, the oldest beyond the bound dropped).
  const ops = e.operations;
  const op = { type: 'proxy' as const, provider_config_key: conn.pck, connection_id: conn.id, name: 'GET /items', outcome: 'success' as const, duration_ms: 12.3, request_id: 'bench', detail: { status: 200 } };
  const records: number[] = [];
  for (let b = 0; b < 8; b++) {
    const t = performance.now();
    for (let i = 0; i < 400; i++) ops.record(op);
    records.push(((performance.now() - t) * 1000) / 400);
    await ops.flush();
  }
  out.push({ name: 'operations log: record (buffered)', us: median(records.slice(1)) });
  const writes: number[] = [];
  for (let b = 0; b < 5; b++) {
    for (let i = 0; i < 500; i++) ops.record(op);
    const t = performance.now();
    await ops.flush();
    writes.push(((performance.now() - t) * 1000) / 500);
  }
  out.push({ name: 'operations log: write (batches of 500)', us: median(writes), note: 'per operation, off the request path' });
  return out;
}

// ---------------------------------------------------------------------------------------------

async function stop() {
  for (const s of [terapi, bare]) {
    if (!s) continue;
    s.close();
    s.closeAllConnections();
  }
  if (engine) {
    const e = engine;
    await new Promise<void>((r) => e.log.flush(() => r()));
    await e.stop();
  }
}

process.on('message', async (m: Request) => {
  try {
    let result: unknown;
    switch (m.cmd) {
      case 'start':
        result = await start(m.env);
        break;
      case 'bareBody':
        bareBody = m.body;
        break;
      case 'mark':
        if (profileDir) {
          if (!profiler) {
            profiler = new Session();
            profiler.connect();
            await profiler.post('Profiler.enable');
            await profiler.post('Profiler.setSamplingInterval', { interval: 200 });
          }
          await profiler.post('Profiler.start');
        }
        mark = { cpu: process.cpuUsage(), elu: performance.eventLoopUtilization(), t: performance.now(), label: m.label };
        break;
      case 'measure': {
        const cpu = process.cpuUsage(mark!.cpu);
        result = { cpuMs: (cpu.user + cpu.system) / 1000, elu: performance.eventLoopUtilization(mark!.elu).utilization, wallMs: performance.now() - mark!.t } satisfies Usage;
        if (profiler) {
          const { profile } = await profiler.post('Profiler.stop');
          writeFileSync(join(profileDir!, `${mark!.label}.cpuprofile`), JSON.stringify(profile));
        }
        break;
      }
      case 'micro':
        result = await micro(m.secret, m.connection, m.token);
        break;
      case 'stop':
        // No answer: the parent waits for this process to exit.
        await stop();
        process.exit(0);
    }
    send({ id: m.id, ok: true, result });
  } catch (e) {
    send({ id: m.id, ok: false, error: (e as Error).stack ?? String(e) });
  }
});
send({ ready: true });
