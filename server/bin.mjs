#!/usr/bin/env node
// The `terapi` command. TypeScript runs through tsx, registered here before the CLI is imported,
// with this package's tsconfig.json: tsx would otherwise apply the one of the current folder.
const { fileURLToPath } = await import('node:url');
const { register } = await import('tsx/esm/api');

register({ tsconfig: fileURLToPath(new URL('../tsconfig.json', import.meta.url)) });
const { run } = await import('./cli.ts');
await run(process.argv.slice(2));
