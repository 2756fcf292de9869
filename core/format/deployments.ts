import { badRequest, conflict, notFound, TerapiError } from '../errors.ts';
import type { Integrations } from '../auth/integrations.ts';
import type { Logger } from '../logger.ts';
import type { ProviderFiles } from '../store/provider-files.ts';
import { describeSources } from './provider-loader.ts';
import { ProviderLoadError, type Origin, type ProviderRegistry } from './provider-registry.ts';
import { formatError, type SourceError } from './yaml-source.ts';

/** GET /providers/{name}: the effective definition and where each part of it comes from. */
export interface ProviderView {
  name: string;
  /** The deployed version in force, null when nothing is deployed for this name. */
  version: number | null;
  definition: Record<string, unknown>;
  parts: ({ part: string } & Origin)[];
  files: (Origin & { text: string })[];
}

/** PUT /providers/{name}'s answer. */
export interface DeployedView {
  name: string;
  version: number;
  parts: ProviderView['parts'];
}

/**
 * Provider files deployed through the API (README, "Provider files through the API"): checked as
 * at load, stored in the database, and put in force in every process. Each process polls the
 * number of the last change (one cheap query a second) and loads the catalogue again when it moved;
 * the run of a sync that starts after that uses the new definition (its worker thread is handed the
 * provider's files with the run).
 */
export class Deployments {
  private seen = -1;
  private timer?: NodeJS.Timeout;
  private polling?: Promise<void>;
  private failing = false;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly files: ProviderFiles,
    private readonly registry: ProviderRegistry,
    private readonly integrations: Integrations,
    private readonly log: Logger,
  ) {}

  /** Loads the deployed files in force (throws ProviderLoadError when the catalogue does not load with them), then polls every `pollMs`. */
  async start(pollMs: number): Promise<void> {
    await this.files.migrate();
    await this.refresh(true);
    this.timer = setInterval(() => void this.poll(), pollMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private poll(): Promise<void> {
    // One poll at a time: a slow database must not pile them up.
    this.polling ??= this.refresh(false)
      .then(
        () => {
          if (this.failing) this.log.info('deployed provider files: the database answers again');
          this.failing = false;
        },
        (e) => {
          if (!this.failing) this.log.warn({ err: (e as Error).message }, 'deployed provider files: cannot read the database; the providers in force stay');
          this.failing = true;
        },
      )
      .finally(() => (this.polling = undefined));
    return this.polling;
  }

  /**
   * Loads the deployed files again if any changed since the last look. At start a failure throws;
   * later it is logged and the catalogue in force stays. One at a time: a poll that read the
   * files before a PUT committed must not put them in force after the PUT's own refresh.
   */
  refresh(starting = false): Promise<void> {
    const next = this.queue.then(() => this.load(starting));
    this.queue = next.catch(() => {});
    return next;
  }

  private async load(starting: boolean): Promise<void> {
    const latest = await this.files.latest();
    if (latest === this.seen) return;
    const deployed = await this.files.current();
    try {
      this.registry.useDeployed(deployed);
      if (!starting) this.log.info({ change: latest, deployed: deployed.map((d) => `${d.name}@${d.version}`) }, 'deployed provider files reloaded');
    } catch (e) {
      if (starting || !(e instanceof ProviderLoadError)) throw e;
      this.log.error({ errors: e.errors.map(formatError) }, 'deployed provider files rejected: the previous catalogue stays live');
    }
    this.seen = latest;
  }

  /** PUT /providers/{name}: stores a new version of the file after checking the catalogue loads with it. */
  async deploy(name: string, text: string): Promise<{ created: boolean; view: DeployedView }> {
    if (!text.trim()) throw badRequest('invalid_provider', 'the body is empty: send the provider file (YAML, or JSON) as the body');
    if (text.includes('\u0000')) throw badRequest('invalid_provider', 'the provider file holds a NUL character: it cannot be stored');
    const { version, existed } = await this.files.write(name, text, (_before, after) => {
      const { errors } = this.registry.tryDeployed(after);
      if (errors.length) throw invalidProvider(errors);
    });
    await this.refresh();
    return { created: !existed, view: { name, version, parts: this.describe(name).parts } };
  }

  /**
   * DELETE /providers/{name}: takes the deployed file out of force. A built-in, or a file of a
   * TERAPI_PROVIDERS_DIR folder, with that name stays as it is without the overlay. Refused (409)
   * when a provider that would then be gone is still used by an integration, or when the
   * catalogue would not load without the file.
   */
  async remove(name: string): Promise<void> {
    const users = (await this.integrations.list()).filter((i) => i.provider === name).map((i) => i.unique_key);
    await this.files.write(name, null, (before, after) => {
      if (!before.some((f) => f.name === name)) throw notFound('provider_not_deployed', `no provider file "${name}" is deployed through the API: nothing to delete (built-in providers and files of TERAPI_PROVIDERS_DIR folders are not deleted through the API)`);
      const { providers, errors } = this.registry.tryDeployed(after);
      if (errors.length) throw new TerapiError(409, 'provider_conflict', `the catalogue does not load without the deployed file "${name}":\n${errors.map(formatError).join('\n')}`, { errors });
      if (!providers.has(name) && users.length) {
        throw conflict('provider_in_use', `provider "${name}" exists only as a deployed file and integration${users.length === 1 ? '' : 's'} ${users.map((u) => `"${u}"`).join(', ')} use${users.length === 1 ? 's' : ''} it: delete ${users.length === 1 ? 'that integration' : 'those integrations'} first`);
      }
    });
    await this.refresh();
  }

  /** GET /providers/{name}: this process's view of the provider. */
  describe(name: string): ProviderView {
    const provider = this.registry.get(name);
    if (!provider) throw notFound('unknown_provider', `there is no provider "${name}" in the catalogue: GET /providers lists them`);
    const { definition, parts } = describeSources(provider.sources);
    const origin = (file: string) => this.registry.origin(file);
    return {
      name,
      version: this.registry.deployedVersion(name)?.version ?? null,
      definition: { ...definition, name },
      parts: [...parts].map(([part, file]) => ({ part, ...origin(file) })),
      files: provider.sources.map((s) => ({ ...origin(s.file), text: s.text })),
    };
  }
}

/** A 400 listing every error of the catalogue with the file, each at its file:line:col. */
export function invalidProvider(errors: SourceError[]): TerapiError {
  return new TerapiError(400, 'invalid_provider', `${errors.length} error${errors.length === 1 ? '' : 's'} in provider files:\n${errors.map(formatError).join('\n')}`, { errors });
}
