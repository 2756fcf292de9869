/**
 * The Terapi side of bench/sync.ts, in a process of its own: the real engine and app on the store
 * the environment names, started as `npm start` would. It tells its parent (IPC) its port, the
 * timings of every sync run, and on request the peak RSS seen since the last request (sampled
 * every 20 ms: the whole process, worker threads included).
 */
import type { AddressInfo } from 'node:net';
import { loadConfig } from '../core/config.ts';
import { Engine } from '../core/engine.ts';
import { createLogger } from '../core/logger.ts';
import { createApp } from '../server/app.ts';

const { config } = loadConfig();
const engine = await Engine.start(config, createLogger('warn'));
const server = createApp(engine).listen(0, '127.0.0.1');
await new Promise((r) => server.once('listening', r));

let peak = 0;
// memoryUsage.rss() reads only the RSS: memoryUsage() also walks every heap, 50 times a second.
setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20).unref();
engine.syncs.on('run', (e) => process.send!({ kind: 'run', connection: e.connection, summary: e.result.summary, timings: e.result.timings, records_count: e.result.records_count }));
process.on('message', async (m: { kind: string }) => {
  if (m.kind === 'rss') {
    process.send!({ kind: 'rss', peak: Math.max(peak, process.memoryUsage.rss()) });
    peak = 0;
  }
  if (m.kind === 'stop') {
    server.closeAllConnections();
    server.close();
    await engine.stop();
    process.exit(0);
  }
});
process.send!({ kind: 'ready', port: (server.address() as AddressInfo).port });
