/**
 * The `terapi` command as a user runs it, in real child processes: help for the program and each
 * subcommand, the version, usage errors (exit 2) and failures (exit 1) as `terapi: ...` lines
 * without a stack trace, and the command run from another folder, directly and through npx.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand, tempDir } from './support.ts';

const ROOT = new URL('..', import.meta.url).pathname.replace(/\/$/, '');
const BIN = join(ROOT, 'server/bin.mjs');
const VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;

/**
 * A folder of another project, with a tsconfig.json of its own whose `paths` would send terapi's
 * `import ... from 'commander'` to a file of that project, were tsx to apply it to terapi's sources.
 */
const elsewhere = tempDir('terapi-elsewhere-');
writeFileSync(join(elsewhere, 'package.json'), JSON.stringify({ name: 'some-app', version: '1.0.0', private: true }));
writeFileSync(join(elsewhere, 'tsconfig.json'), JSON.stringify({ compilerOptions: { baseUrl: '.', paths: { commander: ['./not-commander.ts'] } } }));
writeFileSync(join(elsewhere, 'not-commander.ts'), 'export class Command { constructor() { throw new Error("the tsconfig.json of the current folder was applied to terapi"); } }\nexport class CommanderError {}\n');
after(() => rmSync(elsewhere, { recursive: true, force: true }));

/** `terapi <args>` (or `<command> <args>`), from ROOT unless told, with a clean environment. */
const run = (args: string[], options: { cwd?: string; command?: string[]; env?: Record<string, string> } = {}) =>
  runCommand([...(options.command ?? [process.execPath, BIN]), ...args], { cwd: options.cwd ?? ROOT, env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', ...options.env } });

test('terapi --help lists the subcommands; each has its own --help', async () => {
  let r = await run(['--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^Usage: terapi \[options\] \[command\]/);
  assert.match(r.stdout, /\n {2}start +run the API server/);
  assert.match(r.stdout, /\n {2}validate \[files\.\.\.\] +check provider files/);
  assert.match(r.stdout, /-v, --version/);
  r = await run(['start', '--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^Usage: terapi start \[options\]/);
  for (const name of ['PORT', 'HOST', 'TERAPI_DATABASE_URL', 'TERAPI_SHUTDOWN_TIMEOUT_SECONDS', 'TERAPI_LOG_LEVEL']) assert.ok(r.stdout.includes(name), `start --help names ${name}`);
  r = await run(['validate', '--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^Usage: terapi validate \[options\] \[files\.\.\.\]/);
});

test('terapi --version and -v print the version of the package', async () => {
  for (const flag of ['--version', '-v']) {
    const r = await run([flag]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${VERSION}\n`);
  }
});

test('usage errors exit 2 with a terapi: line; no command prints the help on stderr', async () => {
  let r = await run(['frobnicate']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^terapi: unknown command 'frobnicate'\n/);
  r = await run(['validat']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /\(Did you mean validate\?\)/);
  r = await run(['start', '--port', '80']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^terapi: unknown option '--port'/);
  r = await run([]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^Usage: terapi/);
});

test('failures exit 1 as terapi: lines, never a stack trace', async () => {
  const r = await run(['start'], { env: { TERAPI_DATA_DIR: join(elsewhere, 'data'), TERAPI_LOG_LEVEL: 'loud', PORT: '-1' } });
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, 'terapi: cannot start: PORT must be a whole number from 0 to 65535, not "-1"\nterapi: cannot start: TERAPI_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, not "loud"\n');
  const missing = join(elsewhere, 'no-such-folder');
  const v = await run(['validate'], { env: { TERAPI_PROVIDERS_DIR: missing } });
  assert.equal(v.code, 1);
  assert.equal(v.stderr, `${missing}:1:1: this TERAPI_PROVIDERS_DIR folder does not exist: create it or remove it from the list\n\n1 error in 1 file\n`);
});

test('run from another folder (with a tsconfig.json of its own): paths are that folder\'s, TypeScript is compiled with terapi\'s settings', async () => {
  mkdirSync(join(elsewhere, 'providers'), { recursive: true });
  const file = join(elsewhere, 'providers', 'acme-tickets.yaml');
  writeFileSync(file, readFileSync(join(ROOT, 'test/fixtures/providers/acme-tickets.yaml'), 'utf8').replace('display_name: Acme Tickets', 'display_name: 7'));
  let r = await run(['validate', 'providers/acme-tickets.yaml'], { cwd: elsewhere });
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`^${file}:2:15: "display_name" must be a string`));
  writeFileSync(file, readFileSync(join(ROOT, 'test/fixtures/providers/acme-tickets.yaml')));
  r = await run(['validate', 'providers/acme-tickets.yaml'], { cwd: elsewhere });
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^\d+ files valid: \d+ providers\n$/);
});

test('npx terapi in a project that depends on terapi', async () => {
  // As `npm install <terapi folder>` lays it out: the package linked in node_modules, its bin in node_modules/.bin.
  mkdirSync(join(elsewhere, 'node_modules', '.bin'), { recursive: true });
  symlinkSync(ROOT, join(elsewhere, 'node_modules', 'terapi'));
  symlinkSync('../terapi/server/bin.mjs', join(elsewhere, 'node_modules', '.bin', 'terapi'));
  const npx = { cwd: elsewhere, command: ['npx', '--offline', '--no-install', 'terapi'] };
  let r = await run(['--version'], npx);
  assert.equal(r.stderr, '');
  assert.equal(r.stdout, `${VERSION}\n`);
  r = await run(['validate'], npx);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\d+ files valid: \d+ providers\n$/);
});
