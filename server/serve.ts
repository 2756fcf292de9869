import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError, loadConfig, type Config } from '../core/config.ts';
import { Engine } from '../core/engine.ts';
import { ProviderLoadError } from '../core/format/provider-registry.ts';
import { createLogger, type Logger } from '../core/logger.ts';
import { createApp, type AppState } from './app.ts';

/**
 * The server process (`terapi start`, `npm start`): configuration, providers, store and keys
 * checked before it listens (each problem a ConfigError or ProviderLoadError line), then a clean
 * stop on SIGTERM or SIGINT. Resolves once it listens; the process ends with the stop.
 */
export async function serve(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const { config, generatedSecretKey } = loadConfig({ embeddedKeys: true }, env);
  const log = createLogger(config.logLevel);
  const state: AppState = { draining: false };
  const { engine, server } = await open(config, log, state).catch((e) => {
    // A problem of the configuration is the operator's to fix, and said in one line; anything else
    // is a bug, whose stack goes to the log (the command line shows only its message).
    if (!(e instanceof ConfigError || e instanceof ProviderLoadError)) log.fatal({ err: e }, 'start failed');
    throw e;
  });
  // After listening, an error of the listener (too many open files on accept) is logged, not fatal.
  server.on('error', (e) => log.error({ err: e }, 'listener error'));
  const { address, port } = server.address() as AddressInfo;
  log.info({ address, port, store: engine.store.dialect, providers: engine.registry.list().length }, 'terapi listening');
  if (generatedSecretKey) {
    // The one time a secret reaches the output (PRODUCT.md, "Configuration").
    console.log(`\nFirst start: your secret key is ${generatedSecretKey}\nIt is kept in ${config.dataDir}/keys.json; use it as "Authorization: Bearer <key>".\n`);
  }

  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    // A process manager may signal both npm and the server, and npm passes its signal on: the
    // second one is the same request, not a harder one.
    if (stopping) return;
    stopping = true;
    const bound = config.shutdownTimeoutMs;
    // The whole stop fits in the bound and one second more, to close the store after requests cut at the bound.
    const deadline = Date.now() + bound + 1000;
    log.info({ signal, timeout_ms: bound, role: config.role }, 'stopping: no new connections or jobs, finishing the requests and runs in flight');
    state.draining = true;
    // At once, beside the requests' drain: no job is taken from now on, and the runs in flight
    // get the bound less a margin, then are handed back to resume on another worker.
    const wound = engine.stopWorking();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    if (!(await within(closed, bound))) {
      const open = await new Promise<number>((resolve) => server.getConnections((_e, n) => resolve(n ?? 0)));
      log.warn({ connections: open }, `requests still in flight after ${bound} ms: their connections are cut`);
      server.closeAllConnections();
      await closed;
    }
    // Past the deadline the exit code says the stop was not clean (runs not handed back are
    // recovered by another worker once their lease runs out).
    let code = 0;
    const stopped = wound.then(() => engine.stop()).then(
      () => log.info('stopped'),
      (e) => {
        log.error({ err: e }, 'the engine did not stop cleanly');
        code = 1;
      },
    );
    if (!(await within(stopped, deadline - Date.now()))) {
      log.error(`the engine did not stop within ${bound + 1000} ms`);
      code = 1;
    }
    log.flush(() => process.exit(code));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/** The engine, and the server listening over it; nothing left open if either fails. */
async function open(config: Config, log: Logger, state: AppState): Promise<{ engine: Engine; server: Server }> {
  const engine = await Engine.start(config, log);
  try {
    return { engine, server: await listen(createServer(createApp(engine, state).callback()), config) };
  } catch (e) {
    await engine.stop();
    throw e;
  }
}

/** Whether `promise` settles within `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Listens on HOST:PORT; a listen that fails is a ConfigError naming the setting to change. */
function listen(server: Server, config: Config): Promise<Server> {
  const where = `${config.host ?? 'every address'} port ${config.port}`;
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      const problem =
        e.code === 'EADDRINUSE' ? `PORT ${config.port} is already in use${config.host ? ` on ${config.host}` : ''}: stop what listens there, or set PORT to a free port`
        : e.code === 'EACCES' ? `PORT ${config.port} needs privileges this process does not have: set PORT to 1024 or above`
        : e.code === 'EADDRNOTAVAIL' ? `HOST ${config.host} is not an address of this machine: set HOST to one of its addresses, or unset it to listen on every address`
        : e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN' ? `HOST ${config.host} does not resolve to an address of this machine`
        : `cannot listen on ${where}: ${e.message}`;
      reject(new ConfigError(problem));
    });
    server.listen(config.port, config.host, () => resolve(server));
  });
}
