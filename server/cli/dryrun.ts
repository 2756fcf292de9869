import { resolve } from 'node:path';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import type { Credentials } from '../../core/auth/connections.ts';
import { scrubberOf, secretsOf } from '../../core/auth/secrets.ts';
import type { Fresh } from '../../core/auth/tokens.ts';
import { providersDirs } from '../../core/config.ts';
import { BUILTIN_PROVIDERS_DIR, loadCatalog, providerFiles, type SourceFile } from '../../core/format/provider-loader.ts';
import { missingFolders } from '../../core/format/provider-registry.ts';
import type { Provider } from '../../core/format/provider-types.ts';
import { formatError } from '../../core/format/yaml-source.ts';
import { actionOf, checkActionInput, sendAction } from '../../core/http/action.ts';
import { dryRunSync } from '../../core/sync/dry-run.ts';
import { syncOf } from '../../core/sync/syncs.ts';
import { apiClient, failure, serverOptions, type Answer, type ServerOptions } from './client.ts';

interface DryRunOptions extends ServerOptions {
  connection: string;
  limit?: number;
  sample: number;
  checkpoint?: string;
  action?: string;
  input?: string;
  file?: string[];
}

const count = (name: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a whole number of 1 or more`);
  return n;
};

/**
 * `terapi dryrun <provider_config_key> <sync> --connection <id>` runs a sync against a live
 * connection of a running server and stores nothing; `--action <name> --input <json>` runs an action.
 * The token comes from the server's GET /auth/token (which refreshes it: one refresh at a time,
 * PRODUCT.md), never from the store. Provider definitions load as the server loads them: the
 * built-in files, the TERAPI_PROVIDERS_DIR folders, then the files deployed through the API.
 */
export function dryrun(program: Command): void {
  serverOptions(
    program
      .command('dryrun')
      .description("run a sync (or an action) against a live connection of a running server, storing nothing; prints progress and the mapped records")
      .argument('<provider_config_key>', 'the integration')
      .argument('[sync]', 'the sync to run (or give --action)')
      .requiredOption('--connection <id>', 'the connection id')
      .option('--limit <n>', 'stop after this many records', count('--limit'))
      .option('--sample <n>', 'how many mapped records to print', count('--sample'), 10)
      .option('--checkpoint <json>', "an incremental sync's checkpoint to start from, as JSON (default: none, a first run)")
      .option('--action <name>', 'run this action instead of a sync (it is sent to the provider: an action writes there)')
      .option('--input <json>', "the action's input, as a JSON object", '{}')
      .option('--file <files...>', 'provider files to merge on top of the definitions (one being written, before it is deployed)'),
  )
    .addHelpText(
      'after',
      `
A sync's dry run prints a progress line per page on stderr (pages, records, records/s) and the first
mapped records on stdout, one JSON object a line; nothing is stored, no checkpoint moves, nothing is
marked deleted. An action's dry run sends the action's request to the provider (it is a real write
there) and prints its mapped output; Terapi stores nothing of it. Exit 1 if the run fails.`,
    )
    .action(async (key: string, syncName: string | undefined, options: DryRunOptions) => {
      if (!syncName === !options.action) throw new Error(syncName ? 'give a sync or --action, not both' : 'name the sync to run, or give --action <name>');
      const call = apiClient(options);
      const ok = (a: Answer, what: string) => {
        if (a.status !== 200) throw new Error(`${what}: ${failure(a)}`);
        return a.body;
      };
      const path = (...parts: string[]) => parts.map(encodeURIComponent).join('/');
      const integration = ok(await call('GET', `/integration/${path(key)}`), `integration "${key}"`);
      const connection = ok(await call('GET', `/connection/${path(options.connection)}?provider_config_key=${encodeURIComponent(key)}`), `connection "${options.connection}"`);
      const provider = await loadProvider(integration.provider, call, (options.file ?? []).map((f) => resolve(f)));
      const fresh = freshFrom(provider, integration, connection, async () => {
        const token = await call('GET', `/auth/token/${path(key, options.connection)}`);
        if (token.status === 400 && token.body?.error === 'no_credentials') return undefined;
        return ok(token, `the token of connection "${options.connection}"`);
      });

      if (options.action) {
        let input: unknown;
        try {
          input = JSON.parse(options.input ?? '{}');
        } catch (e) {
          throw new Error(`--input is not JSON: ${(e as Error).message}`);
        }
        if (!input || typeof input !== 'object' || Array.isArray(input)) throw new Error('--input must be a JSON object');
        const action = actionOf(provider, options.action);
        checkActionInput(action, options.action, input as Record<string, unknown>);
        const started = performance.now();
        const output = await sendAction(await fresh(), options.action, action, input as Record<string, unknown>);
        console.error(`dryrun: action ${options.action} done in ${Math.round(performance.now() - started)} ms; nothing stored`);
        console.log(JSON.stringify(output, null, 2));
        return;
      }

      const sync = syncOf(provider, syncName!);
      let since: unknown;
      if (options.checkpoint !== undefined) {
        try {
          since = JSON.parse(options.checkpoint);
        } catch {
          since = options.checkpoint; // a bare string, such as a date
        }
      }
      const rate = (records: number, ms: number) => Math.round(records / Math.max(ms / 1000, 0.001));
      const result = await dryRunSync(fresh, syncName!, sync, {
        limit: options.limit,
        sampleSize: options.sample,
        since,
        onPage: (p) => console.error(`dryrun: page ${p.pages}, ${p.records} records, ${rate(p.records, p.ms)} records/s`),
      });
      for (const record of result.sample) console.log(JSON.stringify(record));
      const s = result.summary;
      const invalid = s.invalid.count ? `, ${s.invalid.count} invalid record${s.invalid.count === 1 ? '' : 's'} skipped (first: ${s.invalid.examples[0]?.problem})` : '';
      console.error(
        `dryrun: ${s.outcome}: ${s.pages} page${s.pages === 1 ? '' : 's'}, ${result.records} records in ${(result.ms / 1000).toFixed(2)} s (${rate(result.records, result.ms)} records/s)${result.limited ? ', stopped at --limit' : ''}${invalid}; showing ${result.sample.length}; nothing stored`,
      );
      if (s.outcome !== 'success') throw new Error(`the sync failed: ${s.error}`);
    });
}

/** The provider as the server loads it (built-in files, the TERAPI_PROVIDERS_DIR folders, then the files deployed through the API), and the --file files on top. */
async function loadProvider(name: string, call: ReturnType<typeof apiClient>, files: string[]): Promise<Provider> {
  const missing = missingFolders(providersDirs());
  if (missing.length) throw new Error(missing.map(formatError).join('\n'));
  const answer = await call('GET', `/providers/${encodeURIComponent(name)}`);
  if (answer.status !== 200 && answer.status !== 404) throw new Error(`provider "${name}": ${failure(answer)}`);
  const deployed: SourceFile[] = answer.status === 200 ? (answer.body.files as { origin: string; file: string; text: string }[]).filter((f) => f.origin === 'deployed').map((f) => ({ file: f.file, text: f.text })) : [];
  const { providers, errors } = loadCatalog([providerFiles(BUILTIN_PROVIDERS_DIR), ...providersDirs().map(providerFiles), deployed, files]);
  const provider = providers.get(name);
  if (!provider) throw new Error(errors.length ? `provider "${name}" does not load:\n${errors.map(formatError).join('\n')}` : `there is no provider "${name}" here or on the server`);
  return provider;
}

type TokenView = { type: 'Bearer' | 'ApiKey' | 'Basic'; access_token: string; expires_at?: string } | undefined;

/** Fresh credentials for the engine's run code, from the server's token endpoint (again when the token is about to expire). */
function freshFrom(provider: Provider, integration: { unique_key: string; provider: string; oauth_client_id?: string }, connection: { id: string; connection_config?: Record<string, string> }, token: () => Promise<TokenView>): () => Promise<Fresh> {
  let current: { fresh: Fresh; until: number } | undefined;
  return async () => {
    if (current && Date.now() < current.until) return current.fresh;
    const t = await token();
    const credentials = credentialsOf(provider, t);
    const fresh = {
      record: { id: connection.id, provider_config_key: integration.unique_key, provider: integration.provider, connection_config: connection.connection_config ?? {} },
      credentials,
      provider,
      integration: { unique_key: integration.unique_key, provider: integration.provider, oauth_client_id: integration.oauth_client_id },
      scrub: scrubberOf(secretsOf(credentials)),
    } as Fresh;
    // Asked again a minute before it expires: the server refreshes it.
    current = { fresh, until: t?.expires_at ? Date.parse(t.expires_at) - 60_000 : Infinity };
    return fresh;
  };
}

function credentialsOf(provider: Provider, t: TokenView): Credentials {
  if (!t) return { type: 'none' };
  switch (t.type) {
    case 'Bearer':
      return provider.auth.mode === 'oauth2_client_credentials' ? { type: 'oauth2_client_credentials', access_token: t.access_token, expires_at: t.expires_at } : { type: 'oauth2', access_token: t.access_token, expires_at: t.expires_at };
    case 'ApiKey':
      return { type: 'api_key', api_key: t.access_token };
    case 'Basic': {
      const text = Buffer.from(t.access_token, 'base64').toString('utf8');
      const at = text.indexOf(':');
      return { type: 'basic', username: text.slice(0, at), password: text.slice(at + 1) };
    }
  }
}
