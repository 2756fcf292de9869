import { readFileSync } from 'node:fs';
import { basename, extname } from 'node:path';
import type { Command } from 'commander';
import { deployedFile } from '../../core/format/provider-registry.ts';
import { formatError, type SourceError } from '../../core/format/yaml-source.ts';
import { apiClient, failure, serverOptions, type ServerOptions } from './client.ts';

/**
 * `terapi deploy <files...>` PUTs each provider file to a running server (PUT /providers/{name},
 * the name being the file's name): it is checked there as at load and put in force on every
 * server and worker. Errors are printed as file:line:col: message, at the local file; exit 1 on any.
 */
export function deploy(program: Command): void {
  serverOptions(
    program
      .command('deploy')
      .description('deploy provider files to a running server (a file named like an existing provider is an overlay of it)')
      .argument('<files...>', 'provider files, .yaml, .yml or .json; each file name is its provider name'),
  )
    .addHelpText(
      'after',
      `
Each file becomes the new deployed version of its provider on every server and worker sharing the
server's database, within seconds. Errors are printed as file:line:col: message; exit code 1 on any.`,
    )
    .action(async (files: string[], options: ServerOptions) => {
      const call = apiClient(options);
      let failed = 0;
      for (const file of files) {
        const name = basename(file, extname(file));
        let text: string;
        try {
          text = readFileSync(file, 'utf8');
        } catch (e) {
          console.error(`terapi: ${file}: cannot read the file: ${(e as Error).message}`);
          failed++;
          continue;
        }
        const type = extname(file) === '.json' ? 'application/json' : 'application/yaml';
        const answer = await call('PUT', `/providers/${encodeURIComponent(name)}`, { text, type });
        if (answer.status === 200 || answer.status === 201) {
          console.log(`${file}: deployed ${name}, version ${answer.body.version}`);
          continue;
        }
        failed++;
        const errors = answer.body?.errors as SourceError[] | undefined;
        if (!errors) {
          console.error(`terapi: ${file}: ${failure(answer)}`);
          continue;
        }
        // The server names the file it was sent deployed/<name>.yaml: here it is the local file.
        for (const e of errors) console.error(formatError(e.file === deployedFile(name) ? { ...e, file } : e));
        console.error(`${file}: not deployed, ${errors.length} error${errors.length === 1 ? '' : 's'}`);
      }
      if (failed) process.exitCode = 1;
    });
}
