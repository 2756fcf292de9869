import { resolve } from 'node:path';
import type { Command } from 'commander';
import { providersDirs } from '../../core/config.ts';
import { BUILTIN_PROVIDERS_DIR, loadCatalog, providerFiles } from '../../core/format/provider-loader.ts';
import { missingFolders } from '../../core/format/provider-registry.ts';
import { formatError, type SourceError } from '../../core/format/yaml-source.ts';

/**
 * `terapi validate [files...]` checks provider files: with no file, the built-in catalogue and
 * every TERAPI_PROVIDERS_DIR folder; with files, those files on top of the built-in catalogue (a
 * file named like a built-in merges into it). Every error as file:line:col: message; exit 1 on any.
 */
export function validate(program: Command): void {
  program
    .command('validate')
    .description('check provider files and print every error as file:line:col: message')
    .argument('[files...]', 'provider files (default: the built-in catalogue and the TERAPI_PROVIDERS_DIR folders)')
    .action((files: string[]) => {
      process.exitCode = check(files);
    });
}

function check(files: string[]): number {
  const builtin = providerFiles(BUILTIN_PROVIDERS_DIR);
  let layers: string[][];
  if (files.length) {
    const given = files.map((f) => resolve(f));
    // A built-in file given by name is checked in place of its current version, not on top of it.
    layers = [builtin.filter((f) => !given.includes(f)).concat(given.filter((f) => f.startsWith(BUILTIN_PROVIDERS_DIR))), given.filter((f) => !f.startsWith(BUILTIN_PROVIDERS_DIR))];
  } else {
    const missing = missingFolders(providersDirs());
    if (missing.length) return report(missing, missing.length);
    layers = [builtin, ...providersDirs().map(providerFiles)];
  }
  const { providers, errors } = loadCatalog(layers);
  const checked = layers.flat().length;
  if (errors.length) return report(errors, checked);
  console.log(`${checked} file${checked === 1 ? '' : 's'} valid: ${providers.size} provider${providers.size === 1 ? '' : 's'}`);
  return 0;
}

function report(errors: SourceError[], checked: number): number {
  for (const e of errors) console.error(formatError(e));
  console.error(`\n${errors.length} error${errors.length === 1 ? '' : 's'} in ${checked} file${checked === 1 ? '' : 's'}`);
  return 1;
}
