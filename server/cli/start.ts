import type { Command } from 'commander';
import { ConfigError } from '../../core/config.ts';
import { ProviderLoadError } from '../../core/format/provider-registry.ts';
import { serve } from '../serve.ts';

/** `terapi start`: the API server, configured by environment variables (README, "Configuration"). */
export function start(program: Command): void {
  program
    .command('start')
    .description('run the API server (what npm start runs); it stops cleanly on SIGTERM and SIGINT')
    .addHelpText(
      'after',
      `
Configured by environment variables (README, "Configuration"):
  PORT (3003), HOST (every address), TERAPI_SECRET_KEY, TERAPI_ENCRYPTION_KEY,
  TERAPI_PREVIOUS_ENCRYPTION_KEYS, TERAPI_DATABASE_URL (embedded SQLite if unset),
  TERAPI_DATA_DIR (./data), TERAPI_PROVIDERS_DIR, TERAPI_PUBLIC_URL, TERAPI_WEBHOOK_URL,
  TERAPI_LOG_LEVEL (info), TERAPI_SHUTDOWN_TIMEOUT_SECONDS (10).
Every problem with them stops the start with a line saying what to change, and exit code 1.`,
    )
    .action(async () => {
      try {
        await serve();
      } catch (e) {
        if (e instanceof ConfigError) throw new ConfigError(e.problems.map((p) => `cannot start: ${p}`));
        if (e instanceof ProviderLoadError) throw new ConfigError(`cannot start: ${e.message}`);
        throw e;
      }
    });
}
