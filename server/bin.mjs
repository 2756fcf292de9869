#!/usr/bin/env node
// The `terapi` command. TypeScript runs through tsx, registered here before the CLI is imported,
// with this package's tsconfig.json: tsx would otherwise apply the one of the current folder.
// SQLite statements run on libuv's thread pool (4 threads by default), shared by every worker
// thread: a few statements waiting for the file's write lock must not leave none for the one that
// would release it. Set before anything uses the pool.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { fileURLToPath } = await import('node:url');
const { register } = await import('tsx/esm/api');

register({ tsconfig: fileURLToPath(new URL('../tsconfig.json', import.meta.url)) });
const { run } = await import('./cli.ts');
await run(process.argv.slice(2));
