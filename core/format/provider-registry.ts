import { EventEmitter } from 'node:events';
import { existsSync, watch, type FSWatcher } from 'node:fs';
import { BUILTIN_PROVIDERS_DIR, loadCatalog, providerFiles, type Catalog, type SourceFile } from './provider-loader.ts';
import type { Provider } from './provider-types.ts';
import { formatError, type SourceError } from './yaml-source.ts';

/** A provider file deployed through the API (core/store/provider-files.ts). */
export interface Deployed {
  name: string;
  version: number;
  text: string;
  deployed_at: string;
}

/** The name a deployed file goes by in errors and in a provider's files: its file name is its provider's name. */
export const deployedFile = (name: string) => `deployed/${name}.yaml`;

/** Where a file of a provider comes from (GET /providers/{name}). */
export type Origin = { origin: 'builtin'; file: string } | { origin: 'directory'; file: string } | { origin: 'deployed'; file: string; version: number; deployed_at: string };

export class ProviderLoadError extends Error {
  constructor(readonly errors: SourceError[]) {
    super(`${errors.length} error${errors.length === 1 ? '' : 's'} in provider files:\n${errors.map(formatError).join('\n')}`);
  }
}

/** An error for each TERAPI_PROVIDERS_DIR folder that does not exist. */
export const missingFolders = (dirs: string[]): SourceError[] =>
  dirs.filter((dir) => !existsSync(dir)).map((dir) => ({ file: dir, line: 1, col: 1, message: 'this TERAPI_PROVIDERS_DIR folder does not exist: create it or remove it from the list' }));

/**
 * The live catalogue of providers, in layers: the built-in files, the folders of TERAPI_PROVIDERS_DIR
 * (watched), then the files deployed through the API (set by the engine, which polls the
 * database). A change is live as soon as the whole catalogue loads again without error. An
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

  private deployed: Deployed[] = [];

  /** Loads everything; throws ProviderLoadError with every error of every file. */
  load(): void {
    const { providers, errors } = this.tryDeployed(this.deployed);
    if (errors.length) throw new ProviderLoadError(errors);
    this.providers = providers;
  }

  /** The catalogue as it would be with these deployed files in place of the current ones; nothing changes. */
  tryDeployed(deployed: Deployed[]): Catalog {
    const missing = missingFolders(this.extraDirs);
    if (missing.length) return { providers: new Map(), errors: missing };
    const files: SourceFile[] = deployed.map((d) => ({ file: deployedFile(d.name), text: d.text }));
    return loadCatalog([...[this.builtinDir, ...this.extraDirs].map(providerFiles), files]);
  }

  /** Puts these deployed files in force; throws ProviderLoadError (and nothing changes) if the catalogue does not load with them. */
  useDeployed(deployed: Deployed[]): void {
    const { providers, errors } = this.tryDeployed(deployed);
    if (errors.length) throw new ProviderLoadError(errors);
    this.providers = providers;
    this.deployed = deployed;
  }

  /** Where a file of a loaded provider comes from: a built-in, a TERAPI_PROVIDERS_DIR folder, or a deployed version. */
  origin(file: string): Origin {
    if (file.startsWith(this.builtinDir)) return { origin: 'builtin', file: `providers/${file.slice(this.builtinDir.length).replace(/^\/+/, '')}` };
    const deployed = this.deployed.find((d) => deployedFile(d.name) === file);
    if (deployed) return { origin: 'deployed', file, version: deployed.version, deployed_at: deployed.deployed_at };
    return { origin: 'directory', file };
  }

  /** The version of `name` deployed through the API and in force here, if any. */
  deployedVersion(name: string): Deployed | undefined {
    return this.deployed.find((d) => d.name === name);
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
