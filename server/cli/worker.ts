import type { Command } from 'commander';
import { ConfigError } from '../../core/config.ts';
import { ProviderLoadError } from '../../core/format/provider-registry.ts';
import { serve } from '../serve.ts';

/** `terapi worker`: a process that runs syncs and delivers webhooks (TERAPI_ROLE=worker), on PostgreSQL. */
export function worker(program: Command): void {
  program
    .command('worker')
    .description('run a worker: scheduled and triggered syncs and webhook deliveries, from the job queue on TERAPI_DATABASE_URL; it serves only /health and /metrics on PORT')
    .addHelpText(
      'after',
      `
Configured like \`terapi start\` (README, "Configuration"); TERAPI_DATABASE_URL, TERAPI_SECRET_KEY and
TERAPI_ENCRYPTION_KEY are required. Start any number of workers and API servers on one database:
each run goes to one worker, one run at a time per connection and sync. On SIGTERM a worker
takes no new runs, lets those in flight finish within TERAPI_SHUTDOWN_TIMEOUT_SECONDS, and hands
back the rest, which resume on another worker from their last stored page.`,
    )
    .action(async () => {
      try {
        await serve({ ...process.env, TERAPI_ROLE: 'worker' });
      } catch (e) {
        if (e instanceof ConfigError) throw new ConfigError(e.problems.map((p) => `cannot start: ${p}`));
        if (e instanceof ProviderLoadError) throw new ConfigError(`cannot start: ${e.message}`);
        throw e;
      }
    });
}
