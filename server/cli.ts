/**
 * terapi validate [files...]   checks provider files: with no file, the built-in catalogue and every
 *                              TERAPI_PROVIDERS_DIR folder; with files, those files on top of the
 *                              built-in catalogue (a file named like a built-in merges into it).
 */
import { resolve } from 'node:path';
import { BUILTIN_PROVIDERS_DIR, loadCatalog, providerFiles } from '../core/format/provider-loader.ts';
import { formatError } from '../core/format/yaml-source.ts';
import { loadConfig } from '../core/config.ts';

const [command, ...args] = process.argv.slice(2);

function validate(files: string[]): number {
  const builtin = providerFiles(BUILTIN_PROVIDERS_DIR);
  let layers: string[][];
  if (files.length) {
    const given = files.map((f) => resolve(f));
    // A built-in file given by name is checked in place of its current version, not on top of it.
    layers = [builtin.filter((f) => !given.includes(f)).concat(given.filter((f) => f.startsWith(BUILTIN_PROVIDERS_DIR))), given.filter((f) => !f.startsWith(BUILTIN_PROVIDERS_DIR))];
  } else {
    layers = [builtin, ...loadConfig({ embeddedKeys: false }).config.providersDirs.map(providerFiles)];
  }
  const { providers, errors } = loadCatalog(layers);
  for (const e of errors) console.error(formatError(e));
  const checked = layers.flat().length;
  if (errors.length) {
    console.error(`\n${errors.length} error${errors.length === 1 ? '' : 's'} in ${checked} file${checked === 1 ? '' : 's'}`);
    return 1;
  }
  console.log(`${checked} file${checked === 1 ? '' : 's'} valid: ${providers.size} provider${providers.size === 1 ? '' : 's'}`);
  return 0;
}

switch (command) {
  case 'validate':
    process.exitCode = validate(args);
    break;
  default:
    console.error('usage: terapi validate [files...]');
    process.exitCode = 2;
}
