import type { AddressInfo } from 'node:net';
import { ConfigError, loadConfig } from '../core/config.ts';
import { Engine } from '../core/engine.ts';
import { createLogger } from '../core/logger.ts';
import { ProviderLoadError } from '../core/format/provider-registry.ts';
import { createApp } from './app.ts';

/** `npm start`: the server on PORT (3003), on the embedded store unless TERAPI_DATABASE_URL is set. */
async function main() {
  let loaded;
  try {
    loaded = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`terapi: ${e.message}`);
      process.exit(1);
    }
    throw e;
  }
  const { config, generatedSecretKey } = loaded;
  const log = createLogger(config.logLevel);
  let engine: Engine;
  try {
    engine = await Engine.start(config, log);
  } catch (e) {
    if (e instanceof ProviderLoadError) {
      console.error(`terapi: cannot start: ${e.message}`);
      process.exit(1);
    }
    throw e;
  }
  const server = createApp(engine).listen(config.port, () => {
    // The port really listened on: PORT=0 asks for a free one (tests).
    log.info({ port: (server.address() as AddressInfo).port, store: engine.store.dialect, providers: engine.registry.list().length }, 'terapi listening');
    if (generatedSecretKey) {
      // The one time a secret reaches the output (PRODUCT.md, "Configuration").
      console.log(`\nFirst start: your secret key is ${generatedSecretKey}\nIt is kept in ${config.dataDir}/keys.json; use it as "Authorization: Bearer <key>".\n`);
    }
  });
  const stop = () => {
    server.close();
    server.closeAllConnections();
    engine.stop().finally(() => log.flush(() => process.exit(0)));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

await main();
