/**
 * The `terapi` command (server/bin.mjs): one program, a subcommand per module of server/cli/.
 * Exit codes: 0 done, 1 the command failed (invalid files, a start refused), 2 a usage error.
 * Errors are printed as `terapi: <problem>` lines, never as stack traces.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { ConfigError } from '../core/config.ts';
import { deploy } from './cli/deploy.ts';
import { dryrun } from './cli/dryrun.ts';
import { start } from './cli/start.ts';
import { test } from './cli/test.ts';
import { validate } from './cli/validate.ts';
import { worker } from './cli/worker.ts';

/** Each adds its subcommand to the program: a new subcommand is a module and a line here. */
const SUBCOMMANDS: ((program: Command) => void)[] = [start, worker, validate, test, deploy, dryrun];

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export function program(): Command {
  const terapi = new Command('terapi')
    .description('Terapi, the open-source embedded integration platform: its API server and its tools')
    .version(VERSION, '-v, --version', 'print the version')
    .helpOption('-h, --help', 'print the help of terapi or of a subcommand')
    .helpCommand(false)
    .showSuggestionAfterError()
    .configureOutput({ outputError: (text, write) => write(text.replace(/^error: /, 'terapi: ')) })
    .exitOverride();
  for (const add of SUBCOMMANDS) add(terapi);
  return terapi;
}

/** Runs the command line `argv` (without node and the script); sets process.exitCode. */
export async function run(argv: string[]): Promise<void> {
  try {
    await program().parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander has printed the help, the version or the usage error already.
      process.exitCode = e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? 0 : 2;
      return;
    }
    process.exitCode = 1;
    for (const line of problems(e)) console.error(`terapi: ${line}`);
  }
}

/** What to print of an error: its problems or its message, not its stack. */
function problems(e: unknown): string[] {
  if (e instanceof ConfigError) return e.problems;
  return [e instanceof Error ? e.message : String(e)];
}
