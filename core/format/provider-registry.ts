import { EventEmitter } from 'node:events';
import { existsSync, watch, type FSWatcher } from 'node:fs';
import { BUILTIN_PROVIDERS_DIR, loadCatalog, providerFiles } from './provider-loader.ts';
import type { Provider } from './provider-types.ts';
import { formatError, type SourceError } from './yaml-source.ts';

export class ProviderLoadError extends Error {
  constructor(readonly errors: SourceError[]) {
    super(`${errors.length} error${errors.length === 1 ? '' : 's'} in provider files:\n${errors.map(formatError).join('\n')}`);
  }
}

/** An error for each TERAPI_PROVIDERS_DIR folder that does not exist. */
export const missingFolders = (dirs: string[]): SourceError[] =>
  dirs.filter((dir) => !existsSync(dir)).map((dir) => ({ file: dir, line: 1, col: 1, message: 'this TERAPI_PROVIDERS_DIR folder does not exist: create it or remove it from the list' }));

/**
 * The live catalogue of providers. Built-in files load once; the folders of TERAPI_PROVIDERS_DIR are
 * watched, and a change is live as soon as the whole catalogue loads again without error. An
 * invalid change is rejected (event `rejected`) and the previous catalogue stays in force.
 */
export class ProviderRegistry extends EventEmitter {
  private providers = new Map<string, Provider>();
  private watchers: FSWatcher[] = [];
  private timer?: NodeJS.Timeout;

  constructor(
    readonly extraDirs: string[] = [],
    readonly builtinDir: string = BUILTIN_PROVIDERS_DIR,
  ) {
    super();
  }

  /** Loads everything; throws ProviderLoadError with every error of every file. */
  load(): void {
    const missing = missingFolders(this.extraDirs);
    if (missing.length) throw new ProviderLoadError(missing);
    const { providers, errors } = loadCatalog([this.builtinDir, ...this.extraDirs].map(providerFiles));
    if (errors.length) throw new ProviderLoadError(errors);
    this.providers = providers;
  }

  get(name: string): Provider | undefined {
    return this.providers.get(name);
  }

  list(): Provider[] {
    return [...this.providers.values()];
  }

  watch(debounceMs = 300): void {
    for (const dir of this.extraDirs) {
      this.watchers.push(
        watch(dir, () => {
          clearTimeout(this.timer);
          this.timer = setTimeout(() => this.reload(), debounceMs);
        }),
      );
    }
  }

  private reload() {
    try {
      this.load();
      this.emit('reloaded', this.list().length);
    } catch (e) {
      if (!(e instanceof ProviderLoadError)) throw e;
      this.emit('rejected', e.errors);
    }
  }

  close(): void {
    clearTimeout(this.timer);
    this.watchers.forEach((w) => w.close());
    this.watchers = [];
  }
}
